"""The CPU perturbation batch: copies of one image as the classifier's input tensor in host memory, into which
in-fills are written (the C++ kernels map pixels through the classifier's preprocessing), run, and put back."""
from __future__ import annotations

import numpy as np

from .. import kernels


class CpuPerturbationBatch:
    """Up to `capacity` rows, each the classifier's input tensor of one image (`base`: [3, H, W] or [H, W, 3] of the
    input dtype, already normalized).  `write` puts K×K uint8 RGB in-fills into rows 0..m−1, `run` classifies those
    rows, `restore` puts the image back where the in-fills went; the rows are reused call after call."""

    def __init__(self, classifier, base: np.ndarray, capacity: int, K: int):
        self.classifier, self.base, self.K = classifier, base, K
        self.rows = np.repeat(base[None], capacity, axis=0)

    def write(self, patches: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
        """patches uint8 [m, K, K, 3] at top-left corners (ys, xs) [m] into rows 0..m−1."""
        clf = self.classifier
        kernels.composite(self.rows, patches, ys, xs, clf.lut, clf.src, clf.nchw)

    def run(self, m: int) -> np.ndarray:
        """float64 [m, Y]: p(Y | row) of rows 0..m−1."""
        return self.classifier.predict(self.rows[:m])

    def restore(self, ys: np.ndarray, xs: np.ndarray) -> None:
        """Rows 0..len(ys)−1 back to the image where `write` put patches."""
        kernels.restore(self.rows, self.base, ys, xs, self.K, self.classifier.nchw)
