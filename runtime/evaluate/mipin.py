"""The MIP-IN study of `infolens eval benchmark` (DESIGN §8): what only an inverse network has to answer for, beside
the removal and pointing protocols, which score its maps like every other map.

Per photo, for the classes c (top-1), c2 (top-2) and two random others a, b:
  * class sensitivity of the class-specific maps (mipin, cam, pmi with the study's sampler, occlusion): the L2
    distance between the unit-norm maps of a and b (the review's metric), the Pearson correlation of the maps of c
    and c2, and class-swap deletion — how much sooner deleting by the map of c lowers p(c) than deleting by the map
    of a (blur fill, AUC(MoRF) of a's map minus c's; > 0: the class's own map deletes faster);
  * completeness and minimality: the classifier's layers above the map layer fed μ_l + S_l^(c) (the class's signal
    on the mean activation) — is c still the top class? — and fed X_l − S_l^(c) — how far does p(c) drop?
  * sanity with the inverse refitted: the classifier's top `depths` layers randomized (sanity.randomize), an inverse
    fitted to each randomized model on `sanity_crops` crops of the `fit_data` photos (once per study), and the
    Spearman correlation of each photo's mipin and cam maps (original top-1 class) with the original model's.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx

from .. import outfiles
from ..errors import InfolensError
from .benchmark import Study
from .report import csv_text
from .stats import fmt_values
from .plots import pyplot

CLASS_MAPS = ("mipin", "cam", "pmi", "occlusion")


class Upper:
    """The classifier's layers above the map layer, run on a substituted map-layer tensor."""

    def __init__(self, clf, map_layer: str):
        from ..backends import sessions
        from ..mipin.part import for_classifier

        model, _ = for_classifier(clf, map_layer)
        model = onnx.shape_inference.infer_shapes(model)  # the extractor types the new input from value_info
        upper = onnx.utils.Extractor(model).extract_model([map_layer], [clf.output.name])
        self.session = sessions.open_session(upper.SerializeToString())
        self.input, self.clf, self._tapped = map_layer, clf, None

    def activation(self, base: np.ndarray, found: dict) -> np.ndarray:
        """The map layer's tensor for the normalized images `base`: from a tapped forward's `found` when it has it,
        else from a forward of its own."""
        if self.input in found:
            return found[self.input]
        if self._tapped is None:
            from ..classifier import Tapped

            self._tapped = Tapped(self.clf, [self.input])
        return self._tapped.run(base)[1][self.input]

    def probs(self, x: np.ndarray) -> np.ndarray:
        raw = self.session.run(None, {self.input: x.astype(np.float32)})[0].astype(np.float64)
        return self.clf.to_probs(raw.reshape(len(x), -1))


def unit(m: np.ndarray) -> np.ndarray:
    m = m.astype(np.float64).ravel()
    n = np.linalg.norm(m)
    return m / n if n > 0 else m


class MipinStudy(Study):
    """sampler, K, stride, samples: the PMI map's; steps: the class-swap deletion's (blur fill); fit_data: folders of
    photos the randomized models' inverses are fitted on; sanity_crops: crops per refit; depths: top layers
    randomized per refit; seed."""

    name, every_photo = "mipin", False

    def __init__(self, classifier, sampler="patchsampler", K=16, stride=16, samples=4, steps=10, fit_data=(),
                 sanity_crops=256, depths=(1, 2), seed=0, batch_size=64):
        super().__init__(classifier, sampler=sampler, K=K, stride=stride, samples=samples, steps=steps,
                         fit_data=list(fit_data), sanity_crops=sanity_crops, depths=list(depths), seed=seed,
                         batch_size=batch_size)
        from ..methods.cam import CAM
        from ..methods.mipin import MIPIN
        from ..mipin.crops import photo_files
        from .. import params

        params.check("sanity_crops", sanity_crops)
        try:
            self.files = photo_files(list(fit_data)) if fit_data else []
        except InfolensError as err:
            raise InfolensError(str(err), "fit_data") from None
        if not self.files:
            raise InfolensError("the MIP-IN study refits inverses on photos of its own: name folders of them with "
                                "--fit-data", "fit_data")
        self.mipin, self.cam = MIPIN(classifier), CAM(classifier)
        self.upper = Upper(classifier, self.mipin.card["map_layer"])
        self.sampler_name, self.K, self.stride, self.samples, self.steps = sampler, K, stride, samples, steps
        self.sanity_crops, self.depths, self.seed = sanity_crops, list(depths), seed
        self._refits = None

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), "sampler": self.sampler_name, "K": self.K,
                "S": self.stride, "N": self.samples, "steps": self.steps, "fit_photos": len(self.files),
                "sanity_crops": self.sanity_crops, "depths": self.depths, "seed": self.seed}

    def measure(self, image, pred, true_class) -> dict:
        from ..methods.mipin import upsample
        from .removal import score

        clf, H, W = self.classifier, *image.shape[:2]
        base = clf.normalize(image[None])
        p0, found = self.mipin.tapped.run(base)
        p0 = p0[0]
        c, c2 = (int(v) for v in np.argsort(-p0, kind="stable")[:2])
        rng = np.random.default_rng([self.seed, c, int(true_class if true_class is not None else c)])
        a, b = (int(v) for v in rng.choice(np.setdiff1d(np.arange(len(p0)), [c, c2]), 2, replace=False))
        classes = [c, c2, a, b]
        small, signal, mean = self.mipin.inverse_run(found, classes, ("maps", "signal", "map_mean"))
        maps = {"mipin": upsample(small, H, W), "cam": self.cam.class_maps(base, classes)}
        maps["pmi"] = self.explainer(self.sampler_name, self.K).explain(
            image, classes=classes, stride=self.stride, samples=self.samples, seed=self.seed).maps["pmi"]
        maps["occlusion"] = self.explainer("gray", self.K).explain(
            image, classes=classes, stride=self.stride, method="occlusion").maps["occlusion"]
        blur = self.fill("blur", self.K)
        rows = []
        for name in CLASS_MAPS:
            m = maps[name]
            own, other = (score(clf, image, blur, {c: mm}, {"pred": c}, self.steps, self.batch_size)["pred"][0]
                          for mm in (m[0], m[2]))
            rows.append({"map": name, "l2_random_classes": float(np.linalg.norm(unit(m[2]) - unit(m[3]))),
                         "corr_top1_top2": float(np.corrcoef(m[0].ravel(), m[1].ravel())[0, 1]),
                         "swap_gain": other - own})
        x_map = self.upper.activation(base, found)
        at_mean, keep, drop = self.upper.probs(np.stack([mean, mean + signal[0], x_map[0] - signal[0]]))
        return {"rows": rows, "p_top1": float(p0[c]), "mean_p": float(at_mean[c]),
                "complete_keeps_class": bool(np.argmax(keep) == c), "complete_p": float(keep[c]),
                "minimal_p": float(drop[c]), "sanity": self._sanity(image, c, maps["mipin"][0], maps["cam"][0])}

    def _sanity(self, image, c, mipin_map, cam_map) -> list[dict]:
        from scipy import stats

        out = []
        for depth, names, rclf, rmipin, rcam in self.refits():
            m1 = rmipin.batch_maps(image[None], np.array([c]))[1][0]
            c1 = rcam.class_maps(rclf.normalize(image[None]), [c])[0]
            out.append({"depth": depth, "tensors": ",".join(names),
                        "mipin_spearman": float(stats.spearmanr(mipin_map.ravel(), m1.ravel())[0]),
                        "cam_spearman": float(stats.spearmanr(cam_map.ravel(), c1.ravel())[0])})
        return out

    def refits(self) -> list:
        """(depth, tensors, classifier, MIPIN, CAM) per depth: the top layers randomized and an inverse refitted —
        made on the first photo, kept for the study's life."""
        if self._refits is None:
            from ..classifier import OnnxClassifier
            from ..methods.cam import CAM
            from ..methods.mipin import MIPIN
            from ..mipin.crops import random_crops
            from ..mipin.fit import fit, save
            from ..mipin.part import for_classifier
            from .sanity import layers, randomize

            clf = self.classifier
            self._tmp = tempfile.TemporaryDirectory()
            model = onnx.load(clf.model_path)
            order = layers(model)
            self._refits = []
            for depth in self.depths:
                names = [n for layer in order[len(order) - depth:] for n in layer]
                path = os.path.join(self._tmp.name, f"random{depth}.onnx")
                onnx.save(randomize(model, names, self.seed), path)
                rclf = OnnxClassifier.from_description(clf.describe(), clf.device, path)
                _, part = for_classifier(rclf)
                crops = random_crops(rclf, self.files, self.sanity_crops, self.seed, False)
                inverse, record = fit(rclf, part, crops, progress=False)
                save(inverse, record, rclf, os.path.splitext(path)[0] + ".mipin.onnx")
                self._refits.append((depth, names, rclf, MIPIN(rclf), CAM(rclf)))
        return self._refits

    def section(self, records, out_dir) -> list[str]:
        rows = [{"image": r["image"], **row} for r in records for row in r["rows"]]
        outfiles.write_atomic(os.path.join(out_dir, "mipin.csv"),
                              lambda f: f.write(csv_text(rows, list(rows[0])).encode()))
        n = len(records)
        lines = ["## MIP-IN: class sensitivity, completeness, minimality, sanity with the inverse refitted", "",
                 f"{n} photos, the classifier's top-1 class c, top-2 c2 and two random other classes a, b per photo; "
                 "mean [95 % t interval]. Its maps are scored like every other map by the removal and pointing "
                 "studies. Per photo and map: `mipin.csv`.", "",
                 "| map | L2 of unit maps, two random classes | corr(map of c, map of c2) | class-swap deletion: own map "
                 "deletes faster (share of photos) | mean AUC gain of the own map |", "|---|---|---|---|---|"]
        for m in CLASS_MAPS:
            sel = [r for r in rows if r["map"] == m]
            gain = np.array([r["swap_gain"] for r in sel])
            lines.append(f"| {m} | {fmt_values([r['l2_random_classes'] for r in sel])} | "
                         f"{fmt_values([r['corr_top1_top2'] for r in sel])} | {np.mean(gain > 0):.2f} | "
                         f"{np.mean(gain):+.4f} |")
        keep = np.mean([r["complete_keeps_class"] for r in records])
        drop = [r["p_top1"] - r["minimal_p"] for r in records]
        lines += ["", f"* Completeness: the layers above the map layer fed μ_l + S_l^(c) keep c as the top class on "
                  f"**{keep:.0%}** of the photos (mean p(c) {np.mean([r['complete_p'] for r in records]):.3f}; fed "
                  f"μ_l alone, {np.mean([r['mean_p'] for r in records]):.3f}).",
                  f"* Minimality: fed X_l − S_l^(c), p(c) drops by {fmt_values(drop)} (from a mean p(c) of "
                  f"{np.mean([r['p_top1'] for r in records]):.3f}).", "",
                  f"Sanity: the top layers randomized, the inverse refitted on {self.sanity_crops} crops of "
                  f"{len(self.files)} photos of its own; Spearman of each photo's map with the original model's "
                  "(near 1: the map does not depend on what was randomized).", "",
                  "| top layers randomized | mipin Spearman | cam Spearman |", "|---|---|---|"]
        for depth in self.depths:
            sel = [s for r in records for s in r["sanity"] if s["depth"] == depth]
            if sel:
                lines.append(f"| {depth} ({sel[0]['tensors']}) | {fmt_values([s['mipin_spearman'] for s in sel])} | "
                             f"{fmt_values([s['cam_spearman'] for s in sel])} |")
        self._examples(os.path.join(out_dir, "mipin_examples.png"))
        return lines + ["", "![MIP-IN, CAM, PMI and occlusion on the repository's example photos]"
                        "(mipin_examples.png)", ""]

    def _examples(self, path) -> None:
        """Maps of the repository's own example photos (never the evaluation photos)."""
        plt = pyplot()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        names = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
        clf = self.classifier
        fig, axes = plt.subplots(len(names), 5, figsize=(12, 2.5 * len(names)))
        for row, name in zip(axes, names):
            image = clf.load_image(os.path.join(root, "examples", name))
            p = clf.predict_images(image[None])[0]
            c = int(np.argmax(p))
            pmi = self.explainer(self.sampler_name, self.K).explain(image, classes=[c], stride=self.stride,
                                                                    samples=self.samples, seed=self.seed)
            panels = {"mipin": self.mipin.batch_maps(image[None], np.array([c]))[1][0],
                      "cam": self.cam.class_maps(clf.normalize(image[None]), [c])[0],
                      f"pmi (K{self.K} S{self.stride} N{self.samples})": pmi.maps["pmi"][0],
                      "occlusion": self.explainer("gray", self.K).explain(
                          image, classes=[c], stride=self.stride, method="occlusion").maps["occlusion"][0]}
            row[0].imshow(image)
            row[0].set_title(f"{clf.labels[c]} p={p[c]:.2f}", fontsize=8)
            for ax, (title, m) in zip(row[1:], panels.items()):
                lim = np.abs(m).max() or 1
                ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
                ax.set_title(title, fontsize=8)
            for ax in row:
                ax.axis("off")
        fig.tight_layout()
        outfiles.save_figure(fig, path)
        plt.close(fig)

