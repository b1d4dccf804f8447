"""Replacements without a model: patch mean colour, grey, black, uniform noise, a blurred copy, the context's mean
colour."""
from __future__ import annotations

import cv2
import numpy as np

from . import windows


class HeuristicSampler:
    """Replacements without a model: `mean` (patch mean colour), `gray` (128), `black` (0), `noise` (uniform 0..255),
    `blur` (the patch of cv2.GaussianBlur(image, (11, 11), 5)), `ring-mean` (the mean colour of the visible context:
    the 3K×3K window centred on the patch, the patch itself and whatever lies outside the image left out — it
    carries nothing of the patch, unlike `mean` and `blur`, which keep the patch's low frequencies). All but `noise`
    are deterministic."""

    NAMES = ("mean", "gray", "black", "noise", "blur", "ring-mean")

    def __init__(self, name: str, K: int):
        self.name, self.K = name, K
        self.deterministic = name != "noise"

    def sample(self, image, ys, xs, n, rngs, start=0):
        K, P = self.K, len(ys)
        if self.name == "noise":
            return np.stack([rng.integers(0, 256, (start + n, K, K, 3), dtype=np.uint8)[start:] for rng in rngs])
        if self.name in ("gray", "black"):
            out = np.full((P, 1, K, K, 3), 128 if self.name == "gray" else 0, np.uint8)
        elif self.name == "mean":
            m = np.rint(windows(image, ys, xs, K).mean(axis=(1, 2)))
            out = np.broadcast_to(m.astype(np.uint8)[:, None, None, None, :], (P, 1, K, K, 3))
        elif self.name == "ring-mean":
            out = np.broadcast_to(_ring_mean(image, ys, xs, K)[:, None, None, None, :], (P, 1, K, K, 3))
        else:
            out = windows(cv2.GaussianBlur(image, (11, 11), 5), ys, xs, K)[:, None]
        return np.ascontiguousarray(np.broadcast_to(out, (P, n, K, K, 3)))

    def describe(self):
        return {"sampler": self.name, "K": self.K}


def _ring_mean(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, K: int) -> np.ndarray:
    """uint8 [P, 3]: per patch, the rounded mean colour of the in-image pixels of its 3K×3K window outside the
    patch (integral images: exact sums in float64)."""
    H, W = image.shape[:2]
    total = cv2.integral(image, sdepth=cv2.CV_64F)  # [H + 1, W + 1, 3]

    def box(y0, x0, y1, x1):
        return total[y1, x1] - total[y0, x1] - total[y1, x0] + total[y0, x0]

    y0, x0 = np.maximum(ys - K, 0), np.maximum(xs - K, 0)
    y1, x1 = np.minimum(ys + 2 * K, H), np.minimum(xs + 2 * K, W)
    ring = box(y0, x0, y1, x1) - box(ys, xs, ys + K, xs + K)
    count = ((y1 - y0) * (x1 - x0) - K * K)[:, None]
    return np.rint(ring / np.maximum(count, 1)).astype(np.uint8)
