"""The negative-evidence study of `infolens eval benchmark` (paper Fig. 10): remove the pixels with negative PMI
for the predicted class, most negative first (curves.negative_evidence's protocol), and, as a control, the same
number of pixels in a random order; p(class) after each step, averaged over every photo."""
from __future__ import annotations

import os

import numpy as np

from .. import outfiles
from .benchmark import Study, check_fills
from .report import write_csv
from .stats import fmt_p, fmt_signed, fmt_values, wilcoxon
from .curves import pixel_order, removal_probs, step_counts
from .maps import parse_sampler
from .plots import pyplot


class NegativeStudy(Study):
    """sampler: the PMI map's sampler (a --samplers entry), K, stride, samples: its grid; steps: removal steps
    (step k removes ceil(k·n_neg/steps) of the n_neg negative pixels); fills: what removed pixels become
    (curves.FILLS; "patchsampler" uses the PMI map's sampler model when it is a PatchSampler); seed."""

    name = "negative"

    def __init__(self, classifier, sampler="patchsampler", K=16, stride=16, samples=8, steps=10,
                 fills=("patchsampler", "blur"), seed=0, batch_size=64):
        super().__init__(classifier, sampler=sampler, K=K, stride=stride, samples=samples, steps=steps, fills=fills,
                         seed=seed, batch_size=batch_size)
        check_fills(fills)
        self.label, self.sampler_name, self.model = parse_sampler(sampler)
        self.K, self.stride, self.samples, self.steps, self.fills, self.seed = K, stride, samples, steps, fills, seed

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), "sampler": self.label, "K": self.K,
                "S": self.stride, "N": self.samples, "steps": self.steps, "fills": list(self.fills),
                "seed": self.seed}

    def measure(self, image, pred, true_class) -> dict:
        clf = self.classifier
        e = self.explainer(self.sampler_name, self.K, self.model).explain(
            image, classes=[pred], stride=self.stride, samples=self.samples, seed=self.seed)
        values = e.map_for("pmi", pred)
        n_neg = int((values < 0).sum())
        counts = step_counts(n_neg, self.steps)
        orders = {"negative": pixel_order(-values),
                  "random": np.random.default_rng([self.seed, true_class, 1]).permutation(values.size)}
        curves = {}
        for fill in self.fills:
            for kind, order in orders.items():
                probs = removal_probs(clf, image, self.fill(fill, self.K), order, counts, "deletion", self.batch_size)
                curves[f"{fill}/{kind}"] = {"p_class": probs[:, pred].tolist(), "top1_prob": probs.max(1).tolist(),
                                            "top1_kept": (probs.argmax(1) == pred).tolist()}
        return {"class": pred, "negative_pixels": n_neg, "negative_fraction": n_neg / values.size,
                "explain_forwards": e.forwards, "curves": curves}

    def section(self, records, out_dir) -> list[str]:
        from scipy import stats

        k = np.arange(self.steps + 1) / self.steps
        lines = ["## Negative evidence (Fig. 10)", "",
                 f"The pixels with negative PMI for the predicted class ({self.label}, K={self.K}, N={self.samples}) "
                 "are removed, most negative first, in "
                 f"{self.steps} steps; the control removes as many pixels per step in a random order. Mean p(class) "
                 "over the photos [95 % CI]; the negative pixels are "
                 f"{100 * np.mean([r['negative_fraction'] for r in records]):.1f} % of the image on average "
                 f"(range {100 * min(r['negative_fraction'] for r in records):.1f}–"
                 f"{100 * max(r['negative_fraction'] for r in records):.1f} %). Per photo and step: `negative.csv`.",
                 ""]
        rows = []
        plt = pyplot()
        fig, axes = plt.subplots(1, len(self.fills), figsize=(4.6 * len(self.fills), 3.6), dpi=110, squeeze=False)
        for ax, fill in zip(axes[0], self.fills):
            neg = np.array([r["curves"][f"{fill}/negative"]["p_class"] for r in records])
            rnd = np.array([r["curves"][f"{fill}/random"]["p_class"] for r in records])
            top = np.array([r["curves"][f"{fill}/negative"]["top1_prob"] for r in records])
            kept = np.array([r["curves"][f"{fill}/negative"]["top1_kept"] for r in records], float)
            lines += [f"### Fill {fill}", "",
                      "| negative evidence removed | p(class), negative first | p(class), random pixels | "
                      "top-1 probability | class still top-1 |", "|---|---|---|---|---|"]
            for j, frac in enumerate(k):
                lines.append(f"| {100 * frac:.0f} % | {fmt_values(neg[:, j])} | {fmt_values(rnd[:, j])} | {fmt_values(top[:, j])} | "
                             f"{100 * kept[:, j].mean():.1f} % |")
            rises = int((neg[:, -1] > neg[:, 0]).sum())
            peak = int(np.argmax(neg.mean(0)))
            lines += ["", f"Highest mean p(class) at {100 * k[peak]:.0f} % removed: Δ against the start "
                      f"{fmt_signed(float(np.mean(neg[:, peak] - neg[:, 0])))}, higher on "
                      f"{int((neg[:, peak] > neg[:, 0]).sum())} of {len(records)} photos, Wilcoxon p "
                      f"{fmt_p(wilcoxon(neg[:, peak], neg[:, 0]))}."]
            lines += ["", f"All removed: p(class) rose on {rises} of {len(records)} photos; against the start, "
                      f"Δ {fmt_signed(float(np.mean(neg[:, -1] - neg[:, 0])))}, Wilcoxon p "
                      f"{fmt_p(wilcoxon(neg[:, -1], neg[:, 0]))}; against removing as many random pixels, "
                      f"Δ {fmt_signed(float(np.mean(neg[:, -1] - rnd[:, -1])))}, p "
                      f"{fmt_p(wilcoxon(neg[:, -1], rnd[:, -1]))}.", ""]
            for kind, values, colour in (("negative PMI first", neg, "tab:red"), ("random pixels", rnd, "tab:gray")):
                m = values.mean(0)
                h = stats.sem(values, axis=0) * stats.t.ppf(0.975, len(values) - 1) if len(values) > 1 else 0 * m
                ax.plot(100 * k, m, marker="o", ms=3, color=colour, label=kind)
                ax.fill_between(100 * k, m - h, m + h, color=colour, alpha=0.2)
            ax.set_xlabel("negative evidence removed (%)")
            ax.set_ylabel("mean p(predicted class)")
            ax.set_title(f"fill {fill}, {len(records)} photos, 95 % CI", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            for r in records:
                for kind in ("negative", "random"):
                    c = r["curves"][f"{fill}/{kind}"]
                    rows += [{"image": r["image"], "fill": fill, "order": kind, "step": j, "p_class": p,
                              "top1_prob": t} for j, (p, t) in enumerate(zip(c["p_class"], c["top1_prob"]))]
        fig.tight_layout()
        outfiles.save_figure(fig, os.path.join(out_dir, "negative.png"))
        plt.close(fig)
        write_csv(out_dir, "negative.csv", rows)
        return lines + ["![negative evidence](negative.png)", ""]
