"""`infolens eval suite`: PMI/IG with every sampler and the comparison methods on the same images and classifier,
scored by deletion and insertion AUC (paper Fig. 13), written as a CSV, a Markdown summary and plots."""
from __future__ import annotations

import csv
import os
import sys
import time

import numpy as np

from .engine import Explainer
from .errors import InfolensError
from .evaluate import auc, curve, fill_image, pyplot
from .explanation import MAPS
from .samplers import load_sampler

SAMPLER_DEFAULTS = ("patchsampler", "gaussian", "mean", "noise", "black")
METHOD_DEFAULTS = ("occlusion", "pda", "rise")
METHOD_SAMPLER = {"occlusion": "gray", "pda": "gaussian", "rise": None}
METHOD_MAP = {"occlusion": "occlusion", "pda": "woe", "rise": "rise"}
FIELDS = ("image", "label", "map", "sampler", "deletion_auc", "insertion_auc", "explain_forwards", "explain_seconds",
          "eval_forwards", "eval_seconds")


def run_suite(classifier, images, out_dir, samplers=SAMPLER_DEFAULTS, methods=METHOD_DEFAULTS, K=16, stride=16,
              samples=8, rise_masks=1000, fill="blur", steps=100, seed=0, batch_size=64, progress=True,
              command="", coupling="pixel"):
    """Explain every image with every sampler (PMI and IG maps) and every comparison method, score each map's
    top-class deletion and insertion AUC, and write suite.csv, summary.md and the plots into out_dir.
    Returns the rows (dicts with FIELDS).  Images that fail are reported on stderr and skipped."""
    os.makedirs(out_dir, exist_ok=True)
    runs = [("pmi", s) for s in samplers] + [(m, METHOD_SAMPLER[m]) for m in methods]
    sampler_cache = {}
    rows, curves, example_maps, example_image = [], {}, {}, None
    for path in images:
        try:
            for method, sampler_name in runs:
                if sampler_name and sampler_name not in sampler_cache:
                    sampler_cache[sampler_name] = load_sampler(sampler_name, K=K, device=classifier.device,
                                                               coupling=coupling)
                ex = Explainer(classifier, sampler_cache.get(sampler_name), batch_size=batch_size,
                               progress=progress)
                n = rise_masks if method == "rise" else samples
                e = ex.explain(path, classes="top1", stride=stride, samples=n, seed=seed, method=method)
                top = int(e.classes[0])
                replacement = fill_image(e.image, fill)
                names = ["pmi", "ig"] if method == "pmi" else [METHOD_MAP[method]]
                for name in names:
                    t0 = time.perf_counter()
                    values = e.map_for(name, top)
                    fr, dele = curve(classifier, e.image, replacement, values, top, steps, "deletion", batch_size)
                    _, ins = curve(classifier, e.image, replacement, values, top, steps, "insertion", batch_size)
                    label = sampler_name or "-"
                    rows.append({"image": os.path.basename(path), "label": e.labels[0], "map": name,
                                 "sampler": label, "deletion_auc": auc(fr, dele), "insertion_auc": auc(fr, ins),
                                 "explain_forwards": e.forwards, "explain_seconds": e.timing["total_s"],
                                 "eval_forwards": 2 * (steps + 1), "eval_seconds": time.perf_counter() - t0})
                    curves.setdefault((name, label), []).append(dele)
                    if path == images[0]:
                        example_maps[f"{name} / {label}"] = (values, MAPS[name][1])
                        example_image = e.image
        except InfolensError as err:
            print(f"infolens: error: {path}: {err}", file=sys.stderr)
    if not rows:
        raise InfolensError("no image could be evaluated")
    _write_csv(rows, os.path.join(out_dir, "suite.csv"))
    _write_summary(rows, os.path.join(out_dir, "summary.md"), dict(K=K, S=stride, N=samples, rise_masks=rise_masks,
                   fill=fill, steps=steps, seed=seed, batch_size=batch_size, coupling=coupling,
                   model=os.path.basename(classifier.model_path)), command)
    _plot_curves(curves, steps, fill, os.path.join(out_dir, "deletion_curves.png"))
    _plot_bars(rows, fill, os.path.join(out_dir, "deletion_auc.png"))
    if example_image is not None:
        _plot_example(images[0], example_image, example_maps, os.path.join(out_dir, "example_maps.png"))
    return rows


def _groups(rows):
    keys = []
    for r in rows:
        if (r["map"], r["sampler"]) not in keys:
            keys.append((r["map"], r["sampler"]))
    return keys


def _mean_se(v):
    v = np.asarray(v, float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def _write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})


def _write_summary(rows, path, settings, command):
    images = sorted({r["image"] for r in rows})
    lines = ["# Faithfulness suite", "", f"Command: `{command}`" if command else "", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), "",
             f"Images ({len(images)}): " + ", ".join(images), "",
             "Deletion AUC: lower is better (the map finds what the class needs first); insertion AUC: higher is "
             "better. Both track the probability of each image's top class; removed pixels are replaced by the "
             f"`{settings['fill']}` fill. Mean ± standard error over images.", "",
             "| map | sampler | deletion AUC | insertion AUC | explain forwards / image | explain s / image |",
             "|---|---|---|---|---|---|"]
    for name, sampler in _groups(rows):
        sel = [r for r in rows if r["map"] == name and r["sampler"] == sampler]
        d, i = _mean_se([r["deletion_auc"] for r in sel]), _mean_se([r["insertion_auc"] for r in sel])
        fw = np.mean([r["explain_forwards"] for r in sel])
        sec = np.mean([r["explain_seconds"] for r in sel])
        lines.append(f"| {name} | {sampler} | {d[0]:.4f} ± {d[1]:.4f} | {i[0]:.4f} ± {i[1]:.4f} | {fw:.0f} | "
                     f"{sec:.1f} |")
    total_f = sum(r["eval_forwards"] for r in rows) + sum(
        r["explain_forwards"] for r in rows if r["map"] != "ig")  # pmi and ig share one explanation
    total_s = sum(r["eval_seconds"] for r in rows) + sum(r["explain_seconds"] for r in rows if r["map"] != "ig")
    lines += ["", f"Total: {total_f} classifier forwards, {total_s:.0f} s (explanations and curves; pmi and ig come "
              "from one explanation).", "", "Per image and map: `suite.csv`. Plots: `deletion_auc.png`, "
              "`deletion_curves.png`, `example_maps.png`.", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _plot_curves(curves, steps, fill, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    fr = np.arange(steps + 1) / steps
    for (name, sampler), cs in curves.items():
        ax.plot(fr, np.mean(cs, axis=0), lw=1.4, ls="-" if name == "pmi" else ("--" if name == "ig" else ":"),
                label=f"{name} / {sampler}")
    ax.set_xlabel("fraction of pixels removed (highest attribution first)")
    ax.set_ylabel("p(top class), mean over images")
    ax.set_title(f"deletion curves, fill {fill}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_bars(rows, fill, path):
    plt = pyplot()
    keys = _groups(rows)
    stats = [_mean_se([r["deletion_auc"] for r in rows if (r["map"], r["sampler"]) == k]) for k in keys]
    fig, ax = plt.subplots(figsize=(7.2, 3.8), dpi=120)
    colours = {"pmi": "tab:red", "ig": "tab:blue"}
    ax.bar(range(len(keys)), [s[0] for s in stats], yerr=[0 if np.isnan(s[1]) else s[1] for s in stats],
           color=[colours.get(k[0], "tab:gray") for k in keys], capsize=3)
    ax.set_xticks(range(len(keys)), [f"{m}\n{s}" for m, s in keys], fontsize=7)
    ax.set_ylabel("deletion AUC (lower is better)")
    ax.set_title(f"deletion AUC by map and sampler (fill {fill}; mean ± s.e.)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_example(src, image, maps, path):
    plt = pyplot()
    n = len(maps) + 1
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), dpi=110, squeeze=False)
    axes = axes.ravel()
    axes[0].imshow(image)
    axes[0].set_title(os.path.basename(src), fontsize=8)
    for ax, (title, (values, kind)) in zip(axes[1:], maps.items()):
        if kind == "diverging":
            v = float(np.abs(values).max()) or 1e-12
            ax.imshow(values, cmap="bwr", vmin=-v, vmax=v)
        else:
            ax.imshow(values, cmap="inferno")
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
