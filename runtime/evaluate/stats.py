"""The statistics every benchmark study reports: means with 95 % t intervals, paired differences against the
reference map with Wilcoxon signed-rank p-values (scipy.stats), and how the report prints them."""
from __future__ import annotations

import numpy as np

REFERENCE = ("pmi", "patchsampler")  # the paired comparisons are against PMI with the (new) PatchSampler


def _groups(rows) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["map"], r["sampler"]) for r in rows))


def ci(values) -> tuple[float, float, float]:
    """Mean and its 95 % t confidence interval."""
    from scipy import stats

    v = np.asarray(values, float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.sem(v) * stats.t.ppf(0.975, len(v) - 1))
    return m, m - h, m + h


def compare(rows: list[dict], metric: str, fill: str, target: str) -> dict:
    """Per (map, sampler) group: mean and 95 % CI of `metric`, and against the reference (PMI/PatchSampler) on the
    same photos: the mean paired difference and the Wilcoxon signed-rank p-value (two-sided; scipy.stats).
    {group: {"mean", "low", "high", "n", "diff", "p"}}."""
    sel = [r for r in rows if r["fill"] == fill and r["target"] == target]
    value = {(r["map"], r["sampler"], r["image"]): r[metric] for r in sel}
    out = {}
    for key in _groups(sel):
        v = [r[metric] for r in sel if (r["map"], r["sampler"]) == key]
        mean, low, high = ci(v)
        entry = {"mean": mean, "low": low, "high": high, "n": len(v), "diff": float("nan"), "p": float("nan")}
        a, b = paired(value, key, REFERENCE)
        if key != REFERENCE and len(a):
            entry["diff"], entry["p"] = float(np.mean(a - b)), wilcoxon(a, b)
        out[key] = entry
    return out


def paired(value: dict, key: tuple, base: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The values of groups `key` and `base` on the photos both have, in photo order: value {(map, sampler, photo):
    float} → (a, b) float64 [n]."""
    common = sorted(i for (m, s, i) in value if (m, s) == key and (*base, i) in value)
    return np.array([value[(*key, i)] for i in common], float), np.array([value[(*base, i)] for i in common], float)


def wilcoxon(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p of paired values (scipy.stats); nan when fewer than 2 or all equal."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(stats.wilcoxon(a, b).pvalue) if len(a) > 1 and np.any(a != b) else float("nan")


def fmt_signed(v: float) -> str:
    return "" if np.isnan(v) else f"{v:+.4f}"


def fmt_ci(entry: dict) -> str:
    """A `compare` entry as "mean [low, high]"."""
    return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def fmt_p(p: float) -> str:
    return "" if np.isnan(p) else (f"{p:.2g}" + (" *" if p < 0.05 else ""))


def fmt_values(values, digits: int = 3) -> str:
    """Mean [95 % CI] of the finite values ("—" for none)."""
    v = [x for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "—"
    m, lo, hi = ci(v)
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if len(v) > 1 else f"{m:.{digits}f}"
