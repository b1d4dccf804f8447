"""Replacements without a model: patch mean colour, grey, black, uniform noise, a blurred copy."""
from __future__ import annotations

import cv2
import numpy as np

from . import windows


class HeuristicSampler:
    """Replacements without a model: `mean` (patch mean colour), `gray` (128), `black` (0), `noise` (uniform 0..255),
    `blur` (the patch of cv2.GaussianBlur(image, (11, 11), 5)). All but `noise` are deterministic."""

    NAMES = ("mean", "gray", "black", "noise", "blur")

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
        else:
            out = windows(cv2.GaussianBlur(image, (11, 11), 5), ys, xs, K)[:, None]
        return np.ascontiguousarray(np.broadcast_to(out, (P, n, K, K, 3)))

    def describe(self):
        return {"sampler": self.name, "K": self.K}
