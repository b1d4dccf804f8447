"""Faithfulness of a saved explanation: removal curves in both orders (DESIGN §7).

Protocol, exactly:
  * pixels are ordered by map value, highest first, with a stable sort (ties keep row-major order);
  * deletion (most relevant first, MoRF): step k of `steps` (k = 0 … steps) removes the first ceil(k·H·W / steps)
    pixels of that order; insertion keeps the first ceil(k·H·W / steps) pixels and removes all the others, so read
    from its end it is least-relevant-first removal (LeRF) and has the same area;
  * removed pixels become the fill (fills.py: blur, black, mean, road, patchsampler; all channels); a fill with
    several draws (patchsampler) gives the mean p(class) over them;
  * the curve is p(class) at fractions 0, 1/steps, …, 1; AUC is the trapezoid rule over those fractions, in [0, 1];
    SRG = AUC(insertion) − AUC(deletion) = AUC(LeRF) − AUC(MoRF) (Blücher et al.): higher is better.
All steps run as batched forwards on the classifier the explanation recorded.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .. import outfiles
from ..catalog import find_model
from ..classifier import OnnxClassifier
from ..errors import InfolensError
from ..explanation import Explanation
from .fills import Fill, make_fill
from .plots import pyplot

MODES = ("deletion", "insertion")
DEFAULT_K = 16  # the PatchSampler fill's tile for a map made without patches (the CLI's default K)


def pixel_order(values: np.ndarray) -> np.ndarray:
    """int64 [H·W] flat pixel indices, highest map value first; a stable sort keeps ties in row-major order."""
    return np.argsort(-values.ravel(), kind="stable")


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """int64 [steps + 1]: pixels replaced after step k = ceil(k · n_pixels / steps), exactly (integer arithmetic)."""
    k = np.arange(steps + 1, dtype=np.int64)
    return -(-k * n_pixels // steps)


def curve(classifier: OnnxClassifier, image: np.ndarray, fill: Fill, values: np.ndarray, cls: int,
          steps: int = 100, mode: str = "deletion", batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(fractions float64 [steps + 1], p(cls) float64 [steps + 1]) of a deletion or insertion run."""
    _check_steps(steps)
    H, W = values.shape
    probs = removal_probs(classifier, image, fill, pixel_order(values), step_counts(H * W, steps), mode, batch_size)
    return np.arange(steps + 1) / steps, probs[:, cls]


def removal_probs(classifier: OnnxClassifier, image: np.ndarray, fill: Fill, order: np.ndarray, counts: np.ndarray,
                  mode: str = "deletion", batch_size: int = 64) -> np.ndarray:
    """p(Y) float64 [len(counts), Y], the mean over the fill's draws, of `image` (uint8 [H, W, 3]) with, per k, the
    first counts[k] pixels of `order` removed (deletion) or all but those removed (insertion)."""
    if mode not in MODES:
        raise InfolensError(f"unknown curve {mode!r}: choose deletion or insertion")
    if fill.static:
        total = 0.0
        for rep in fill.replacements(image):
            start, target = (image, rep) if mode == "deletion" else (rep, image)
            total = total + replace_progressively(classifier, start, target, order, counts, batch_size)
        return total / fill.draws
    H, W = image.shape[:2]
    rank = np.empty(H * W, np.int64)
    rank[order] = np.arange(H * W)
    probs = []
    for b0 in range(0, len(counts), batch_size):
        first = rank[None] < counts[b0:b0 + batch_size, None]  # [m, H·W]: the first counts[k] pixels of the order
        removed = (first if mode == "deletion" else ~first).reshape(-1, H, W)
        images = fill.images(image, removed)  # [D, m, H, W, 3]
        probs.append(np.mean([classifier.predict_images(d) for d in images], axis=0))
    return np.concatenate(probs)


def replace_progressively(classifier: OnnxClassifier, start: np.ndarray, target: np.ndarray, order: np.ndarray,
                          counts: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """p(Y) float64 [len(counts), Y] of `start` with its first counts[k] pixels of `order` taken from `target`
    (all channels), for each k — one image per step, classified in batches."""
    H, W = start.shape[:2]
    current, source = start.reshape(-1, 3).copy(), target.reshape(-1, 3)
    probs, done = [], 0
    for b0 in range(0, len(counts), batch_size):
        batch = []
        for n in counts[b0:b0 + batch_size]:
            idx = order[done:n]
            current[idx] = source[idx]
            done = n
            batch.append(current.reshape(H, W, 3).copy())
        probs.append(classifier.predict_images(np.stack(batch)))
    return np.concatenate(probs)


def _check_steps(steps):
    if steps < 1:
        raise InfolensError(f"steps must be ≥ 1, got {steps}", "steps")


def _recorded(explanation: str | Explanation) -> tuple[Explanation, str | None]:
    """The explanation, and the folder it was read from (None for an object): its models may be beside it."""
    if isinstance(explanation, Explanation):
        return explanation, None
    return Explanation.load(explanation), os.path.dirname(os.path.abspath(explanation))


def _classifier(e: Explanation, near: str | None, model: str | None, device: str | None) -> OnnxClassifier:
    """The classifier the explanation recorded: `model` if given, else found by its path or sha256 (catalog)."""
    path = model or find_model(e.model["model"], e.model.get("sha256"), "classifier", "model", near)
    return OnnxClassifier.from_description(e.model, device, path)


def fill_for(e: Explanation, near: str | None, fill: str, classifier: OnnxClassifier, seed: int = 0,
             sampler_model: str | None = None, draws: int = 4) -> Fill:
    """The fill for an explanation: a PatchSampler fill at the explanation's K (DEFAULT_K for a map made without
    patches), with the explanation's own PatchSampler when it had one."""
    K = int(e.params.get("K") or DEFAULT_K)
    if fill == "patchsampler" and sampler_model is None and e.params.get("sampler") == "patchsampler":
        sampler_model = find_model(e.params["sampler_model"], e.params.get("sampler_sha256"), "PatchSampler",
                                   "sampler_model", near)
    return make_fill(fill, classifier, K, sampler_model=sampler_model, draws=draws, seed=seed)


def auc(fractions: np.ndarray, curve_values: np.ndarray) -> float:
    """Area under the curve by the trapezoid rule over the fractions (in [0, 1] for probabilities)."""
    y, x = np.asarray(curve_values, np.float64), np.asarray(fractions, np.float64)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)  # np.trapezoid is numpy ≥ 2 only; we declare ≥ 1.24


def evaluate(explanation: str | Explanation, mode: str = "deletion", map_name: str = "pmi", cls: int | None = None,
             fill: str = "blur", steps: int = 100, batch_size: int = 64, seed: int = 0,
             sampler_model: str | None = None, device: str | None = None, model: str | None = None,
             draws: int = 4) -> dict:
    """Deletion or insertion AUC of one saved explanation (path to its .npz, or the object), with the classifier
    and preprocessing the explanation recorded (`model`: that classifier's file, when it is not where the
    explanation says nor beside it nor shipped; draws: the PatchSampler fill's).  Returns the JSON-ready record (auc, curve, fractions, …)."""
    t0 = time.perf_counter()
    e, near = _recorded(explanation)
    top = int(np.argmax(e.probs))
    cls = top if cls is None else int(cls)
    values = e.map_for(map_name, cls)
    clf = _classifier(e, near, model, device)
    if not 0 <= cls < clf.n_classes:
        raise InfolensError(f"class {cls} out of range: the model has {clf.n_classes} classes", "cls")
    filler = fill_for(e, near, fill, clf, seed, sampler_model, draws)
    fractions, values_curve = curve(clf, e.image, filler, values, cls, steps, mode, batch_size)
    return {"mode": mode, "auc": auc(fractions, values_curve), "curve": values_curve.tolist(),
            "fractions": fractions.tolist(), "fill": fill, "fill_settings": filler.describe(), "steps": steps,
            "class": cls,
            "label": clf.labels[cls] if cls < len(clf.labels) else str(cls), "map": map_name,
            "explanation": explanation if isinstance(explanation, str) else e.source,
            "forwards": (steps + 1) * filler.draws, "seconds": time.perf_counter() - t0}


def negative_evidence(explanation: str | Explanation, steps: int = 20, fill: str = "patchsampler", seed: int = 0,
                      batch_size: int = 64, sampler_model: str | None = None, device: str | None = None,
                      model: str | None = None, draws: int = 4) -> dict:
    """Paper Fig. 10: remove the pixels with negative PMI for the top class, most negative first, in `steps` steps
    (step k removes ceil(k·n_neg/steps) of the n_neg negative pixels; positive ones are never touched), replaced by
    `fill` (default: PatchSampler in-fill).  Records p(top class) and the top-1 class and probability of each image;
    if the map is right, p(top class) rises.  Returns the JSON-ready record."""
    t0 = time.perf_counter()
    _check_steps(steps)
    e, near = _recorded(explanation)
    top = int(np.argmax(e.probs))
    values = e.map_for("pmi", top)
    n_neg = int((values < 0).sum())
    clf = _classifier(e, near, model, device)
    filler = fill_for(e, near, fill, clf, seed, sampler_model, draws)
    counts = step_counts(n_neg, steps)
    probs = removal_probs(clf, e.image, filler, pixel_order(-values), counts, "deletion", batch_size)
    return {"curve": probs[:, top].tolist(), "fractions": (counts / values.size).tolist(),
            "top1_class": probs.argmax(1).tolist(), "top1_prob": probs.max(1).tolist(), "class": top,
            "label": clf.labels[top], "fill": fill, "steps": steps, "negative_pixels": n_neg, "map": "pmi",
            "explanation": explanation if isinstance(explanation, str) else e.source,
            "forwards": len(counts) * filler.draws, "seconds": time.perf_counter() - t0}


def plot_negative(record: dict, path: str) -> None:
    """p(top class) against the fraction of the image removed (matplotlib PNG)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    ax.plot(record["fractions"], record["curve"], marker="o", ms=3, label=f"p({record['label']})")
    ax.plot(record["fractions"], record["top1_prob"], ls="--", lw=1, label="top-1 probability")
    ax.set_xlabel("fraction of the image removed (most negative PMI first)")
    ax.set_ylabel("probability")
    ax.set_title(f"negative evidence, fill {record['fill']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    outfiles.save_figure(fig, path)
    plt.close(fig)
