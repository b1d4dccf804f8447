"""The benchmark's sections beyond the removal and pointing protocols (removal.py, pointing.py; benchmark.py runs
every study and assembles the report):

  * negative — Fig. 10: remove the pixels with negative PMI for the predicted class, most negative first
    (curves.negative_evidence's protocol), and, as a control, the same number of pixels in a random order;
    p(class) after each step, averaged over every photo;
  * sanity — Figs. 15, 24: sanity.cascade for every method on the same randomized models, Spearman and Pearson
    per step;
  * cause — why IG keeps a positive Spearman on a fully random model: its maps on the trained and the fully random
    model, with each sampler, against three classifier-free or image-free covariates (CauseStudy);
  * samples — Fig. 23: N in-fills per patch: two independent runs (seeds s and s+1) per N give the maps'
    split-half correlation, their Monte-Carlo standard error (bits) and their deletion/insertion AUC;
  * patch — Fig. 22: patch size K (S = K) with each sampler that exists at that K, deletion/insertion AUC.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx

from .. import outfiles, params
from ..errors import InfolensError
from ..measures import patches_to_pixels
from ..methods import METHODS, Explainer, patch_grid
from ..samplers import windows
from ..samplers.rng import streams
from .benchmark import Study, check_fills, csv_text, fmt_p, fmt_signed, fmt_values, wilcoxon
from .curves import pixel_order, removal_probs, step_counts
from .maps import CONTROLS, edge_map, parse_sampler
from .plots import pyplot
from .indist import IndistStudy
from .pointing import PointingStudy
from .mipin import MipinStudy
from .removal import GridStudy, RemovalStudy, score
from .sanity import correlations, layer_table, step_model, twin

STUDIES = ("removal", "grids", "pointing", "indist", "negative", "sanity", "cause", "samples", "patch", "mipin")
CAUSE_SAMPLERS = ("gray", "mean", "black", "noise", "gaussian")  # besides the reference sampler


def build(names, classifier, samplers, methods, K, stride, samples, rise_masks, steps, fills, seed, batch_size,
          sanity_every=10, counts=(1, 2, 4, 8, 16), sizes=(8, 16, 32), negative_steps=10, fill_draws=4, smooth=8.0,
          mosaics=100, targets=("pred",), min_p=0.5, shrink=True, scales=(), extra_photos=50, grid_photos=50,
          grids=((16, 8, 8), (8, 4, 4)), fit_data=(), sanity_crops=256, indist_photos=50, evaluator=None,
          cell=24) -> list[Study]:
    """The studies `names` (of STUDIES, in that order) with the benchmark's settings; `samplers[0]` is the
    reference sampler of every study after the removal and pointing ones."""
    unknown = [n for n in names if n not in STUDIES]
    if unknown:
        raise InfolensError(f"unknown study {unknown[0]!r}: choose from {', '.join(STUDIES)}", "studies")
    params.check("sanity_every", sanity_every)
    params.check("negative_steps", negative_steps)
    common = dict(sampler=samplers[0], K=K, stride=stride, seed=seed, batch_size=batch_size)
    # the N and K studies compare settings of one map, under the fills that cost one forward per step
    cheap = tuple(f for f in fills if f in ("blur", "black", "mean")) or ("blur",)
    make = {
        "removal": lambda: RemovalStudy(classifier, samplers, methods, K, stride, samples, rise_masks, steps, fills,
                                        fill_draws, smooth, shrink, scales, targets, seed, batch_size,
                                        extra_photos),
        # the maps that take a grid: the first sampler, the two in-fills that carry nothing or little of the patch,
        # and black, which leads the pointing game
        "grids": lambda: GridStudy(classifier, list(dict.fromkeys((samplers[0], "mean", "ring-mean", "black"))),
                                   [m for m in methods if m in ("occlusion", "cam", *CONTROLS)], grids, grid_photos,
                                   rise_masks, steps, fills, fill_draws, targets, seed, batch_size),
        "pointing": lambda: PointingStudy(classifier, samplers, methods, K, stride, samples, rise_masks, smooth,
                                          mosaics, min_p, shrink, scales, seed, batch_size),
        "indist": lambda: IndistStudy(classifier, samplers, methods, K, stride, samples, rise_masks, fills,
                                      fill_draws, smooth, shrink, scales, evaluator, cell, indist_photos, seed,
                                      batch_size),
        "negative": lambda: NegativeStudy(classifier, samples=samples, steps=negative_steps,
                                          fills=tuple(dict.fromkeys(("patchsampler", *cheap))), **common),
        "sanity": lambda: SanityStudy(classifier, samples=samples, rise_masks=rise_masks, every=sanity_every,
                                      methods=[m for m in methods if m not in CONTROLS], **common),
        "cause": lambda: CauseStudy(classifier, samples=samples, **common),
        "samples": lambda: SamplesStudy(classifier, counts=list(counts), steps=steps, fills=cheap, **common),
        "patch": lambda: PatchStudy(classifier, sizes=list(sizes), samples=samples, steps=steps, fills=cheap,
                                    samplers=[samplers[0], "mean"], seed=seed, batch_size=batch_size, reference=K),
        "mipin": lambda: MipinStudy(classifier, samples=samples, steps=steps, fit_data=fit_data,
                                    sanity_crops=sanity_crops, **common),
    }
    return [make[n]() for n in STUDIES if n in names]


def _write_csv(out_dir: str, name: str, rows: list[dict]) -> None:
    if rows:
        outfiles.write_atomic(os.path.join(out_dir, name), lambda f: f.write(csv_text(rows, list(rows[0])).encode()))


# ---- negative evidence (Fig. 10) ---------------------------------------------------------------------------------

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
        _write_csv(out_dir, "negative.csv", rows)
        return lines + ["![negative evidence](negative.png)", ""]


# ---- sanity checks (Figs. 15, 24) --------------------------------------------------------------------------------

def change_map(sampler, image: np.ndarray, K: int, stride: int, n: int, seed: int) -> np.ndarray:
    """The classifier-free 'in-fill change' map: per patch, the mean squared difference (uint8 units²) between
    its n in-fills (the streams a method draws) and the patch itself, averaged onto pixels like the maps — float32
    [H, W]."""
    H, W = image.shape[:2]
    ys, xs = patch_grid(H, W, K, stride)
    n = 1 if sampler.deterministic else n
    fills = sampler.sample(image, ys, xs, n, streams(seed, np.arange(len(ys)))).astype(np.float32)
    patches = windows(image, ys, xs, K).astype(np.float32)
    change = ((fills - patches[:, None]) ** 2).mean(axis=(1, 2, 3, 4))
    return patches_to_pixels(change, ys, xs, K, (H, W))


def partial_spearman(a: np.ndarray, b: np.ndarray, *given: np.ndarray) -> float | None:
    """Spearman's correlation of a and b with the `given` maps partialled out (Pearson of the rank residuals after a
    linear fit on the given maps' ranks); None when a residual is constant."""
    from scipy import stats

    ra, rb = (stats.rankdata(np.ravel(v)) for v in (a, b))
    X = np.column_stack([np.ones_like(ra)] + [stats.rankdata(np.ravel(g)) for g in given])
    res = [r - X @ np.linalg.lstsq(X, r, rcond=None)[0] for r in (ra, rb)]
    if min(np.ptp(r) for r in res) < 1e-9:
        return None
    return float(stats.pearsonr(*res)[0])


class SanityStudy(Study):
    """sampler: PMI/IG's sampler; methods: the comparison methods (each with its own sampler at K); K, stride,
    samples, rise_masks: as in the AUC study; every: layers randomized per cascade step after the first (sanity.py);
    seed: the maps' and the randomization's seed."""

    name, every_photo = "sanity", False

    def __init__(self, classifier, sampler="patchsampler", methods=("occlusion", "pda", "rise", "mipin"), K=16,
                 stride=16, samples=8, rise_masks=1000, every=10, seed=0, batch_size=64):
        super().__init__(classifier, sampler=sampler, methods=methods, K=K, stride=stride, samples=samples,
                         rise_masks=rise_masks, every=every, seed=seed, batch_size=batch_size)
        self.label, self.sampler_name, self.model = parse_sampler(sampler)
        self.methods, self.K, self.stride, self.samples = list(methods), K, stride, samples
        self.rise_masks, self.every, self.seed = rise_masks, every, seed

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), "sampler": self.label, "K": self.K,
                "S": self.stride, "N": self.samples, "rise_masks": self.rise_masks, "methods": self.methods,
                "every": self.every, "seed": self.seed}

    def measure(self, image, pred, true_class) -> dict:
        from .sanity import cascade

        clf = self.classifier
        runs = [("pmi", self.sampler(self.sampler_name, self.K, self.model), self.samples)]
        for m in self.methods:
            own = METHODS[m].default_sampler
            runs.append((m, own and self.sampler(own, self.K), self.rise_masks if m == "rise" else self.samples))
        rec = cascade(clf, image, runs=runs, stride=self.stride, seed=self.seed, steps_every=self.every,
                      batch_size=self.batch_size)
        steps = [{"layers": s["layers_randomized"], "correlation": s["correlation"], "p_class": s["p_class"],
                  "top1": s["top1"]["index"], "forwards": s["forwards"], "seconds": round(s["seconds"], 2)}
                 for s in rec["steps"]]
        return {"class": pred, "n_layers": rec["n_layers"], "steps": steps, "forwards": rec["forwards"]}

    def section(self, records, out_dir) -> list[str]:
        layers = [s["layers"] for s in records[0]["steps"]]
        names = list(records[0]["steps"][0]["correlation"])
        lines = ["## Sanity checks (Figs. 15, 24)", "",
                 f"Cascading randomization (sanity.py's protocol) on {len(records)} photos: the "
                 f"{records[0]['n_layers']} weight layers randomized from the output down, {self.every} more per "
                 f"step; every method re-explains the predicted class on each randomized model (PMI/IG with "
                 f"{self.label}, occlusion with gray, PDA with gaussian, RISE with {self.rise_masks} masks; MIP-IN "
                 "applies the trained model's inverse to the randomized model's activations). Mean correlation with "
                 "the map on the trained model [95 % CI over photos]; a map that passes falls to about 0. "
                 "Per photo, map and step: `sanity.csv`.", ""]
        rows = []
        for kind, title in (("spearman", "Spearman"), ("pearson", "Pearson"),
                            ("abs", "|Spearman|: a map that only flips its sign (ρ = −1) is still the same map")):
            lines += [f"### {title}", "",
                      "| map | " + " | ".join(f"{n} layers" for n in layers[1:]) + " |",
                      "|---|" + "---|" * (len(layers) - 1)]
            for name in names:
                cells = [fmt_values([_rho(r["steps"][j]["correlation"][name], kind) for r in records], 2)
                         for j in range(1, len(layers))]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
        for r in records:
            for s in r["steps"]:
                rows += [{"image": r["image"], "map": name, "layers": s["layers"],
                          "spearman": s["correlation"][name]["spearman"], "pearson": s["correlation"][name]["pearson"]}
                         for name in names]
        _write_csv(out_dir, "sanity.csv", rows)
        self._plot(records, layers, names, os.path.join(out_dir, "sanity.png"))
        return lines + ["![sanity](sanity.png)", ""]

    def _plot(self, records, layers, names, path):
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
        for ax, kind in zip(axes, ("spearman", "pearson")):
            for k, name in enumerate(names):
                m = [np.nanmean([np.nan if r["steps"][j]["correlation"][name][kind] is None else
                                 r["steps"][j]["correlation"][name][kind] for r in records]) for j in range(len(layers))]
                ax.plot(layers, m, marker="o", ms=3, color=f"C{k}", label=name)
            ax.axhline(0, color="gray", lw=0.8)
            ax.set_ylim(-0.3, 1.05)
            ax.set_xlabel(f"layers randomized from the output (of {records[0]['n_layers']})")
            ax.set_ylabel(f"mean {kind} with the trained model's map")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        outfiles.save_figure(fig, path)
        plt.close(fig)


def _rho(correlation: dict, kind: str) -> float | None:
    """One of a record's correlations: "spearman", "pearson", or "abs" (|Spearman|)."""
    if kind != "abs":
        return correlation[kind]
    return None if correlation["spearman"] is None else abs(correlation["spearman"])


class CauseStudy(Study):
    """Why IG keeps a positive Spearman with its trained-model map once every weight is random (docs/sanity: +0.23
    on one photo, the paper ≈ 0).  For the reference sampler and each of CAUSE_SAMPLERS, PMI and IG for the
    predicted class on the trained and the fully random model (sanity.py's randomization, all layers, `seed`), and
    three covariates that hold no trained weights:
      change   — the in-fill change map (change_map): how far the sampler's in-fills are from each patch;
      position — the fully random model's map of a uniform-noise image (seeded, the same for every photo): what
                 the random network's sensitivity by position gives, whatever the photo;
      edges    — the photo's gradient energy per patch (edge_map): image structure a random convolution sees.
    Records Spearman's ρ of the trained-model map with the random-model map, of the random-model map with each
    covariate, and the partial ρ of the first pair given each covariate and all three."""

    name, every_photo = "cause", False
    COVARIATES = ("change", "position", "edges")

    def __init__(self, classifier, sampler="patchsampler", K=16, stride=16, samples=8, seed=0, batch_size=64):
        super().__init__(classifier, sampler=sampler, K=K, stride=stride, samples=samples, seed=seed,
                         batch_size=batch_size)
        self.label, self.sampler_name, self.model = parse_sampler(sampler)
        self.K, self.stride, self.samples, self.seed = K, stride, samples, seed
        self.samplers = [(self.label, self.sampler_name, self.model)] + [(s, s, None) for s in CAUSE_SAMPLERS]
        self._tmp = tempfile.TemporaryDirectory(prefix="infolens-cause-")  # the random model's file, for the study
        model = onnx.load(classifier.model_path)
        table = layer_table(model)
        self.random = twin(classifier, step_model(model, [r["tensors"] for r in table], len(table), seed),
                           os.path.join(self._tmp.name, "random.onnx"))
        self._position = {}

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), "samplers": [l for l, *_ in self.samplers],
                "K": self.K, "S": self.stride, "N": self.samples, "seed": self.seed}

    def _maps(self, clf, sampler, image, cls) -> dict:
        e = Explainer(clf, sampler, batch_size=self.batch_size).explain(
            image, classes=[cls], stride=self.stride, samples=self.samples, seed=self.seed)
        return {m: e.map_for(m, cls) for m in ("pmi", "ig")}

    def _position_maps(self, label, sampler, shape) -> dict:
        """The random model's maps of the noise image, for its own top class (made once per sampler)."""
        if label not in self._position:
            noise = np.random.default_rng([self.seed, 7]).integers(0, 256, (*shape, 3), dtype=np.uint8)
            top = int(np.argmax(self.random.predict_images(noise[None])[0]))
            self._position[label] = self._maps(self.random, sampler, noise, top)
        return self._position[label]

    def measure(self, image, pred, true_class) -> dict:
        edges = edge_map(image, self.K, self.stride)
        out = {}
        for label, name, model in self.samplers:
            sampler = self.sampler(name, self.K, model)
            orig, rand = (self._maps(c, sampler, image, pred) for c in (self.classifier, self.random))
            position = self._position_maps(label, sampler, image.shape[:2])
            change = change_map(sampler, image, self.K, self.stride, self.samples, self.seed)
            out[label] = {}
            for m in ("pmi", "ig"):
                cov = {"change": change, "position": position[m], "edges": edges}
                out[label][m] = {"orig_random": correlations(orig[m], rand[m])["spearman"],
                                 **{f"random_{k}": correlations(rand[m], v)["spearman"] for k, v in cov.items()},
                                 **{f"orig_{k}": correlations(orig[m], v)["spearman"] for k, v in cov.items()},
                                 **{f"given_{k}": partial_spearman(orig[m], rand[m], v) for k, v in cov.items()},
                                 "given_all": partial_spearman(orig[m], rand[m], *cov.values())}
        return {"class": pred, "cause": out}

    def section(self, records, out_dir) -> list[str]:
        cols = ["orig_random"] + [f"random_{k}" for k in self.COVARIATES] + [f"orig_{k}" for k in self.COVARIATES] + \
               [f"given_{k}" for k in (*self.COVARIATES, "all")]
        lines = ["## Why IG stays correlated on a fully random model", "",
                 f"On {len(records)} photos, PMI and IG for the predicted class on the trained model (orig) and on "
                 "the fully random one (random: every weight layer randomized as in the sanity check), with each "
                 f"sampler (K={self.K}, N={self.samples}). Covariates without trained weights: **change**, the mean "
                 "squared difference between a patch's in-fills and the patch; **position**, the random model's map "
                 "of a uniform-noise image (the same for every photo: sensitivity by position alone); **edges**, the "
                 "photo's Sobel gradient energy per patch. Spearman's ρ, mean [95 % CI] over photos; 'given': the "
                 "partial ρ of orig~random with that covariate (or all three) partialled out. Per photo: "
                 "`cause.csv`.", "",
                 "| sampler | map | " + " | ".join(c.replace("_", "~").replace("given~", "given ") for c in cols)
                 + " |", "|---|---|" + "---|" * len(cols)]
        rows = []
        for label, *_ in self.samplers:
            for m in ("ig", "pmi"):
                values = [r["cause"][label][m] for r in records]
                lines.append(f"| {label} | {m} | " + " | ".join(fmt_values([v[c] for v in values], 2) for c in cols)
                             + " |")
                rows += [{"image": r["image"], "sampler": label, "map": m, **r["cause"][label][m]} for r in records]
        _write_csv(out_dir, "cause.csv", rows)
        return lines + [""]


# ---- N in-fills (Fig. 23) and patch size K (Fig. 22) -------------------------------------------------------------

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
        _write_csv(out_dir, "samples.csv", rows)
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
        _write_csv(out_dir, "patch.csv", rows)
        return lines + [""]


__all__ = ["STUDIES", "build", "NegativeStudy", "SanityStudy", "SamplesStudy", "PatchStudy"]
