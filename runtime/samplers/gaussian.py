"""Prediction Difference Analysis's sampler (Zintgraf et al.): a conditional Gaussian of the patch given its ring."""
from __future__ import annotations

import hashlib
import os
import threading
from typing import Sequence

import numpy as np

from ..catalog import file_sha256
from ..errors import InfolensError
from . import pad, windows


class GaussianSampler:
    """Prediction Difference Analysis (Zintgraf et al.): a multivariate Gaussian over the (K+2l)² window,
    sampled for the K×K patch conditioned on the surrounding ring of width l, clipped to 0..255.  At the image's
    border the ring is cut off: the patch is conditioned on the ring pixels inside the image only (the Gaussian's
    marginal over them), never on padding the fit never saw.

    Parameters come from a fit on natural images (`fit`, saved as .npz) — or, when none was shipped for this K,
    from the windows of the image being explained (recorded in `describe()` as fitted_on).  Sampling changes no
    state: the conditionings are cached by what they depend on only (the fit, the cut-off ring, the image for an
    own fit), so one sampler can serve several threads.
    """

    name = "gaussian"
    deterministic = False

    def __init__(self, K: int, mean: np.ndarray | None = None, cov: np.ndarray | None = None, l: int = 2,
                 fitted_on: str = ""):
        self.K, self.l = K, l
        self.fitted_on = fitted_on if mean is not None else "the explained image (no shipped fit for this K)"
        self.model_path = None  # the .npz it was loaded from
        self._fit = None if mean is None else (np.asarray(mean, np.float64), np.asarray(cov, np.float64))
        # (own fit's image digest or None, cut) → conditioning, and digest → own fit: caches keyed by all their
        # results depend on, so which thread or image filled them first never changes a draw
        self._conditionings: dict = {}
        self._own_fits: dict = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str) -> "GaussianSampler":
        with np.load(path) as z:
            sampler = cls(int(z["K"]), z["mean"], z["cov"], int(z["l"]), str(z["fitted_on"]))
        sampler.model_path = path
        sampler.sha256 = file_sha256(path)  # the bytes loaded: a file replaced later must not change the record
        return sampler

    @staticmethod
    def fit_windows(images: Sequence[np.ndarray], K: int, l: int = 2, stride: int = 4):
        """Mean [D] and covariance [D, D] (float64) of all (K+2l)² RGB windows (flattened H, W, C) at `stride`.

        Accumulates Σx and Σxxᵀ a band of window rows at a time, so memory stays O(D²) for any image count.
        """
        w = K + 2 * l
        D = w * w * 3
        n, s1, s2 = 0, np.zeros(D), np.zeros((D, D))
        for im in images:
            view = np.lib.stride_tricks.sliding_window_view(im, (w, w), axis=(0, 1))[::stride, ::stride]
            for band in range(0, view.shape[0], 16):
                x = view[band:band + 16].transpose(0, 1, 3, 4, 2).reshape(-1, D).astype(np.float64)
                n, s1, s2 = n + len(x), s1 + x.sum(0), s2 + x.T @ x
        if n < 2:
            raise InfolensError(f"too few {w}x{w} windows to fit a Gaussian")
        mean = s1 / n
        return mean, (s2 - n * np.outer(mean, mean)) / (n - 1)

    def save(self, path: str, mean, cov):
        np.savez_compressed(path, K=self.K, l=self.l, mean=mean.astype(np.float32), cov=cov.astype(np.float32),
                            fitted_on=self.fitted_on)

    def _conditioning(self, image, cut: tuple[int, int, int, int]) -> dict:
        """The patch's Gaussian given the ring pixels left when `cut` = (top, bottom, left, right) rows/columns of
        the window lie outside the image (cached)."""
        digest = None
        if self._fit is None:
            if image is None:
                raise InfolensError("GaussianSampler.conditional needs a fitted sampler (GaussianSampler.load) "
                                    "or the image to fit on")
            digest = hashlib.sha256(np.ascontiguousarray(image)).hexdigest() + str(image.shape)
        key = (digest, cut)
        with self._lock:
            c = self._conditionings.get(key)
        if c is None:
            c = self._condition(*(self._fit or self._own_fit(image, digest)), cut)
            with self._lock:
                if len(self._conditionings) >= 256:  # own fits of many images: keep memory bounded
                    self._conditionings.clear()
                self._conditionings[key] = c
        return c

    def _own_fit(self, image, digest):
        with self._lock:
            fit = self._own_fits.get(digest)
        if fit is None:
            fit = self.fit_windows([image], self.K, self.l, stride=1)
            with self._lock:
                self._own_fits = {**dict(list(self._own_fits.items())[-1:]), digest: fit}  # the last two images
        return fit

    def _condition(self, mean, cov, cut):
        w, K, l = self.K + 2 * self.l, self.K, self.l
        top, bottom, left, right = cut
        inside = np.zeros((w, w, 3), bool)
        inside[l:l + K, l:l + K] = True
        seen = np.zeros((w, w, 3), bool)
        seen[top:w - bottom, left:w - right] = True
        p, r = np.flatnonzero(inside.ravel()), np.flatnonzero((seen & ~inside).ravel())
        s_rr = cov[np.ix_(r, r)] + 1e-3 * np.eye(len(r)) * np.trace(cov) / len(cov)
        a = np.linalg.solve(s_rr, cov[np.ix_(r, p)]).T  # [Dp, Dr] = S_pr S_rr^-1
        s_cond = cov[np.ix_(p, p)] - a @ cov[np.ix_(r, p)]
        s_cond = (s_cond + s_cond.T) / 2 + 1e-3 * np.eye(len(p)) * np.trace(s_cond) / len(p)
        return dict(r=r, mu_p=mean[p], mu_r=mean[r], a=a, chol=np.linalg.cholesky(s_cond))

    def conditional(self, rings: np.ndarray, image: np.ndarray | None = None,
                    cut: tuple[int, int, int, int] = (0, 0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
        """The patch's Gaussian given its ring, as `sample` draws from it (before rounding and clipping).

        rings uint8 [P, K+2l, K+2l, 3]: windows around the patches; `cut` (top, bottom, left, right): rows and
        columns of them outside the image, which are ignored (their values do not matter).  Returns the mean float64
        [P, D] and the lower Cholesky factor float64 [D, D] of the covariance shared by all P, D = K·K·3 flattened
        (H, W, C).  Without a loaded fit the parameters are fitted on `image`, which must then be given.
        """
        c = self._conditioning(image, tuple(int(v) for v in cut))
        mu = c["mu_p"] + (rings.reshape(len(rings), -1).astype(np.float64)[:, c["r"]] - c["mu_r"]) @ c["a"].T
        return mu, c["chol"]

    def sample(self, image, ys, xs, n, rngs, start=0):
        K, l, w = self.K, self.l, self.K + 2 * self.l
        H, W = image.shape[:2]
        ys, xs = np.asarray(ys), np.asarray(xs)
        rings = windows(pad(image, l), ys, xs, w)
        cuts = np.stack([np.maximum(0, l - ys), np.maximum(0, ys + K + l - H),
                         np.maximum(0, l - xs), np.maximum(0, xs + K + l - W)], 1)
        z = np.stack([rng.standard_normal((start + n, K * K * 3))[start:] for rng in rngs])  # [P, n, D]
        x = np.empty(z.shape)
        for cut in np.unique(cuts, axis=0):
            rows = np.flatnonzero((cuts == cut).all(1))
            mu, chol = self.conditional(rings[rows], image, tuple(cut))
            x[rows] = mu[:, None, :] + z[rows] @ chol.T
        return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(len(ys), n, K, K, 3)

    def describe(self):
        d = {"sampler": self.name, "K": self.K, "ring": self.l, "fitted_on": self.fitted_on}
        if self.model_path is not None:
            d.update(sampler_model=os.path.abspath(self.model_path), sampler_sha256=self.sha256)
        return d

