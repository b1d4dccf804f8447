"""The benchmark's model-randomization studies: sanity (Figs. 15, 24: sanity.cascade for every method on the same
randomized models, Spearman and Pearson per step) and cause (why IG keeps a positive Spearman on a fully random
model: its maps on the trained and the fully random model, with each sampler, against three classifier-free or
image-free covariates)."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx

from .. import outfiles
from ..measures import patches_to_pixels
from ..methods import METHODS, Explainer, patch_grid
from ..samplers import windows
from ..samplers.rng import streams
from .benchmark import Study
from .report import write_csv
from .stats import fmt_values
from .maps import edge_map, parse_sampler
from .plots import pyplot
from .sanity import correlations, layer_table, step_model, twin


CAUSE_SAMPLERS = ("gray", "mean", "black", "noise", "gaussian")  # besides the reference sampler


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
        write_csv(out_dir, "sanity.csv", rows)
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
        write_csv(out_dir, "cause.csv", rows)
        return lines + [""]
