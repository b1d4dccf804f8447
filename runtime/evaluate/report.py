"""The benchmark's report: report.md's frame (the command, the photos, the classifier's accuracy), the protocols
side by side, each study's section, and the CSVs beside it."""
from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING

import numpy as np

from .. import outfiles
from .stats import ci, fmt_p, paired, wilcoxon

if TYPE_CHECKING:
    from .benchmark import Study


def write_report(studies: list[Study], records: dict[str, list[dict]], out_dir: str, command: str = "") -> dict:
    """OUT/report.md: the header (command, settings, the classifier's accuracy on the photos of the study with the
    most), then each study's section (which writes its CSV and plots into OUT); returns {"photos", "top1",
    "top5"}."""
    most = max((r for r in records.values() if r and r[0].get("top1_correct") is not None), key=len, default=[])
    n = len(most)
    top1 = float(np.mean([r["top1_correct"] for r in most])) if most else float("nan")
    top5 = float(np.mean([r["top5_correct"] for r in most])) if most else float("nan")
    lines = ["# Faithfulness benchmark", "", f"Regenerate: `{command}`" if command else "", "",
             f"Photos: {n}. The classifier's accuracy on them: top-1 {100 * top1:.1f} %, top-5 {100 * top5:.1f} %."
             if n else "",
             "", "Sections: " + ", ".join(f"{s.name} ({len(records[s.name])} {s.unit}s)" for s in studies) + ".", ""]
    lines += verdict_section(studies, records)
    for study in studies:
        section = study.section(records[study.name], out_dir)  # its heading, then the settings it ran with
        lines += section[:2] + ["Settings: " + ", ".join(f"{k}={v}" for k, v in study.settings().items()), ""]
        lines += section[2:]
        lines.append(f"Time: {sum(r['seconds'] for r in records[study.name]) / 3600:.2f} h "
                     f"({np.mean([r['seconds'] for r in records[study.name]]):.0f} s per {study.unit}).")
        lines.append("")
    outfiles.write_atomic(os.path.join(out_dir, "report.md"), lambda f: f.write("\n".join(lines).encode()))
    return {"photos": n, "top1": top1, "top5": top5}


def verdict_section(studies: list[Study], records: dict[str, list[dict]]) -> list[str]:
    """The protocols side by side: each plain map's headline score under every study that has one (its mean and
    rank), and the paired difference from `explain`'s default map (PMI with PMI.default_sampler) with its 95 % t
    interval and Wilcoxon p; no lines when fewer than two studies have a headline."""
    from ..methods import METHODS

    base = ("pmi", METHODS["pmi"].default_sampler)
    scored = [(s, s.headline(records[s.name])) for s in studies]
    scored = [(s, rows) for s, rows in scored if rows]
    if len(scored) < 2:
        return []
    value, means = {}, {}
    for s, rows in scored:
        value[s.name] = {(r["map"], r["sampler"], r["image"]): r["score"] for r in rows}
        groups = {}
        for r in rows:
            groups.setdefault((r["map"], r["sampler"]), []).append(r["score"])
        means[s.name] = {k: float(np.mean(v)) for k, v in groups.items()}
    # ties (the class-independent maps' 0.25 in the pointing game) broken by name, so a rebuilt report is the same
    rank = {n: {k: i for i, k in enumerate(sorted(m, key=lambda k: (-m[k], k)), 1)} for n, m in means.items()}
    keys = sorted({k for m in means.values() for k in m},
                  key=lambda k: (np.mean([rank[n].get(k, len(rank[n]) + 1) for n in rank]), k))
    lines = ["## Which map to trust: the protocols side by side", "",
             "Each map's headline score under every protocol measured here (higher is better) and its rank there "
             "(ties by name); "
             f"Δ: paired against `infolens explain`'s default map, {base[0]} / {base[1]}, with its 95 % t interval "
             "and Wilcoxon p, on the items both have. A removal protocol favours maps built on the same removal and "
             "the pointing game maps that spread over the object, so no single column is neutral; the controls "
             "(random, edge: no classifier) show what a protocol gives for nothing.", "",
             "| map | sampler | " + " | ".join(f"{s.name}: {s.headline_label} (rank) | Δ [95 % CI], p" for s, _ in scored)
             + " |", "|---|---|" + "---|---|" * len(scored)]
    for key in keys:
        cells = []
        for s, _ in scored:
            if key not in means[s.name]:
                cells += ["—", ""]
                continue
            cells.append(f"{means[s.name][key]:.3f} ({rank[s.name][key]})")
            a, b = paired(value[s.name], key, base)
            if key == base or not len(a):
                cells.append("")
                continue
            m, lo, hi = ci(a - b)
            cells.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}], {fmt_p(wilcoxon(a, b))}")
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return lines + [""]


def csv_text(rows, fields) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_csv(out_dir: str, name: str, rows: list[dict]) -> None:
    """`rows` (dicts with the same keys) as the CSV file `name` in `out_dir`, written atomically; nothing for none."""
    if rows:
        outfiles.write_atomic(os.path.join(out_dir, name), lambda f: f.write(csv_text(rows, list(rows[0])).encode()))
