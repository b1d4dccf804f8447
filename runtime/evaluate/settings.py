"""The benchmark's studies of the maps' own settings: samples (Fig. 23: N in-fills per patch; two independent runs
per N give the maps' split-half correlation, their Monte-Carlo standard error in bits and their deletion/insertion
AUC) and patch (Fig. 22: patch size K, S = K, with each sampler that exists at that K, deletion/insertion AUC)."""
from __future__ import annotations

import os

import numpy as np

from .. import outfiles
from ..errors import InfolensError
from .benchmark import Study, check_fills
from .report import write_csv
from .stats import fmt_p, fmt_signed, fmt_values, wilcoxon
from .maps import parse_sampler
from .plots import pyplot
from .removal import score
from .sanity import correlations


class SamplesStudy(Study):
    """sampler, K, stride: the reference PMI/IG run; counts: the N values; steps, fills: the curves; seed and
    seed + 1: the two independent runs per N."""

    name, every_photo = "samples", False

    def __init__(self, classifier, sampler="patchsampler", K=16, stride=16, counts=(1, 2, 4, 8, 16), steps=50,
                 fills=("blur", "black"), seed=0, batch_size=64):
        super().__init__(classifier, sampler=sampler, K=K, stride=stride, counts=counts, steps=steps, fills=fills,
                         seed=seed, batch_size=batch_size)
        check_fills(fills)
        self.label, self.sampler_name, self.model = parse_sampler(sampler)
        self.K, self.stride, self.counts, self.steps, self.fills, self.seed = K, stride, list(counts), steps, fills, seed

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), "sampler": self.label, "K": self.K,
                "S": self.stride, "counts": self.counts, "steps": self.steps, "fills": list(self.fills),
                "seed": self.seed}

    def measure(self, image, pred, true_class) -> dict:
        explainer = self.explainer(self.sampler_name, self.K, self.model)
        rows = []
        for n in self.counts:
            a, b = (explainer.explain(image, classes=[pred], stride=self.stride, samples=n, seed=s)
                    for s in (self.seed, self.seed + 1))
            for name in ("pmi", "ig"):
                ma, mb = a.map_for(name, pred), b.map_for(name, pred)
                se = a.stderr[name][0] if a.stderr[name].ndim == 3 else a.stderr[name]
                row = {"N": n, "map": name, "forwards": a.forwards, "seconds": round(a.timing["total_s"], 3),
                       **{f"split_{k}": v for k, v in correlations(ma, mb).items()},
                       "se_mean": float(se.mean()) if np.isfinite(se).all() else None,  # N=1: no estimate
                       "map_std": float(ma.std())}
                for fill in self.fills:
                    dele, ins, *_ = score(self.classifier, image, self.fill(fill, self.K), {pred: ma}, {"pred": pred},
                                         self.steps, self.batch_size)["pred"]
                    row[f"deletion_{fill}"], row[f"insertion_{fill}"] = dele, ins
                rows.append(row)
        return {"class": pred, "rows": rows}

    def section(self, records, out_dir) -> list[str]:
        lines = ["## The number of in-fills N (Fig. 23)", "",
                 f"PMI and IG with {self.label} (K={self.K}, S={self.stride}) on {len(records)} photos, for the "
                 "predicted class. Two runs per N with independent in-fills (seeds "
                 f"{self.seed} and {self.seed + 1}): their Pearson correlation r is the maps' split-half "
                 "reliability; if a map is its N→∞ limit plus independent Monte-Carlo noise, its correlation with "
                 "that limit is √r (est. ρ with N=∞). MC s.e.: the map's mean standard error in bits (the "
                 "explanation's own estimate from the N in-fills), against the spread of the map (map s.d.). AUCs "
                 "of the first run's map. Mean [95 % CI] over photos. Per photo: `samples.csv`.", ""]
        rows = [{"image": r["image"], **row} for r in records for row in r["rows"]]
        fills = list(self.fills)
        head = "| map | N | forwards | split-half r | est. ρ with N=∞ | split-half Spearman | MC s.e. (bits) | " \
               "map s.d. (bits) | " + " | ".join(f"deletion {f} | insertion {f}" for f in fills) + " |"
        lines += [head, "|" + "---|" * (8 + 2 * len(fills))]
        for name in ("pmi", "ig"):
            for n in self.counts:
                sel = [x for x in rows if x["map"] == name and x["N"] == n]
                est = [np.sqrt(max(x["split_pearson"], 0)) for x in sel if x["split_pearson"] is not None]
                lines.append(f"| {name} | {n} | {np.mean([x['forwards'] for x in sel]):.0f} | "
                             f"{fmt_values([x['split_pearson'] for x in sel])} | {fmt_values(est)} | "
                             f"{fmt_values([x['split_spearman'] for x in sel])} | {fmt_values([x['se_mean'] for x in sel], 4)} | "
                             f"{fmt_values([x['map_std'] for x in sel], 4)} | " +
                             " | ".join(f"{fmt_values([x[f'deletion_{f}'] for x in sel])} | "
                                        f"{fmt_values([x[f'insertion_{f}'] for x in sel])}" for f in fills) + " |")
        lines += ["", f"Paired against N={self.counts[-1]} on the same photos (Δ = smaller N − N={self.counts[-1]}, "
                  "Wilcoxon p):", ""]
        for name in ("pmi", "ig"):
            ref = {x["image"]: x for x in rows if x["map"] == name and x["N"] == self.counts[-1]}
            for n in self.counts[:-1]:
                sel = [x for x in rows if x["map"] == name and x["N"] == n]
                parts = []
                for f in fills:
                    for kind in ("deletion", "insertion"):
                        a = [x[f"{kind}_{f}"] for x in sel]
                        b = [ref[x["image"]][f"{kind}_{f}"] for x in sel]
                        parts.append(f"{kind} {f} {fmt_signed(float(np.mean(np.subtract(a, b))))} "
                                     f"(p {fmt_p(wilcoxon(a, b))})")
                lines.append(f"- {name}, N={n}: " + "; ".join(parts))
        write_csv(out_dir, "samples.csv", rows)
        self._plot(rows, os.path.join(out_dir, "samples.png"))
        return lines + ["", "![N](samples.png)", ""]

    def _plot(self, rows, path):
        plt = pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
        for k, name in enumerate(("pmi", "ig")):
            def mean(key):  # N=1 has no standard error: no point
                values = [[x[key] for x in rows if x["map"] == name and x["N"] == n and x[key] is not None]
                          for n in self.counts]
                return [np.mean(v) if v else np.nan for v in values]
            axes[0].plot(self.counts, mean("split_pearson"), "-o", color=f"C{k}", label=f"{name} split-half r")
            axes[1].plot(self.counts, mean("se_mean"), "-o", color=f"C{k}", label=f"{name} MC s.e.")
            axes[1].plot(self.counts, mean("map_std"), "--", color=f"C{k}", label=f"{name} map s.d.")
            axes[2].plot(self.counts, mean(f"deletion_{self.fills[0]}"), "-o", color=f"C{k}",
                         label=f"{name} deletion")
            axes[2].plot(self.counts, mean(f"insertion_{self.fills[0]}"), "--s", color=f"C{k}",
                         label=f"{name} insertion")
        titles = ("split-half Pearson r", "bits", f"AUC, fill {self.fills[0]}")
        for ax, title in zip(axes, titles):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("N in-fills per patch")
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        outfiles.save_figure(fig, path)
        plt.close(fig)


class PatchStudy(Study):
    """sizes: the K values (S = K); samplers: --samplers entries, each run at every K where it exists (a
    PatchSampler is trained for one K); reference: the K the others are paired against (the benchmark's -K);
    samples, steps, fills, seed as in the removal study."""

    name, every_photo = "patch", False

    def __init__(self, classifier, sizes=(8, 16, 32), samplers=("patchsampler", "mean"), samples=8, steps=50,
                 fills=("blur", "black"), seed=0, batch_size=64, reference=16):
        super().__init__(classifier, sizes=sizes, samplers=samplers, samples=samples, steps=steps, fills=fills,
                         seed=seed, batch_size=batch_size, reference=reference)
        check_fills(fills)
        self.samples, self.steps, self.fills, self.seed, self.reference = samples, steps, fills, seed, reference
        self.runs = []  # (K, label, name, model) that exist
        for entry in samplers:
            label, name, model = parse_sampler(entry)
            for K in sizes:
                try:
                    self.sampler(name, K, model)
                except InfolensError:
                    continue  # no such sampler at this K (a PatchSampler is trained for one K)
                self.runs.append((K, label, name, model))

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), "runs": [f"{l}@K={K}" for K, l, *_ in self.runs],
                "N": self.samples, "steps": self.steps, "fills": list(self.fills), "seed": self.seed,
                "reference": self.reference}

    def measure(self, image, pred, true_class) -> dict:
        rows = []
        for K, label, name, model in self.runs:
            e = self.explainer(name, K, model).explain(image, classes=[pred], stride=K, samples=self.samples,
                                                       seed=self.seed)
            for m in ("pmi", "ig"):
                row = {"K": K, "sampler": label, "map": m, "forwards": e.forwards, "seconds": round(e.timing["total_s"], 3)}
                for fill in self.fills:
                    dele, ins, *_ = score(self.classifier, image, self.fill(fill, K), {pred: e.map_for(m, pred)},
                                         {"pred": pred}, self.steps, self.batch_size)["pred"]
                    row[f"deletion_{fill}"], row[f"insertion_{fill}"] = dele, ins
                rows.append(row)
        return {"class": pred, "rows": rows}

    def section(self, records, out_dir) -> list[str]:
        rows = [{"image": r["image"], **row} for r in records for row in r["rows"]]
        fills = list(self.fills)
        lines = ["## Patch size K (Fig. 22)", "",
                 f"PMI and IG at each K (S = K, N={self.samples}) with each sampler that exists at that K, on "
                 f"{len(records)} photos, for the predicted class. Mean [95 % CI]; Δ, p: paired against "
                 f"K={self.reference} with the same sampler (Wilcoxon). Per photo: `patch.csv`.", "",
                 "| sampler | map | K | forwards | s | " +
                 " | ".join(f"deletion {f} | Δ, p | insertion {f} | Δ, p" for f in fills) + " |",
                 "|" + "---|" * (5 + 4 * len(fills))]
        for label in dict.fromkeys(l for _, l, *_ in self.runs):
            for m in ("pmi", "ig"):
                ref = {x["image"]: x for x in rows if x["sampler"] == label and x["map"] == m and x["K"] == self.reference}
                for K in [K for K, l, *_ in self.runs if l == label]:
                    sel = [x for x in rows if x["sampler"] == label and x["map"] == m and x["K"] == K]
                    cells = []
                    for f in fills:
                        for kind in ("deletion", "insertion"):
                            key = f"{kind}_{f}"
                            cells.append(fmt_values([x[key] for x in sel]))
                            paired = [x for x in sel if x["image"] in ref]
                            a = [x[key] for x in paired]
                            b = [ref[x["image"]][key] for x in paired]
                            cells.append("" if K == self.reference or not paired else
                                         f"{fmt_signed(float(np.mean(np.subtract(a, b))))}, {fmt_p(wilcoxon(a, b))}")
                    lines.append(f"| {label} | {m} | {K} | {np.mean([x['forwards'] for x in sel]):.0f} | "
                                 f"{np.mean([x['seconds'] for x in sel]):.1f} | " + " | ".join(cells) + " |")
        write_csv(out_dir, "patch.csv", rows)
        return lines + [""]
