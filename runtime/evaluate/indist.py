"""The in-distribution study of `infolens eval benchmark` (Hesse et al., NeurIPS 2024): every map of the removal
study scored against the classifier's removal evaluator, a copy of it fine-tuned so that removed parts are in its
training distribution (export/evaluator.py: self-distilled on photos with parts removed by every fill).

Per photo and predicted class c: a grid of `cell`×`cell` cells offset by half a cell from the image's corner (so
that no map's K×K windows line up with it; 8×8 cells of 24 pixels on a 224 input), and each cell's drop
p(c | photo) − p(c | photo without that cell) under each fill (the mean over the fill's draws).  A map's score is
Spearman's ρ (scipy.stats) between its sums over the cells and the drops averaged over the fills: 1 when the map
orders the cells as removing them one at a time does.  The same drops of the original classifier are scored too,
both ways: the original's ranking is what a removal metric sees when removal is out of distribution.  Each fill's
own ρ, and how closely the fills' drops agree with each other, show whether the fine-tuning made the fill matter
less.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from .. import outfiles
from ..errors import InfolensError
from .benchmark import Study, check_fills
from .report import csv_text
from .stats import compare, fmt_ci, fmt_p, fmt_signed, fmt_values, paired, wilcoxon
from .maps import make_maps, plain_label
from .removal import FILL_DEFAULTS, METHOD_DEFAULTS, map_set, tau_table

MODELS = ("evaluator", "original")
ALL = "all fills"  # the drops averaged over the fills (a fill is named "mean": this label is not)


def evaluator_path(classifier) -> str:
    """`<classifier stem>.evaluator.onnx` beside the classifier's file (the shipped model has one)."""
    return os.path.splitext(classifier.model_path)[0] + ".evaluator.onnx"


def cells(H: int, W: int, cell: int) -> list[tuple[int, int]]:
    """(y, x) of the cell×cell cells of the grid offset by cell // 2 from the corner that lie wholly inside H×W."""
    o = cell // 2
    return [(y, x) for y in range(o, H - cell + 1, cell) for x in range(o, W - cell + 1, cell)]


def cell_sums(m: np.ndarray, at: list[tuple[int, int]], cell: int) -> np.ndarray:
    """float64 [n]: the map's sum over each cell."""
    return np.array([float(m[y:y + cell, x:x + cell].sum(dtype=np.float64)) for y, x in at])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ (scipy.stats); nan when either is constant."""
    from scipy import stats

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


class IndistStudy(Study):
    """samplers, methods, K, stride, samples, rise_masks, smooth, shrink, scales: the maps (the removal study's,
    with the smoothed copies and the candidates); fills, fill_draws: the removals (fills.FILLS); evaluator: the
    evaluator's ONNX file (default `evaluator_path`); cell: the grid's cell side in pixels; indist_photos: photos,
    evenly spaced; seed."""

    name, every_photo = "indist", False

    def __init__(self, classifier, samplers, methods=METHOD_DEFAULTS, K=16, stride=16, samples=4, rise_masks=1000,
                 fills=FILL_DEFAULTS, fill_draws=4, smooth=8.0, shrink=True, scales=(), evaluator=None, cell=24,
                 indist_photos=50, seed=0, batch_size=64):
        from .. import params

        evaluator = evaluator or evaluator_path(classifier)
        super().__init__(classifier, samplers=samplers, methods=methods, K=K, stride=stride, samples=samples,
                         rise_masks=rise_masks, fills=fills, fill_draws=fill_draws, smooth=smooth, shrink=shrink,
                         scales=scales, evaluator=evaluator, cell=cell, indist_photos=indist_photos, seed=seed,
                         batch_size=batch_size)
        params.check("indist_photos", indist_photos)
        params.check("cell", cell)
        check_fills(fills)
        if not os.path.isfile(evaluator):
            raise InfolensError(f"no removal evaluator {evaluator}: fine-tune one with `python -m "
                                "infolens.export.evaluator` (the train extra) or pass --evaluator FILE", "evaluator")
        from ..classifier import OnnxClassifier

        self.evaluator = OnnxClassifier.from_description(classifier.describe(), classifier.device, evaluator)
        if self.evaluator.n_classes != classifier.n_classes:
            raise InfolensError(f"the evaluator {evaluator} has {self.evaluator.n_classes} classes, the classifier "
                                f"{classifier.n_classes}", "evaluator")
        with open(evaluator, "rb") as f:
            self.evaluator_sha = hashlib.sha256(f.read()).hexdigest()
        self.maps = map_set(self, samplers, methods, K, stride, samples, rise_masks, seed, smooth, shrink, scales)
        self.fills, self.fill_draws, self.cell, self.indist_photos = list(fills), fill_draws, cell, indist_photos

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), "evaluator": os.path.basename(
                self.evaluator.model_path), "evaluator_sha256": self.evaluator_sha[:16], **self.maps.settings(),
                "fills": self.fills, "fill_draws": self.fill_draws, "cell": self.cell,
                "indist_photos": self.indist_photos}

    def items(self, photos, study_photos, folder):
        return super().items(photos, self.indist_photos, folder)  # every_photo False: indist_photos of them

    def drops(self, image: np.ndarray, cls: int, at: list[tuple[int, int]], models: dict,
              intact: dict) -> dict[str, dict[str, list[float]]]:
        """{model name: {fill: [n]}}: p(cls | image) − p(cls | image without cell i) of each of `models` (intact:
        their p(Y | image) [Y]), the mean over the fill's draws (every model sees the same removed images)."""
        H, W = image.shape[:2]
        masks = np.zeros((len(at), H, W), bool)
        for m, (y, x) in zip(masks, at):
            m[y:y + self.cell, x:x + self.cell] = True
        out = {name: {} for name in models}
        for fill in self.fills:
            removed = self.fill(fill, self.maps.K).images(image, masks)  # [D, n, H, W, 3]
            flat = removed.reshape(-1, H, W, 3)
            for name, model in models.items():
                p = np.concatenate([model.predict_images(flat[i:i + self.batch_size])[:, cls]
                                    for i in range(0, len(flat), self.batch_size)])
                out[name][fill] = (intact[name][cls] - p.reshape(len(removed), len(at)).mean(axis=0)).tolist()
        return out

    def measure(self, image, pred, true_class) -> dict:
        at = cells(*image.shape[:2], self.cell)
        if len(at) < 3:
            raise InfolensError(f"the input is too small for {self.cell}-pixel cells", "cell")
        models = {"evaluator": self.evaluator, "original": self.classifier}
        intact = {name: model.predict_images(image[None])[0] for name, model in models.items()}
        drops = self.drops(image, pred, at, models, intact)
        key = pred if true_class is None else true_class  # seeds the random map
        rows = []
        for m in make_maps(self, image, [pred], key, self.maps):
            sums = cell_sums(m.per_class[None if None in m.per_class else pred], at, self.cell)
            row = {"map": m.name, "sampler": m.sampler}
            for model, d in drops.items():
                row[f"rho_{model}"] = spearman(sums, np.mean([d[f] for f in self.fills], axis=0))
                row.update({f"rho_{model}_{f}": spearman(sums, np.asarray(d[f])) for f in self.fills})
            rows.append(row)
        p = intact["evaluator"]
        return {"class": pred, "evaluator_top1": int(p.argmax()), "evaluator_p": float(p[pred]), "cells": len(at),
                "drops": drops, "rows": rows}

    headline_label = "ρ evaluator"

    def headline(self, records):
        return [{"map": row["map"], "sampler": row["sampler"], "image": r["image"], "score": row["rho_evaluator"]}
                for r in records for row in r["rows"]
                if plain_label(row["sampler"]) == row["sampler"] and np.isfinite(row["rho_evaluator"])]

    def section(self, records, out_dir) -> list[str]:
        rows = [{"image": r["image"], "target": "pred", **row} for r in records for row in r["rows"]]
        outfiles.write_atomic(os.path.join(out_dir, "indist.csv"),
                              lambda f: f.write(csv_text(rows, list(rows[0])).encode()))

        def long(model, fill=ALL):  # rows as stats.compare reads them, NaN ρ (a constant map) left out
            key = f"rho_{model}" + ("" if fill == ALL else f"_{fill}")
            return [{**r, "fill": fill, "rho": r[key]} for r in rows if np.isfinite(r[key])]

        n_cells = records[0]["cells"]
        lines = ["## In-distribution single-cell removal (a fine-tuned evaluator)", "",
                 f"{len(records)} photos, the predicted class. Each of {n_cells} cells of {self.cell}×{self.cell} "
                 "pixels (a grid offset by half a cell, so no map's windows line up with it) removed alone, under every "
                 "fill; the drop of p(class) of the *evaluator* — a copy of the classifier fine-tuned by "
                 "self-distillation on photos with parts removed by all the fills (its card: "
                 f"`{os.path.splitext(os.path.basename(self.evaluator.model_path))[0]}.json`), so that removal is in "
                 "its training distribution. Score: Spearman ρ between the map's sums over the cells and the drops "
                 "averaged over the fills (1: the map orders the cells as removing them does). Mean and 95 % t "
                 "interval over photos; Δ and p: paired against PMI/PatchSampler (Wilcoxon). The last column scores "
                 "the same maps against the original classifier's drops (out of distribution). Per photo and map: "
                 "`indist.csv`.", "",
                 "| rank | map | sampler | ρ evaluator [95 % CI] | Δ | p | ρ original [95 % CI] | Δ | p |",
                 "|---|---|---|---|---|---|---|---|---|"]
        ev = compare([r for r in long("evaluator") if plain_label(r["sampler"]) == r["sampler"]], "rho", ALL, "pred")
        og = compare([r for r in long("original") if plain_label(r["sampler"]) == r["sampler"]], "rho", ALL, "pred")
        for i, key in enumerate(sorted(ev, key=lambda k: -ev[k]["mean"]), 1):
            e, o = ev[key], og.get(key)
            lines.append(f"| {i} | {key[0]} | {key[1]} | {fmt_ci(e)} | {fmt_signed(e['diff'])} | {fmt_p(e['p'])} | "
                         + (f"{fmt_ci(o)} | {fmt_signed(o['diff'])} | {fmt_p(o['p'])} |" if o else "— | | |"))
        agree = np.mean([r["evaluator_top1"] == r["class"] for r in records])
        lines += ["", f"The evaluator's top-1 is the classifier's on {100 * agree:.0f} % of these photos (mean p(class) "
                  f"{np.mean([r['evaluator_p'] for r in records]):.3f} against the classifier's "
                  f"{np.mean([r['top5_probs'][0] for r in records]):.3f}).", "", "### Per fill", "", "ρ against each fill's own drops (mean over photos), evaluator / original:",
                  "", "| map | sampler | " + " | ".join(self.fills) + " |", "|---|---|" + "---|" * len(self.fills)]
        per_fill = {m: {f: compare(long(m, f), "rho", f, "pred") for f in self.fills} for m in MODELS}
        for key in sorted(ev, key=lambda k: -ev[k]["mean"]):
            cells_ = [" / ".join(f"{per_fill[m][f][key]['mean']:.3f}" if key in per_fill[m][f] else "—"
                                 for m in MODELS) for f in self.fills]
            lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells_) + " |")
        for m in MODELS:
            lines += ["", f"Kendall τ between the maps' rankings under each fill's drops, {m}:", ""]
            lines += tau_table({f: {k: v["mean"] for k, v in per_fill[m][f].items()} for f in self.fills})
        lines += ["", "How alike the fills' drops are: Spearman ρ between two fills' drops over the cells of a photo, "
                  "mean [95 % CI] over photos (1: the fills remove alike).", "",
                  "| fills | evaluator | original |", "|---|---|---|"]
        for i, a in enumerate(self.fills):
            for b in self.fills[i + 1:]:
                cols = [fmt_values([spearman(np.asarray(r["drops"][m][a]), np.asarray(r["drops"][m][b]))
                                    for r in records]) for m in MODELS]
                lines.append(f"| {a} – {b} | " + " | ".join(cols) + " |")
        lines += ["", "Size of the drops: mean |drop| of p(class) per cell, evaluator / original: " + ", ".join(
            f"{f} " + " / ".join(f"{np.mean([np.abs(r['drops'][m][f]).mean() for r in records]):.4f}" for m in MODELS)
            for f in self.fills) + ".", ""]
        lines += self._derived(rows)
        return lines

    def _derived(self, rows) -> list[str]:
        """The smoothed copies and the candidates against the plain maps they come from (evaluator, mean drops)."""
        derived = [r for r in rows if plain_label(r["sampler"]) != r["sampler"] and np.isfinite(r["rho_evaluator"])]
        if not derived:
            return []
        value = {(r["map"], r["sampler"], r["image"]): r["rho_evaluator"] for r in rows
                 if np.isfinite(r["rho_evaluator"])}
        lines = ["### Smoothed copies and candidates", "", "ρ evaluator against the plain map each comes from, paired "
                 "on the same photos (Wilcoxon p).", "", "| map | sampler | ρ | Δ plain | p |", "|---|---|---|---|---|"]
        for key in dict.fromkeys((r["map"], r["sampler"]) for r in derived):
            base = (key[0], plain_label(key[1]))
            a, b = paired(value, key, base)
            lines.append(f"| {key[0]} | {key[1]} | {fmt_values(a)} | {fmt_signed(float(np.mean(a - b)))} | "
                         f"{fmt_p(wilcoxon(a, b))} |")
        return lines + [""]
