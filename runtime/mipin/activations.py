"""The fitting crops' activations that MIP-IN's fit reads (mipin/fit.py): one tapped pass of the classifier over
the crops, every tensor kept memory-mapped on disk (float16 for the large maps, float32 for logits and pooled
vectors; the ReLU patterns and MaxPool indices exact), the crops split into fitting and held-out ones, and each
tensor's mean over the fitting crops, which the inverse is fitted around."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
from tqdm import tqdm

BATCH = 16  # crops per ONNX Runtime call while fitting


class Activations:
    """x: tensor → [N, …] over the crops; masks: ReLU output → uint8 [N, …] (its pattern, exact); shapes: tensor →
    [1, …]; mu: tensor → float32 mean over the fitting crops (not for index tensors); fit_idx, held: the crops'
    indices, sorted.

    classifier : OnnxClassifier.  tapped : its graph with the `wanted` tensors as outputs.  images : uint8
    [N, H, W, 3] in input space.  indices : the wanted tensors that are MaxPool argmax indices (int64).  mask_of :
    the ReLU outputs whose pattern is kept.  holdout : the share of crops held out (seeded by `seed`).  workdir :
    where the memory maps go (default a new temporary folder).
    """

    def __init__(self, classifier, tapped: onnx.ModelProto, wanted: list[str], images: np.ndarray, indices: set,
                 mask_of: set, holdout: float = 0.2, seed: int = 0, progress: bool = True,
                 workdir: str | None = None):
        self.N = len(images)
        order = np.random.default_rng(seed).permutation(self.N)
        n_held = int(round(holdout * self.N))
        self.held, self.fit_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
        self.workdir = workdir or tempfile.mkdtemp(prefix="infolens-mipin-")
        self.shapes: dict[str, list] = {}
        self.x: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}
        session = classifier.placement.open(tapped.SerializeToString())
        bar = tqdm(total=self.N, unit="crop", desc="mipin: activations", disable=not progress, leave=False)
        for i in range(0, self.N, BATCH):
            out = dict(zip(wanted, session.run(wanted, {classifier.feed_name:
                                                        classifier.normalize(images[i:i + BATCH])})))
            for t, v in out.items():
                if t not in self.x:
                    self.shapes[t] = [1, *v.shape[1:]]
                    small = v[0].size <= 4096  # logits and pooled vectors: kept in float32
                    dtype = np.int64 if t in indices else np.float32 if small else np.float16
                    self.x[t] = self._memmap(dtype, v.shape[1:])
                    if t in mask_of:  # the ReLU pattern, exact (not from the float16 copy)
                        self.masks[t] = self._memmap(np.uint8, v.shape[1:])
                self.x[t][i:i + len(v)] = v
                if t in mask_of:
                    self.masks[t][i:i + len(v)] = v > 0
            bar.update(len(images[i:i + BATCH]))
        bar.close()
        self.mu = {t: self._mean(t) for t in self.x if t not in indices}

    def centred(self, t: str, idx) -> np.ndarray:
        """float32 [len(idx), …]: tensor t on the crops idx, minus its mean."""
        return self.x[t][idx].astype(np.float32) - self.mu[t]

    def release(self) -> None:
        """Drops the memory maps, so that their files can be removed."""
        self.x.clear()
        self.masks.clear()

    def _memmap(self, dtype, shape):
        path = os.path.join(self.workdir, f"{len(self.x) + len(self.masks)}.npy")
        return np.lib.format.open_memmap(path, "w+", dtype, (self.N, *shape))

    def _mean(self, t):
        acc = np.zeros(self.x[t].shape[1:])
        for i in range(0, len(self.fit_idx), 64):
            acc += self.x[t][self.fit_idx[i:i + 64]].astype(np.float64).sum(0)
        return (acc / len(self.fit_idx)).astype(np.float32)
