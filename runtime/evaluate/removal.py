"""The removal study of `infolens eval benchmark`: every map (maps.py: PMI and IG per sampler, the comparison methods,
the random and edge controls, each also smoothed) scored in both orders under every fill (fills.py), per photo, for
the predicted and the true class.

Per map, fill and class: AUC(MoRF) (deletion: lower is better), AUC(LeRF) (insertion read backwards: higher is
better) and SRG = AUC(LeRF) − AUC(MoRF) (Blücher, Vielhaben & Strodthoff, TMLR 2024: higher is better; it ranks
methods consistently across fills where MoRF and LeRF alone do not).  The `road` fill follows ROAD's own protocol
(Rong et al., ICML 2022): removal fractions 0, 10 %, …, 100 %, the p(class) at 10 … 90 % kept per order.  The report
gives each fill's table, the mean over fills, and Kendall's τ between the method rankings of every pair of fills —
whether a ranking survives the change of fill.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from .. import outfiles
from .benchmark import Study, as_label, check_fills, evenly
from .report import csv_text
from .stats import REFERENCE, compare, fmt_ci, fmt_p, fmt_signed, paired, wilcoxon
from .curves import auc, pixel_order, removal_probs, step_counts
from .maps import SMOOTHED, MapSet, check_methods, make_maps, parse_sampler, plain_label
from .plots import pyplot

FILL_DEFAULTS = ("blur", "black", "mean", "road", "patchsampler")
METHOD_DEFAULTS = ("occlusion", "pda", "rise", "mipin", "cam", "random", "edge")
ROAD_STEPS = 10  # ROAD's protocol: 10 % steps


def end_points(classifier, image: np.ndarray, fill, batch_size: int = 64) -> np.ndarray:
    """p(Y) float64 [2, Y] of `image` intact and with every pixel removed under `fill` (mean over its draws): the
    first and last points of every map's curves, whatever the map."""
    H, W = image.shape[:2]
    return removal_probs(classifier, image, fill, np.arange(H * W), np.array([0, H * W]), "deletion", batch_size)


def score(classifier, image: np.ndarray, fill, per_class: dict, targets: dict, steps: int,
          batch_size: int = 64, ends: np.ndarray | None = None, seen: dict | None = None) -> dict:
    """{target: (AUC MoRF, AUC LeRF, p(class) MoRF [steps+1], p(class) LeRF by fraction removed [steps+1],
    forwards)} of one map (per class, or {None: map} for a class-independent one) under `fill`, with `steps` steps
    (curves.py's protocol); a class-independent map's curves serve every target from the same forwards.  ends: the
    image's `end_points` under this fill, shared by every map of the image (computed here when not given; the
    forwards counted are the map's own).  seen: the curves already run on this image under this fill, by pixel
    order — a map that orders the pixels as an earlier one did has the same curves, and runs no forward (PDA's woe
    and PMI with the gaussian sampler on non-overlapping patches); filled in here."""
    H, W = image.shape[:2]
    inner = step_counts(H * W, steps)[1:-1]
    fr = np.arange(steps + 1) / steps
    if ends is None:
        ends = end_points(classifier, image, fill, batch_size)
    seen = {} if seen is None else seen
    out, cache = {}, {}
    for target, cls in targets.items():
        key = None if None in per_class else cls
        forwards = 0
        if key not in cache:
            order = pixel_order(per_class[key])
            digest = hashlib.sha1(order.tobytes()).digest()
            if digest not in seen:
                dele, ins = (removal_probs(classifier, image, fill, order, inner, mode, batch_size) if len(inner)
                             else ends[:0] for mode in ("deletion", "insertion"))
                seen[digest] = np.concatenate([ends[:1], dele, ends[1:]]), np.concatenate([ends[1:], ins, ends[:1]])
                forwards = 2 * (steps - 1) * fill.draws
            cache[key] = seen[digest]
        dele, ins = (p[:, cls] for p in cache[key])
        out[target] = (auc(fr, dele), auc(fr, ins), dele, ins[::-1], forwards)
    return out


class RemovalStudy(Study):
    """samplers: --samplers entries (PMI/IG per sampler); methods: METHODS names and the controls random, edge;
    K, stride, samples: the grid; rise_masks; steps: removal steps of every fill but road (ROAD_STEPS); fills:
    fills.FILLS names; fill_draws: the PatchSampler fill's draws; smooth: σ (pixels) of the smoothed copies (0: none);
    shrink, scales: the candidates (maps.py); extra_photos: how many of the photos (evenly spaced) also score the
    smoothed copies and the candidates — they double the maps to score, so the plain maps are scored on every photo
    and these on a subset; targets: "pred" (the predicted class) and/or "true" (the label); seed."""

    name = "removal"

    def __init__(self, classifier, samplers, methods=METHOD_DEFAULTS, K=16, stride=16, samples=4, rise_masks=1000,
                 steps=10, fills=FILL_DEFAULTS, fill_draws=4, smooth=8.0, shrink=True, scales=(),
                 targets=("pred",), seed=0, batch_size=64, extra_photos=50):
        super().__init__(classifier, samplers=samplers, methods=methods, K=K, stride=stride, samples=samples,
                         rise_masks=rise_masks, steps=steps, fills=fills, fill_draws=fill_draws, smooth=smooth,
                         shrink=shrink, scales=scales, targets=targets, seed=seed, batch_size=batch_size,
                         extra_photos=extra_photos)
        from .. import params

        for name, value in (("steps", steps), ("fill_draws", fill_draws), ("extra_photos", extra_photos)):
            params.check(name, value)
        check_fills(fills)
        self.maps = map_set(self, samplers, methods, K, stride, samples, rise_masks, seed, smooth, shrink, scales)
        self.plain = dataclasses.replace(self.maps, smooth=0.0, shrink=False, scales=())
        self.fills, self.targets, self.K = list(fills), list(targets), K
        self.steps, self.fill_draws, self.extra_photos = steps, fill_draws, extra_photos

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), **self.maps.settings(), "steps": self.steps,
                "road_steps": ROAD_STEPS, "fills": self.fills, "fill_draws": self.fill_draws, "targets": self.targets,
                "extra_photos": self.extra_photos}

    def items(self, photos, study_photos, folder):
        mine = super().items(photos, study_photos, folder)
        extras = {name for name, _ in evenly(mine, self.extra_photos)} if self.maps != self.plain else set()
        return [(name, {**item, "extras": name in extras}) for name, item in mine]

    def run(self, item):
        return self.photo(str(item["path"]), as_label(item["cls"]), extras=bool(item.get("extras")))

    def measure(self, image, pred, true_class, extras=False) -> dict:
        targets = {t: {"pred": pred, "true": true_class}[t] for t in self.targets}
        return {"rows": self.rows(image, targets, true_class, self.maps if extras else self.plain), "extras": extras}

    def rows(self, image, targets: dict, true_class: int, ms: MapSet) -> list[dict]:
        """One row per map of `ms` × fill × target (the fills at the MapSet's K)."""
        classes = list(dict.fromkeys(targets.values()))
        rows = []
        ends = {f: end_points(self.classifier, image, self.fill(f, ms.K), self.batch_size) for f in self.fills}
        key = classes[0] if true_class is None else true_class  # seeds the random map
        seen = {f: {} for f in self.fills}
        for m in make_maps(self, image, classes, key, ms):
            for fill in self.fills:
                steps = ROAD_STEPS if fill == "road" else self.steps
                scored = score(self.classifier, image, self.fill(fill, ms.K), m.per_class, targets, steps,
                               self.batch_size, ends[fill], seen[fill])
                for target, (morf, lerf, c_morf, c_lerf, forwards) in scored.items():
                    row = {"map": m.name, "sampler": m.sampler, "target": target, "class": targets[target],
                           "fill": fill, "morf_auc": morf, "lerf_auc": lerf, "srg": lerf - morf,
                           "explain_forwards": m.forwards, "explain_seconds": m.seconds,
                           "explain_incremental": m.incremental, "eval_forwards": forwards}
                    if fill == "road":
                        row["road_morf"], row["road_lerf"] = c_morf[1:-1].tolist(), c_lerf[1:-1].tolist()
                    rows.append(row)
        return rows

    def section(self, records, out_dir) -> list[str]:
        return removal_section(records, self, out_dir)

    headline_label = "SRG over the fills"

    def headline(self, records):
        """SRG averaged over every fill, for the first target (the predicted class unless only the label)."""
        return [{"map": r["map"], "sampler": r["sampler"], "image": r["image"], "score": r["srg"]}
                for r in srg_over_fills(table(records), self.fills, self.targets[0])
                if plain_label(r["sampler"]) == r["sampler"]]


def map_set(study, samplers, methods, K, stride, samples, rise_masks, seed, smooth, shrink, scales) -> MapSet:
    """The MapSet of a study's settings, checked (every extra scale needs the first sampler at that K)."""
    from .. import params
    from ..errors import InfolensError

    params.check("smooth", smooth)
    check_methods(methods)
    specs = tuple(parse_sampler(s) for s in samplers)
    for k in scales:
        params.check("K", k)
        label, name, model = specs[0]
        try:
            study.sampler(name, k, model)
        except InfolensError:
            raise InfolensError(f"the multi-scale candidate needs {label} at K={k}, and there is none", "scales") \
                from None
    return MapSet(specs, tuple(methods), K, stride, samples, rise_masks, seed, float(smooth), bool(shrink),
                  tuple(scales))


def table(records: list[dict]) -> list[dict]:
    """One row per photo × map × sampler × target × fill (what results.csv holds, without the ROAD curves; records
    from before `explain_incremental` was recorded ran without it)."""
    return [{"image": r["image"], "true_class": r["true_class"], "top1_correct": r["top1_correct"],
             **{k: v for k, v in row.items() if not k.startswith("road_")},
             "explain_incremental": row.get("explain_incremental", False)} for r in records for row in r["rows"]]


def removal_section(records: list[dict], study: RemovalStudy, out_dir: str, heading: str = "", prefix: str = "",
                    ) -> list[str]:
    """The study's report: per fill and target MoRF, LeRF and SRG of the plain maps on every photo, with paired
    tests against the reference, SRG averaged over fills, Kendall τ between the fills' rankings, ROAD's
    per-fraction curve; the smoothed copies and the candidates against their plain maps on the photos that have
    them; cost.  <prefix>results.csv and <prefix>srg_<target>.png into out_dir."""
    rows = table(records)
    outfiles.write_atomic(os.path.join(out_dir, f"{prefix}results.csv"),
                          lambda f: f.write(csv_text(rows, list(rows[0])).encode()))
    plain = [r for r in rows if plain_label(r["sampler"]) == r["sampler"]]
    fills, ref = study.fills, f"{REFERENCE[0]} / {REFERENCE[1]}"
    lines = [heading or "## Removal in both orders under every fill (SRG)", "",
             "Per map: AUC(MoRF), most relevant pixels removed first (deletion; lower is better), AUC(LeRF), least "
             "relevant first (higher is better), and SRG = AUC(LeRF) − AUC(MoRF) (higher is better; Blücher et al. "
             "2024). Mean and 95 % t interval over photos; Δ and p: the paired mean difference against "
             f"{ref} on the same photos and its Wilcoxon signed-rank p (two-sided). Controls: `random` (noise) and "
             "`edge` (the photo's Sobel energy: no classifier). Per photo, map, class and fill: "
             f"`{prefix}results.csv`.", ""]
    for target in study.targets:
        srg_means = {}
        lines += [f"### Class {target}", ""]
        for fill in fills:
            morf, lerf, srg = (compare(plain, metric, fill, target) for metric in ("morf_auc", "lerf_auc", "srg"))
            srg_means[fill] = {k: v["mean"] for k, v in srg.items()}
            lines += [f"#### Fill {fill}" + (f" ({ROAD_STEPS} steps, ROAD's protocol)" if fill == "road" else ""), "",
                      "| map | sampler | MoRF [95 % CI] | LeRF [95 % CI] | SRG [95 % CI] | Δ SRG | p |",
                      "|---|---|---|---|---|---|---|"]
            for key in sorted(srg, key=lambda k: -srg[k]["mean"]):
                a, b, s = morf[key], lerf[key], srg[key]
                lines.append(f"| {key[0]} | {key[1]} | {fmt_ci(a)} | {fmt_ci(b)} | {fmt_ci(s)} | "
                             f"{fmt_signed(s['diff'])} | {fmt_p(s['p'])} |")
            lines.append("")
        lines += _across_fills(plain, fills, target)
        _plot(srg_means, fills, target, os.path.join(out_dir, f"{prefix}srg_{target}.png"))
        lines += [f"![SRG per fill, class {target}]({prefix}srg_{target}.png)", ""]
        lines += _derived(rows, fills, target)
    if "road" in fills:
        lines += _road_protocol(records, study.targets[0])
    lines += ["### Cost on this machine", "", "| map | sampler | explain forwards / photo | explain s / photo |",
              "|---|---|---|---|"]
    first = [r for r in rows if r["fill"] == fills[0] and r["target"] == study.targets[0]
             and not r["sampler"].endswith(SMOOTHED)]
    for key in dict.fromkeys((r["map"], r["sampler"]) for r in first):
        sel = [r for r in first if (r["map"], r["sampler"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {np.mean([r['explain_forwards'] for r in sel]):.0f} | "
                     f"{np.mean([r['explain_seconds'] for r in sel]):.2f} |")
    lines += ["", "PMI and IG share one explanation (so do a method's maps); the evaluation forwards per photo: "
              f"{np.mean([sum(r['eval_forwards'] for r in rec['rows']) for rec in records]):.0f}.", ""]
    return lines


def srg_over_fills(rows, fills, target) -> list[dict]:
    """Rows of SRG averaged over `fills` per photo and map (fill "mean"), for photos scored under every fill."""
    per_photo = {}
    for r in rows:
        if r["target"] == target:
            per_photo.setdefault((r["map"], r["sampler"], r["image"]), {})[r["fill"]] = r["srg"]
    return [{"map": m, "sampler": s, "image": i, "fill": "mean", "target": target,
             "srg": float(np.mean(list(v.values())))} for (m, s, i), v in per_photo.items() if len(v) == len(fills)]


def _derived(rows, fills, target) -> list[str]:
    """The smoothed copies and the candidates on the photos that have them: SRG over the fills, against the plain
    map they come from and against the reference, paired on those photos."""
    photos = {r["image"] for r in rows if plain_label(r["sampler"]) != r["sampler"]}
    if not photos:
        return []
    mean_rows = srg_over_fills([r for r in rows if r["image"] in photos], fills, target)
    overall = compare(mean_rows, "srg", "mean", target)
    value = {(r["map"], r["sampler"], r["image"]): r["srg"] for r in mean_rows}
    lines = [f"#### Smoothed copies and candidates ({len(photos)} photos)", "",
             "SRG averaged over the fills on the photos scored with them. Sampler `…~smooth`: the map after a "
             "Gaussian smoothing (a win that comes from blurriness shows here); `…+se`: each pixel shrunk by its "
             "standard error, v·v²/(v² + se²); `…@16+8`: multi-scale, the maps at several K averaged. Δ plain: "
             "against the plain map it comes from; Δ ref: against the reference. Paired on the same photos, Wilcoxon "
             "p.", "", "| map | sampler | SRG [95 % CI] | Δ plain | p | Δ ref | p |", "|---|---|---|---|---|---|---|"]
    for key in sorted(overall, key=lambda k: -overall[k]["mean"]):
        e, base = overall[key], (key[0], plain_label(key[1]))
        d, p = float("nan"), float("nan")
        if base != key:
            a, b = paired(value, key, base)
            d, p = (float(np.mean(a - b)), wilcoxon(a, b)) if len(a) else (d, p)
        lines.append(f"| {key[0]} | {key[1]} | {fmt_ci(e)} | {fmt_signed(d)} | {fmt_p(p)} | {fmt_signed(e['diff'])} "
                     f"| {fmt_p(e['p'])} |")
    return lines + [""]


def _across_fills(rows, fills, target) -> list[str]:
    """SRG averaged over the fills per photo (paired test against the reference), and Kendall τ of the rankings."""
    overall = compare(srg_over_fills(rows, fills, target), "srg", "mean", target)
    lines = [f"#### SRG averaged over the {len(fills)} fills", "", "| rank | map | sampler | SRG [95 % CI] | Δ | p |",
             "|---|---|---|---|---|---|"]
    for i, key in enumerate(sorted(overall, key=lambda k: -overall[k]["mean"]), 1):
        e = overall[key]
        lines.append(f"| {i} | {key[0]} | {key[1]} | {fmt_ci(e)} | {fmt_signed(e['diff'])} | {fmt_p(e['p'])} |")
    lines += ["", "#### Does a ranking survive the change of fill? Kendall τ between the fills' rankings", "",
              "τ of the maps' mean score under one fill against another (1: the same order, 0: unrelated).", ""]
    for metric, label in (("srg", "SRG"), ("morf_auc", "MoRF"), ("lerf_auc", "LeRF")):
        means = {f: {k: v["mean"] for k, v in compare(rows, metric, f, target).items()} for f in fills}
        lines += [f"{label}:", ""] + tau_table(means) + [""]
    return lines


def tau_table(means: dict[str, dict]) -> list[str]:
    """Markdown table of Kendall τ (scipy.stats) between the rankings of the maps by their mean score under each
    pair of fills (means: {fill: {map key: mean}}), over the maps both have."""
    from scipy import stats

    fills = list(means)
    lines = ["| | " + " | ".join(fills) + " |", "|---" * (len(fills) + 1) + "|"]
    for a in fills:
        cells = []
        for b in fills:
            keys = [k for k in means[a] if k in means[b]]
            cells.append(f"{stats.kendalltau([means[a][k] for k in keys], [means[b][k] for k in keys]).statistic:.2f}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def _road_protocol(records, target) -> list[str]:
    """ROAD's own table: mean p(class) at 10 … 90 % removed, MoRF and LeRF, per map."""
    lines = ["### ROAD's protocol (fill road)", "",
             f"Mean p(class {target}) with 10 % … 90 % of the pixels removed and imputed (noisy linear imputation), "
             "most relevant first (MoRF: lower is better) and least relevant first (LeRF: higher is better).", "",
             "| map | sampler | order | " + " | ".join(f"{10 * k} %" for k in range(1, 10)) + " |",
             "|---|---|---|" + "---|" * 9]
    curves = {}
    for r in records:
        for row in r["rows"]:
            if row["fill"] == "road" and row["target"] == target and plain_label(row["sampler"]) == row["sampler"]:
                for order in ("morf", "lerf"):
                    curves.setdefault((row["map"], row["sampler"], order), []).append(row[f"road_{order}"])
    for (m, s, order), values in curves.items():
        mean = np.mean(values, axis=0)
        lines.append(f"| {m} | {s} | {order.upper()} | " + " | ".join(f"{v:.3f}" for v in mean) + " |")
    return lines + [""]


def _plot(srg_means: dict, fills, target, path) -> None:
    plt = pyplot()
    keys = sorted(next(iter(srg_means.values())), key=lambda k: -np.mean([srg_means[f].get(k, 0) for f in fills]))
    fig, ax = plt.subplots(figsize=(max(8, 0.35 * len(keys)), 4), dpi=110)
    width = 0.8 / len(fills)
    for j, fill in enumerate(fills):
        ax.bar(np.arange(len(keys)) + j * width, [srg_means[fill].get(k, np.nan) for k in keys], width, label=fill)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [f"{m}\n{s[:16]}" for m, s in keys], fontsize=6,
                  rotation=90)
    ax.set_ylabel("mean SRG = AUC(LeRF) − AUC(MoRF)")
    ax.set_title(f"SRG per fill, class {target} (higher is better)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    outfiles.save_figure(fig, path)
    plt.close(fig)
