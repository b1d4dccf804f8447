"""`infolens eval suite`: PMI/IG with every sampler and the comparison methods on the same images and classifier,
scored by deletion and insertion AUC (paper Fig. 13), written as a CSV, a Markdown summary and plots."""
from __future__ import annotations

import csv
import os
import sys
import textwrap
import time

import numpy as np

from .. import outfiles, params
from ..methods import METHODS, Explainer
from ..errors import InfolensError
from .curves import auc, curve
from .fills import make_fill
from .plots import pyplot
from ..explanation import MAPS
from ..samplers import SAMPLERS, load_sampler

SAMPLER_DEFAULTS = ("patchsampler", "gaussian", "mean", "noise", "black")
METHOD_DEFAULTS = ("occlusion", "pda", "rise")  # comparison methods (methods.METHODS: their maps and samplers)
FIELDS = ("image", "label", "map", "sampler", "deletion_auc", "insertion_auc", "explain_forwards", "explain_seconds",
          "eval_forwards", "eval_seconds", "deletion_curve")
FLOAT_FIELDS = ("deletion_auc", "insertion_auc", "explain_seconds", "eval_seconds")
INT_FIELDS = ("explain_forwards", "eval_forwards")


def parse_sampler(spec: str) -> tuple[str, str, str | None]:
    """A --samplers entry, `NAME` or `NAME=MODEL` (a model file for that sampler, e.g. another PatchSampler), as
    (label, sampler name, model path or None); the label of `NAME=MODEL` is the model file's stem."""
    name, _, model = spec.partition("=")
    if name not in SAMPLERS:
        raise InfolensError(f"unknown sampler {name!r}: choose from {', '.join(SAMPLERS)} "
                            "(optionally NAME=MODEL_FILE)", "samplers")
    if model and not os.path.isfile(model):
        raise InfolensError(f"sampler model not found: {model} (in {spec})", "samplers")
    return (os.path.splitext(os.path.basename(model))[0] if model else name), name, model or None


def run_suite(classifier, images, out_dir, samplers=SAMPLER_DEFAULTS, methods=METHOD_DEFAULTS, K=16, stride=16,
              samples=8, rise_masks=1000, fill="blur", steps=100, seed=0, batch_size=64, progress=True,
              command="", coupling="pixel", maps=("pmi", "ig"), resume=False, fill_draws=4):
    """Explain every image with every sampler (PMI and IG maps; `maps` says which are scored) and every comparison
    method, score each map's top-class deletion and insertion AUC, and write suite.csv, summary.md and the plots
    into out_dir. samplers: --samplers entries (parse_sampler). Returns the rows (dicts with FIELDS).

    suite.csv grows by one image at a time, so a long run that stops keeps what it finished; with `resume`, the
    runs (image × sampler or method) that already have their rows there are not run again, so a resumed call may
    also add samplers to an earlier report (an existing suite.csv is otherwise refused, so no report is overwritten
    by accident). The summary covers every row of suite.csv; its groups come in this call's order, and the first
    (PMI with the first sampler) is the reference of the paired differences. Images that fail are reported on
    stderr and skipped.
    """
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "suite.csv")
    specs = [parse_sampler(s) for s in samplers]
    runs = [("pmi", label, name, model) for label, name, model in specs]
    runs += [(m, METHODS[m].default_sampler or "-", METHODS[m].default_sampler, None) for m in methods]
    rows = _read_csv(csv_path) if os.path.exists(csv_path) else []
    if rows and not resume:
        raise InfolensError(f"{csv_path} exists: resume it, or choose another output folder", "resume")
    if not rows:
        _write_csv([], csv_path)
    have = {(r["image"], r["map"], r["sampler"]) for r in rows}
    order = [(m, label) for method, label, *_ in runs for m in _maps(method, maps)]
    sampler_cache = {}
    example_maps, example_image = {}, None
    for path in images:
        todo = [run for run in runs if any((os.path.basename(path), m, run[1]) not in have
                                           for m in _maps(run[0], maps))]
        new = []
        try:
            for method, label, sampler_name, model in todo:
                if sampler_name and label not in sampler_cache:
                    sampler_cache[label] = load_sampler(sampler_name, K=K, model=model, device=classifier.placement,
                                                        coupling=coupling)
                ex = Explainer(classifier, sampler_cache.get(label), batch_size=batch_size, progress=progress)
                n = rise_masks if method == "rise" else samples
                e = ex.explain(path, classes="top1", stride=stride, samples=n, seed=seed, method=method)
                top = int(e.classes[0])
                replacement = make_fill(fill, classifier, K, sampler_cache.get("patchsampler"), draws=fill_draws,
                                        seed=seed)
                for name in _maps(method, maps):
                    t0 = time.perf_counter()
                    values = e.map_for(name, top)
                    fr, dele = curve(classifier, e.image, replacement, values, top, steps, "deletion", batch_size)
                    _, ins = curve(classifier, e.image, replacement, values, top, steps, "insertion", batch_size)
                    new.append({"image": os.path.basename(path), "label": e.labels[0], "map": name,
                                "sampler": label, "deletion_auc": auc(fr, dele), "insertion_auc": auc(fr, ins),
                                "explain_forwards": e.forwards, "explain_seconds": e.timing["total_s"],
                                "eval_forwards": 2 * (steps + 1) * replacement.draws,
                                "eval_seconds": time.perf_counter() - t0,
                                "deletion_curve": dele})
                    if example_image is None or path == example_image[0]:
                        example_maps[f"{name} / {label}"] = (values, MAPS[name][1])
                        example_image = (path, e.image)
        except InfolensError as err:
            print(f"infolens: error: {path}: {params.with_flag(err)}", file=sys.stderr)
            continue
        rows += new
        _write_csv(new, csv_path, append=True)
    if not rows:
        raise InfolensError("no image could be evaluated")
    rows.sort(key=lambda r: order.index((r["map"], r["sampler"])) if (r["map"], r["sampler"]) in order else len(order))
    _write_summary(rows, os.path.join(out_dir, "summary.md"), dict(K=K, S=stride, N=samples, rise_masks=rise_masks,
                   fill=fill, steps=steps, seed=seed, batch_size=batch_size, coupling=coupling,
                   model=os.path.basename(classifier.model_path)), command)
    curves = {}
    for r in rows:
        curves.setdefault((r["map"], r["sampler"]), []).append(r["deletion_curve"])
    _plot_curves(curves, steps, fill, os.path.join(out_dir, "deletion_curves.png"))
    _plot_bars(rows, fill, os.path.join(out_dir, "deletion_auc.png"))
    if example_image is not None:
        _plot_example(*example_image, example_maps, os.path.join(out_dir, "example_maps.png"))
    return rows


def _maps(method, maps):
    """The maps a run scores: the chosen ones of pmi/ig for a sampler run, a method's own map otherwise."""
    return [m for m in ("pmi", "ig") if m in maps] if method == "pmi" else list(METHODS[method].maps)


def _groups(rows):
    keys = []
    for r in rows:
        if (r["map"], r["sampler"]) not in keys:
            keys.append((r["map"], r["sampler"]))
    return keys


def _mean_se(v):
    v = np.asarray(v, float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def _write_csv(rows, path, append=False):
    with open(path, "a" if append else "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if not append:
            w.writeheader()
        for r in rows:
            out = {k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()}
            out["deletion_curve"] = " ".join(f"{v:.6f}" for v in r["deletion_curve"])
            w.writerow(out)


def _read_csv(path):
    """The rows of an earlier suite.csv, typed as run_suite makes them."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if set(FIELDS) - set(r):
                raise InfolensError(f"{path} is not a suite.csv of this version: choose another output folder",
                                    "out")
            r.update({k: float(r[k]) for k in FLOAT_FIELDS})
            r.update({k: int(r[k]) for k in INT_FIELDS})
            r["deletion_curve"] = np.array([float(v) for v in r["deletion_curve"].split()])
            rows.append(r)
    return rows


def paired_differences(rows, metric="deletion_auc"):
    """Per (map, sampler) group: the mean over images of its `metric` minus that of the first group (the
    reference) on the same image, with a 95 % t confidence interval (scipy.stats.ttest_rel), and the number of
    images in which both appear. {group: (mean, low, high, n)}; the reference itself is left out."""
    from scipy import stats

    keys = _groups(rows)
    value = {(r["map"], r["sampler"], r["image"]): r[metric] for r in rows}
    images = sorted({r["image"] for r in rows})
    out = {}
    for key in keys[1:]:
        common = [i for i in images if (*keys[0], i) in value and (*key, i) in value]
        a = np.array([value[(*key, i)] for i in common])
        b = np.array([value[(*keys[0], i)] for i in common])
        if len(common) < 2:
            out[key] = (float(np.mean(a - b)) if common else float("nan"), float("nan"), float("nan"), len(common))
            continue
        ci = stats.ttest_rel(a, b).confidence_interval(0.95)
        out[key] = (float(np.mean(a - b)), float(ci.low), float(ci.high), len(common))
    return out


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
    reference = _groups(rows)[0]
    for metric, better in (("deletion_auc", "negative: the group's map finds what the class needs sooner"),
                           ("insertion_auc", "positive: the group's map restores the class sooner")):
        lines += ["", f"Paired differences in {metric.replace('_', ' ')}, each group minus {reference[0]} / "
                  f"{reference[1]} on the same images, mean and 95 % confidence interval (t, paired); {better}.", "",
                  "| map | sampler | difference | 95 % CI | images |", "|---|---|---|---|---|"]
        for (name, sampler), (mean, low, high, n) in paired_differences(rows, metric).items():
            mark = " *" if low > 0 or high < 0 else ""
            lines.append(f"| {name} | {sampler} | {mean:+.4f}{mark} | [{low:+.4f}, {high:+.4f}] | {n} |")
    lines += ["", "* the interval excludes 0."]
    total_f = sum(r["eval_forwards"] for r in rows) + sum(
        r["explain_forwards"] for r in rows if r["map"] != "ig")  # pmi and ig share one explanation
    total_s = sum(r["eval_seconds"] for r in rows) + sum(r["explain_seconds"] for r in rows if r["map"] != "ig")
    lines += ["", f"Total: {total_f} classifier forwards, {total_s:.0f} s (explanations and curves; pmi and ig come "
              "from one explanation).", "", "Per image and map: `suite.csv`. Plots: `deletion_auc.png`, "
              "`deletion_curves.png`, `example_maps.png`.", ""]
    outfiles.write_atomic(path, lambda f: f.write("\n".join(lines).encode()))


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
    outfiles.save_figure(fig, path)
    plt.close(fig)


def _plot_bars(rows, fill, path):
    plt = pyplot()
    keys = _groups(rows)
    stats = [_mean_se([r["deletion_auc"] for r in rows if (r["map"], r["sampler"]) == k]) for k in keys]
    fig, ax = plt.subplots(figsize=(7.2, 3.8), dpi=120)
    colours = {"pmi": "tab:red", "ig": "tab:blue"}
    ax.bar(range(len(keys)), [s[0] for s in stats], yerr=[0 if np.isnan(s[1]) else s[1] for s in stats],
           color=[colours.get(k[0], "tab:gray") for k in keys], capsize=3)
    # long sampler labels (model file stems) wrap instead of running into their neighbours
    ax.set_xticks(range(len(keys)), [f"{m}\n{textwrap.fill(s, 14)}" for m, s in keys], fontsize=7)
    ax.set_ylabel("deletion AUC (lower is better)")
    ax.set_title(f"deletion AUC by map and sampler (fill {fill}; mean ± s.e.)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    outfiles.save_figure(fig, path)
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
    outfiles.save_figure(fig, path)
    plt.close(fig)
