"""Faithfulness of a saved explanation: deletion and insertion curves (Petsiuk et al.'s RISE protocol, DESIGN §7).

Protocol, exactly:
  * pixels are ordered by map value, highest first, with a stable sort (ties keep row-major order);
  * step k of `steps` (k = 0 … steps) replaces the first ceil(k·H·W / steps) pixels, all channels, with the fill —
    deletion starts from the explained image and writes fill pixels, insertion starts from the fill and writes
    the image's pixels back, in the same order;
  * the curve is p(class) at fractions 0, 1/steps, …, 1; AUC is the trapezoid rule over those fractions, in [0, 1];
  * fills: `blur` = cv2.GaussianBlur(image, (11, 11), 5) of the explained image; `black` = 0; `mean` = the image's
    mean colour; `patchsampler` = one PatchSampler in-fill of every K×K tile of the image (stride K, border-aligned
    last row/column), each conditioned on the original image around it, sample 0 of the (seed, tile) stream.
All steps run as batched forwards on the classifier the explanation recorded.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from .classifier import OnnxClassifier
from .engine import patch_grid, streams
from .errors import InfolensError
from .explanation import Explanation
from .samplers import load_sampler

FILLS = ("blur", "black", "mean", "patchsampler")
MODES = ("deletion", "insertion")


def fill_image(image: np.ndarray, fill: str, K: int = 8, seed: int = 0, sampler_model: str | None = None,
               device: str = "cpu") -> np.ndarray:
    """The replacement image for `fill` (one of FILLS): uint8 [H, W, 3], same size as `image`."""
    if fill == "blur":
        return cv2.GaussianBlur(image, (11, 11), 5)
    if fill == "black":
        return np.zeros_like(image)
    if fill == "mean":
        return np.broadcast_to(np.rint(image.mean(axis=(0, 1))).astype(np.uint8), image.shape).copy()
    if fill == "patchsampler":
        sampler = load_sampler("patchsampler", K=K, model=sampler_model, device=device)
        ys, xs = patch_grid(*image.shape[:2], sampler.K, sampler.K)
        tiles = sampler.sample(image, ys, xs, 1, streams(seed, np.arange(len(ys))))[:, 0]
        out = image.copy()
        for y, x, t in zip(ys, xs, tiles):
            out[y:y + sampler.K, x:x + sampler.K] = t
        return out
    raise InfolensError(f"unknown fill {fill!r}: choose one of {', '.join(FILLS)} (--fill)")


def pixel_order(values: np.ndarray) -> np.ndarray:
    """int64 [H·W] flat pixel indices, highest map value first; a stable sort keeps ties in row-major order."""
    return np.argsort(-values.ravel(), kind="stable")


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """int64 [steps + 1]: pixels replaced after step k = ceil(k · n_pixels / steps), exactly (integer arithmetic)."""
    k = np.arange(steps + 1, dtype=np.int64)
    return -(-k * n_pixels // steps)


def curve(classifier: OnnxClassifier, image: np.ndarray, fill: np.ndarray, values: np.ndarray, cls: int,
          steps: int = 100, mode: str = "deletion", batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(fractions float64 [steps + 1], p(cls) float64 [steps + 1]) of a deletion or insertion run."""
    if mode not in MODES:
        raise InfolensError(f"unknown curve {mode!r}: choose deletion or insertion")
    if steps < 1:
        raise InfolensError(f"steps must be ≥ 1, got {steps} (--steps)")
    H, W = values.shape
    order, counts = pixel_order(values), step_counts(H * W, steps)
    start, target = (image, fill) if mode == "deletion" else (fill, image)
    current, source = start.reshape(-1, 3).copy(), target.reshape(-1, 3)
    probs = []
    for b0 in range(0, steps + 1, batch_size):
        batch = []
        for k in range(b0, min(steps + 1, b0 + batch_size)):
            idx = order[counts[k - 1] if k else 0:counts[k]]
            current[idx] = source[idx]
            batch.append(current.reshape(H, W, 3).copy())
        probs.append(classifier.predict_images(np.stack(batch))[:, cls])
    return np.arange(steps + 1) / steps, np.concatenate(probs)


def auc(fractions: np.ndarray, curve_values: np.ndarray) -> float:
    """Area under the curve by the trapezoid rule over the fractions (in [0, 1] for probabilities)."""
    return float(np.trapezoid(curve_values, fractions))


def evaluate(explanation: str | Explanation, mode: str = "deletion", map_name: str = "pmi", cls: int | None = None,
             fill: str = "blur", steps: int = 100, batch_size: int = 64, seed: int = 0,
             sampler_model: str | None = None, device: str | None = None) -> dict:
    """Deletion or insertion AUC of one saved explanation (path to its .npz, or the object), with the classifier
    and preprocessing the explanation recorded.  Returns the JSON-ready record (auc, curve, fractions, …)."""
    t0 = time.perf_counter()
    e = Explanation.load(explanation) if isinstance(explanation, str) else explanation
    top = int(np.argmax(e.probs))
    cls = top if cls is None else int(cls)
    values = e.map_for(map_name, cls)
    clf = OnnxClassifier.from_description(e.model, device)
    if not 0 <= cls < clf.n_classes:
        raise InfolensError(f"class {cls} out of range: the model has {clf.n_classes} classes (--class)")
    K = int(e.params.get("K", 8))
    model = sampler_model or (e.params.get("sampler_model") if e.params.get("sampler") == "patchsampler" else None)
    replacement = fill_image(e.image, fill, K, seed, model, clf.device)
    fractions, values_curve = curve(clf, e.image, replacement, values, cls, steps, mode, batch_size)
    return {"mode": mode, "auc": auc(fractions, values_curve), "curve": values_curve.tolist(),
            "fractions": fractions.tolist(), "fill": fill, "steps": steps, "class": cls,
            "label": clf.labels[cls] if cls < len(clf.labels) else str(cls), "map": map_name,
            "explanation": e.source, "forwards": steps + 1, "seconds": time.perf_counter() - t0}
