"""MIP-IN measured against CAM, PMI/IG, occlusion, a random map and a centre prior (issue #10, deliverable 5).

    python -m infolens.mipin.report --data ../shared/data/imagenet-samples --out docs/mipin [--every 10] [--steps 50]

Photos: those of `--data`/labels.csv whose class index is a multiple of `--every` (100 photos at 10: the list of
docs/faithfulness/imagenet100), evaluated on the classifier's top-1 class.  Per photo:
  * maps of the top-1 class c: mipin (the shipped inverse), cam (Σ_k W[c, k]·A_k of the activation the global pool
    reads, W the final Gemm's weights: gradient-free), pmi and ig (PatchSampler K=16, S=16, N=4), occlusion (gray
    K=16, S=16), random (seeded uniform) and centre (a Gaussian prior at the image centre), all at 224×224;
  * deletion and insertion AUC of p(c) (evaluate.curve, `--steps` steps) with the blur and the black fill;
  * class sensitivity of the class-specific maps (mipin, cam, pmi, occlusion): the review's metric, the L2
    distance between the unit-norm maps of two random classes; the Pearson correlation of the top-1 and top-2 maps;
    class-swap deletion: whether deleting by the map of c lowers p(c) more (smaller deletion AUC, blur) than
    deleting by the map of a random other class;
  * MIP-IN's completeness and minimality (DESIGN §8): the classifier's layers above the map layer fed
    μ_l + S_l^(c) (the class's signal on the mean activation) — is c still the top class? — and fed X_l − S_l^(c)
    — how much does p(c) drop?
Sanity: the classifier's top layers randomized (sanity.randomize: the Gemm; the Gemm and the head conv), the inverse
refitted (`--sanity-crops` crops), maps on `--sanity-photos` photos compared with the original's by Spearman.
Statistics: means with 95 % t intervals; paired differences against MIP-IN with 95 % intervals and Wilcoxon
signed-rank p-values (scipy).  Nothing of the photos is written (no maps of them, no crops): figures of maps use the
repository's own examples/.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

import numpy as np
import onnx
from tqdm import tqdm

from .. import outfiles
from ..catalog import DEFAULT_CLASSIFIER
from ..classifier import OnnxClassifier
from ..evaluate.curves import auc, curve
from ..evaluate.fills import make_fill
from ..evaluate.plots import pyplot
from ..methods import Explainer
from ..methods.cam import CAM
from ..methods.mipin import MIPIN, upsample
from ..samplers import load_sampler
from .part import for_classifier

METHODS = ("mipin", "cam", "pmi", "ig", "occlusion", "random", "centre")
CLASS_MAPS = ("mipin", "cam", "pmi", "occlusion")
FILLS = ("blur", "black")


class Upper:
    """The classifier's layers above the map layer, run on a substituted map-layer tensor."""

    def __init__(self, clf: OnnxClassifier, map_layer: str):
        from ..backends import sessions

        model, part = for_classifier(clf, map_layer)
        model = onnx.shape_inference.infer_shapes(model)  # the extractor types the new input from value_info
        upper = onnx.utils.Extractor(model).extract_model([map_layer], [clf.output.name])
        self.session = sessions.open_session(upper.SerializeToString())
        self.input, self.clf = map_layer, clf

    def probs(self, x: np.ndarray) -> np.ndarray:
        from ..classifier import _to_probs

        raw = self.session.run(None, {self.input: x.astype(np.float32)})[0].astype(np.float64)
        return _to_probs(raw.reshape(len(x), -1), self.clf.output.kind)


def photos(data: str, every: int) -> list[tuple[str, int, str]]:
    with open(os.path.join(data, "labels.csv")) as f:
        rows = list(csv.DictReader(f))
    return [(os.path.join(data, "images", r["file"]), int(r["class_index"]), r["name"]) for r in rows
            if int(r["class_index"]) % every == 0]


def centre_prior(H, W) -> np.ndarray:
    y, x = np.mgrid[:H, :W]
    return np.exp(-(((y - (H - 1) / 2) / (H / 4)) ** 2 + ((x - (W - 1) / 2) / (W / 4)) ** 2) / 2).astype(np.float32)


def unit(m):
    m = m.astype(np.float64).ravel()
    n = np.linalg.norm(m)
    return m / n if n > 0 else m


def evaluate_photo(path, true_cls, clf, mipin, cam, upper, explainer, occl, steps, rng) -> dict:
    image = clf.load_image(path)
    base = clf.normalize(image[None])
    p0, found = clf.predict_with(mipin.session, base, mipin.taps)
    p0 = p0[0]
    order = np.argsort(-p0)
    c, c2 = int(order[0]), int(order[1])
    a, b = (int(v) for v in rng.choice(np.setdiff1d(np.arange(len(p0)), [c, c2]), 2, replace=False))
    classes = [c, c2, a, b]
    small, signal, mean = mipin.inverse_run(found, classes, ("maps", "signal", "map_mean"))
    H, W = image.shape[:2]
    maps = {"mipin": upsample(small, H, W),
            "cam": cam.class_maps(base, classes)}
    e = explainer.explain(image, classes=classes, stride=16, samples=4, seed=0)
    maps["pmi"], ig = e.maps["pmi"], e.maps["ig"]
    maps["occlusion"] = occl.explain(image, classes=classes, stride=16, method="occlusion").maps["occlusion"]
    single = {m: maps[m][0] for m in CLASS_MAPS}
    single.update(ig=ig, random=rng.random((H, W)).astype(np.float32), centre=centre_prior(H, W))
    row = {"image": os.path.basename(path), "true": true_cls, "top1": c, "p_top1": p0[c], "top2": c2,
           "correct": int(c == true_cls), "pmi_forwards": e.forwards}
    fills = {f: make_fill(f, clf) for f in FILLS}
    for m in METHODS:
        for f in FILLS:
            for mode in ("deletion", "insertion"):
                x, y = curve(clf, image, fills[f], single[m], c, steps, mode)
                row[f"{m}_{mode}_{f}"] = auc(x, y)
    for m in CLASS_MAPS:
        row[f"{m}_l2_random_classes"] = float(np.linalg.norm(unit(maps[m][2]) - unit(maps[m][3])))
        row[f"{m}_corr_top1_top2"] = float(np.corrcoef(maps[m][0].ravel(), maps[m][1].ravel())[0, 1])
        x, y = curve(clf, image, fills["blur"], maps[m][2], c, steps, "deletion")  # another class's map
        row[f"{m}_swap_gain"] = auc(x, y) - row[f"{m}_deletion_blur"]  # > 0: the class's own map deletes faster
    x_map = found.get(upper.input)
    if x_map is None:
        x_map = clf.intermediates(base, [upper.input])[upper.input]
    at_mean, keep, drop = upper.probs(np.stack([mean, mean + signal[0], x_map[0] - signal[0]]))
    row.update(mean_p=at_mean[c], complete_keeps_class=int(np.argmax(keep) == c), complete_p=keep[c],
               minimal_p=drop[c], minimal_drop=p0[c] - drop[c])
    return row


def interval(v):
    from scipy import stats

    v = np.asarray(v, np.float64)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
    return v.mean(), v.mean() - half, v.mean() + half


def paired(a, b):
    from scipy import stats

    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mean, low, high = interval(d)
    p = stats.wilcoxon(d).pvalue if np.any(d != 0) else 1.0
    return mean, low, high, p


def sanity(clf, photo_list, files, crops_n, seed, steps_layers=(1, 2)) -> list[dict]:
    """Top layers randomized, the inverse refitted, maps compared by Spearman with the original model's."""
    from scipy import stats

    from ..evaluate.sanity import layers, randomize
    from .fit import fit, random_crops, save

    model = onnx.load(clf.model_path)
    order = layers(model)
    original = MIPIN(clf)
    cam0 = CAM(clf)
    rows = []
    images = [clf.load_image(p) for p, _, _ in photo_list]
    ref = [original.batch_maps(img[None])[1][0] for img in images]
    ref_cam = [cam0.class_maps(clf.normalize(img[None]), [int(np.argmax(clf.predict_images(img[None])[0]))])[0]
               for img in images]
    with tempfile.TemporaryDirectory() as tmp:
        for count in steps_layers:
            names = [n for layer in order[len(order) - count:] for n in layer]
            path = os.path.join(tmp, f"random{count}.onnx")
            onnx.save(randomize(model, names, seed), path)
            rclf = OnnxClassifier.from_card(path, clf.model_path[:-5] + ".json")
            _, part = for_classifier(rclf)
            inv, record = fit(rclf, part, random_crops(rclf, files, crops_n, seed, False), progress=False)
            save(inv, record, rclf, path[:-5] + ".mipin.onnx")
            rm, rcam = MIPIN(rclf), CAM(rclf)
            for img, m0, c0 in zip(images, ref, ref_cam):
                p = rclf.predict_images(img[None])[0]
                cls = int(np.argmax(clf.predict_images(img[None])[0]))  # the original top class
                m1 = rm.batch_maps(img[None], np.array([cls]))[1][0]
                c1 = rcam.class_maps(rclf.normalize(img[None]), [cls])[0]
                rows.append({"layers_randomized": count, "tensors": ",".join(names),
                             "mipin_spearman": stats.spearmanr(m0.ravel(), m1.ravel())[0],
                             "cam_spearman": stats.spearmanr(c0.ravel(), c1.ravel())[0],
                             "random_model_top1": int(np.argmax(p))})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infolens.mipin.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a folder with labels.csv and images/ (imagenet-samples)")
    ap.add_argument("--fit-data", action="append", default=[], help="photos to refit on in the sanity check "
                    "(default: ../shared/data/bsds500 and coco128 beside --data)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--sanity-photos", type=int, default=20)
    ap.add_argument("--sanity-crops", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    outfiles.prepare_dir(args.out)
    clf = OnnxClassifier.from_card(DEFAULT_CLASSIFIER)
    mipin, cam = MIPIN(clf), CAM(clf)
    upper = Upper(clf, mipin.card["map_layer"])
    explainer = Explainer(clf, load_sampler("patchsampler", K=16))
    occl = Explainer(clf, load_sampler("gray", K=16))
    rng = np.random.default_rng(args.seed)
    plist = photos(args.data, args.every)
    rows = []
    for path, true_cls, _ in tqdm(plist, unit="photo", desc="mipin report"):
        rows.append(evaluate_photo(path, true_cls, clf, mipin, cam, upper, explainer, occl, args.steps, rng))
    _write_csv(os.path.join(args.out, "per_image.csv"), rows)
    fit_data = args.fit_data or [os.path.join(os.path.dirname(os.path.abspath(args.data)), d)
                                 for d in ("bsds500", "coco128")]
    from .fit import photo_files

    srows = sanity(clf, plist[:args.sanity_photos], photo_files(fit_data), args.sanity_crops, args.seed)
    _write_csv(os.path.join(args.out, "sanity.csv"), srows)
    _plot(rows, os.path.join(args.out, "auc.png"))
    _examples(clf, mipin, cam, explainer, occl, os.path.join(args.out, "examples.png"))
    _markdown(rows, srows, args, time.perf_counter() - t0, os.path.join(args.out, "README.md"))
    print(open(os.path.join(args.out, "README.md")).read())
    return 0


def _write_csv(path, rows):
    def write(f):
        import io

        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        f.write(text.getvalue().encode())
    outfiles.write_atomic(path, write)


def _plot(rows, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), sharey=False)
    for ax, (mode, fill) in zip(axes, [(m, f) for m in ("deletion", "insertion") for f in FILLS]):
        stats = [interval([r[f"{m}_{mode}_{fill}"] for r in rows]) for m in METHODS]
        ax.bar(range(len(METHODS)), [s[0] for s in stats], yerr=[[s[0] - s[1] for s in stats],
                                                                 [s[2] - s[0] for s in stats]], capsize=3,
               color=["#c0392b" if m == "mipin" else "#7f8c8d" for m in METHODS])
        ax.set_xticks(range(len(METHODS)), METHODS, rotation=45, ha="right")
        ax.set_title(f"{mode} AUC, {fill} fill ({'lower' if mode == 'deletion' else 'higher'} is better)",
                     fontsize=9)
    fig.tight_layout()
    outfiles.save_figure(fig, path)
    plt.close(fig)


def _examples(clf, mipin, cam, explainer, occl, path):
    """Maps of the repository's own example photos (never the evaluation photos)."""
    plt = pyplot()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    names = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
    fig, axes = plt.subplots(len(names), 5, figsize=(12, 2.5 * len(names)))
    for row, name in zip(axes, names):
        image = clf.load_image(os.path.join(root, "examples", name))
        p = clf.predict_images(image[None])[0]
        c = int(np.argmax(p))
        panels = {"image": image, "mipin": mipin.batch_maps(image[None], np.array([c]))[1][0],
                  "cam": cam.class_maps(clf.normalize(image[None]), [c])[0],
                  "pmi (K16 S16 N4)": explainer.explain(image, classes=[c], stride=16, samples=4).maps["pmi"][0],
                  "occlusion": occl.explain(image, classes=[c], stride=16, method="occlusion").maps["occlusion"][0]}
        for ax, (title, m) in zip(row, panels.items()):
            if title == "image":
                ax.imshow(m)
                ax.set_title(f"{clf.labels[c]} p={p[c]:.2f}", fontsize=8)
            else:
                lim = np.abs(m).max() or 1
                ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
                ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    outfiles.save_figure(fig, path)
    plt.close(fig)


def _markdown(rows, srows, args, seconds, path):
    n = len(rows)
    lines = ["# MIP-IN against CAM, PMI/IG, occlusion, a random map and a centre prior", "",
             "Regenerate: `python -m infolens.mipin.report --data ../shared/data/imagenet-samples --out docs/mipin`"
             f" (this run: {seconds / 60:.0f} min on the 2-core development machine).", "",
             f"{n} photos of imagenet-samples (class index a multiple of {args.every}; the list is the `image` column "
             f"of per_image.csv), the shipped EfficientNet-Lite0 (top-1 correct on "
             f"{sum(r['correct'] for r in rows)}), evaluated on its top-1 class; curves of {args.steps} steps. "
             "Means with 95 % t intervals; Δ = method − mipin per photo, with its 95 % interval and the Wilcoxon "
             "signed-rank p-value.", ""]
    for mode in ("deletion", "insertion"):
        for fill in FILLS:
            better = "lower" if mode == "deletion" else "higher"
            lines += [f"## {mode.capitalize()} AUC, {fill} fill ({better} is better)", "",
                      "| method | mean [95 % CI] | Δ vs mipin [95 % CI] | Wilcoxon p |", "|---|---|---|---|"]
            ref = [r[f"mipin_{mode}_{fill}"] for r in rows]
            for m in METHODS:
                v = [r[f"{m}_{mode}_{fill}"] for r in rows]
                mean, lo, hi = interval(v)
                cell = "—" if m == "mipin" else "{:+.4f} [{:+.4f}, {:+.4f}] | {:.2g}".format(*paired(v, ref))
                lines.append(f"| {m} | {mean:.4f} [{lo:.4f}, {hi:.4f}] | {cell} |" if m != "mipin" else
                             f"| {m} | {mean:.4f} [{lo:.4f}, {hi:.4f}] | — | — |")
            lines.append("")
    lines += ["## Class sensitivity", "",
              "| method | L2 of unit maps, two random classes | corr(top-1 map, top-2 map) | class-swap deletion: "
              "own map deletes faster (share of photos) | mean AUC gain of the own map |", "|---|---|---|---|---|"]
    for m in CLASS_MAPS:
        l2 = interval([r[f"{m}_l2_random_classes"] for r in rows])
        cr = interval([r[f"{m}_corr_top1_top2"] for r in rows])
        gain = [r[f"{m}_swap_gain"] for r in rows]
        lines.append(f"| {m} | {l2[0]:.3f} [{l2[1]:.3f}, {l2[2]:.3f}] | {cr[0]:.3f} [{cr[1]:.3f}, {cr[2]:.3f}] | "
                     f"{np.mean(np.asarray(gain) > 0):.2f} | {np.mean(gain):+.4f} |")
    keep = np.mean([r["complete_keeps_class"] for r in rows])
    drop = interval([r["minimal_drop"] for r in rows])
    p0 = np.mean([r["p_top1"] for r in rows])
    lines += ["", "## MIP-IN completeness and minimality (DESIGN §8)", "",
              f"* Completeness: the layers above the map layer fed μ_l + S_l^(c) keep c as the top class on "
              f"**{keep:.0%}** of the photos (mean p(c) {np.mean([r['complete_p'] for r in rows]):.3f}; fed μ_l "
              f"alone, p(c) is {np.mean([r['mean_p'] for r in rows]):.3f}).",
              f"* Minimality: fed X_l − S_l^(c), p(c) drops by {drop[0]:.3f} [{drop[1]:.3f}, {drop[2]:.3f}] on "
              f"average (from a mean p(c) of {p0:.3f} to {np.mean([r['minimal_p'] for r in rows]):.3f}).", "",
              "## Sanity: top layers randomized, inverse refitted", "",
              f"{args.sanity_photos} photos, inverse refitted on {args.sanity_crops} crops; Spearman correlation of "
              "each photo's map (original top-1 class) with the original model's map.", "",
              "| layers randomized (from the top) | mipin Spearman | cam Spearman |", "|---|---|---|"]
    for count in sorted({r["layers_randomized"] for r in srows}):
        sub = [r for r in srows if r["layers_randomized"] == count]
        a = interval([r["mipin_spearman"] for r in sub])
        b = interval([r["cam_spearman"] for r in sub])
        lines.append(f"| {count} ({sub[0]['tensors']}) | {a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}] | "
                     f"{b[0]:.3f} [{b[1]:.3f}, {b[2]:.3f}] |")
    lines += ["", "Figures: `auc.png` (the four AUC tables as bars with their intervals); `examples.png` (maps of "
              "the repository's own example photos: mipin, cam, pmi, occlusion).", ""]
    outfiles.write_atomic(path, lambda f: f.write("\n".join(lines).encode()))


if __name__ == "__main__":
    sys.exit(main())
