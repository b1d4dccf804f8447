"""RISE (Petsiuk et al.): saliency from random masks; no sampler, no patch grid."""
from __future__ import annotations

import time

import cv2
import numpy as np

from .. import params
from ..classifier import OnnxClassifier
from ..progress import Progress
from ..samplers.rng import streams
from .base import Attribution, Plan
from .grid import check_grid


class RISE(Attribution):
    """map "rise" [k, H, W]: E[p(c | masked x) | pixel kept] over N random masks (probability units).

    grid : mask grid s×s.  p_keep : probability of keeping a cell (0 < p ≤ 1).
    """

    name, maps, default_sampler = "rise", ("rise",), None
    settings, plan_names = {"masks": 1000, "seed": 0}, {"masks": "samples"}

    def __init__(self, classifier: OnnxClassifier, batch_size: int = 64, progress: bool = False, grid: int = 7,
                 p_keep: float = 0.5):
        super().__init__(classifier, batch_size, progress)
        self.grid, self.p_keep = params.check("rise_grid", grid), params.check("rise_p", p_keep)

    @classmethod
    def from_explainer(cls, explainer) -> "RISE":
        return cls(explainer.classifier, explainer.batch_size, explainer.progress, explainer.rise_grid,
                   explainer.rise_p)

    def _attribute(self, plan: Plan, progress: Progress):
        samples, seed = plan.samples, plan.seed
        check_grid(1, 1, samples, seed, *plan.img.shape[:2])
        saliency, timing = self.saliency(plan.img, plan.classes, samples, seed, progress)
        run_params = {"N": samples, "grid": self.grid, "p_keep": self.p_keep, "seed": seed,
                      "batch_size": self.batch_size}
        return {"rise": saliency.astype(np.float32)}, {}, run_params, timing

    def saliency(self, image: np.ndarray, classes: np.ndarray, n_masks: int, seed: int, progress=None):
        """RISE (Petsiuk et al.): saliency float64 [k, H, W] = Σ_i p(c | image·M_i) M_i / (N · p_keep) for each of
        the k `classes`, plus timings.

        Mask i: an s×s grid of cells kept with probability p_keep, bilinearly upsampled to cells of
        ceil(H/s) × ceil(W/s) pixels and shifted by a random offset within one cell; the masked image is
        image·M_i (removed pixels go black).  Grid and shift come from the Philox stream (seed, i), so the
        result does not depend on the batch size.  progress: a progress.Progress to count the forwards on.
        """
        grid, p_keep = self.grid, self.p_keep
        H, W = image.shape[:2]
        ch, cw = -(-H // grid), -(-W // grid)
        sal = np.zeros((len(classes), H * W))
        t = {"masks_s": 0.0, "classifier_s": 0.0}
        progress = progress or Progress("rise", False)
        progress.add(n_masks)
        for i0 in range(0, n_masks, self.batch_size):
            t0 = time.perf_counter()
            masks = np.stack([_rise_mask(g, grid, p_keep, H, W, ch, cw) for g in
                              streams(seed, np.arange(i0, min(n_masks, i0 + self.batch_size)))])
            batch = np.rint(image[None] * masks[..., None]).astype(np.uint8)
            t1 = time.perf_counter()
            probs = self.classifier.predict_images(batch)
            t2 = time.perf_counter()
            sal += probs[:, classes].T @ masks.reshape(len(masks), -1)
            t["masks_s"] += (t1 - t0) + (time.perf_counter() - t2)
            t["classifier_s"] += t2 - t1
            progress.update(len(masks))
        return (sal / (n_masks * p_keep)).reshape(len(classes), H, W), t


def _rise_mask(rng: np.random.Generator, grid: int, p_keep: float, H: int, W: int, ch: int, cw: int) -> np.ndarray:
    cells = (rng.random((grid, grid)) < p_keep).astype(np.float32)
    dy, dx = rng.integers(0, ch), rng.integers(0, cw)
    up = cv2.resize(cells, ((grid + 1) * cw, (grid + 1) * ch), interpolation=cv2.INTER_LINEAR)
    return up[dy:dy + H, dx:dx + W]
