"""Prediction Difference Analysis's sampler (Zintgraf et al.): a conditional Gaussian of the patch given its ring."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..catalog import file_sha256
from ..errors import InfolensError
from . import pad, windows


class GaussianSampler:
    """Prediction Difference Analysis (Zintgraf et al.): a multivariate Gaussian over the (K+2l)² window,
    sampled for the K×K patch conditioned on the surrounding ring of width l, clipped to 0..255.

    Parameters come from a fit on natural images (`fit`, saved as .npz) — or, when none was shipped for this K,
    from the windows of the image being explained (recorded in `describe()` as fitted_on).
    """

    name = "gaussian"
    deterministic = False

    def __init__(self, K: int, mean: np.ndarray | None = None, cov: np.ndarray | None = None, l: int = 2,
                 fitted_on: str = ""):
        self.K, self.l, self.fitted_on = K, l, fitted_on
        self.model_path = None  # the .npz it was loaded from
        self._cond = None if mean is None else self._condition(mean, cov)
        self._own = {}

    @classmethod
    def load(cls, path: str) -> "GaussianSampler":
        with np.load(path) as z:
            sampler = cls(int(z["K"]), z["mean"], z["cov"], int(z["l"]), str(z["fitted_on"]))
        sampler.model_path = path
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

    def _condition(self, mean, cov):
        w, K, l = self.K + 2 * self.l, self.K, self.l
        inside = np.zeros((w, w, 3), bool)
        inside[l:l + K, l:l + K] = True
        p, r = np.flatnonzero(inside.ravel()), np.flatnonzero(~inside.ravel())
        mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        s_rr = cov[np.ix_(r, r)] + 1e-3 * np.eye(len(r)) * np.trace(cov) / len(cov)
        a = np.linalg.solve(s_rr, cov[np.ix_(r, p)]).T  # [Dp, Dr] = S_pr S_rr^-1
        s_cond = cov[np.ix_(p, p)] - a @ cov[np.ix_(r, p)]
        s_cond = (s_cond + s_cond.T) / 2 + 1e-3 * np.eye(len(p)) * np.trace(s_cond) / len(p)
        return dict(p=p, r=r, mu_p=mean[p], mu_r=mean[r], a=a, chol=np.linalg.cholesky(s_cond))

    def conditional(self, rings: np.ndarray, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The patch's Gaussian given its ring, as `sample` draws from it (before rounding and clipping).

        rings uint8 [P, K+2l, K+2l, 3]: windows of the image zero-padded by l.  Returns the mean float64 [P, D] and
        the lower Cholesky factor float64 [D, D] of the covariance shared by all P, D = K·K·3 flattened (H, W, C).
        Without a loaded fit the parameters are fitted on `image`, which must then be given.
        """
        c = self._cond
        if c is None:
            if image is None:
                raise InfolensError("GaussianSampler.conditional needs a fitted sampler (GaussianSampler.load) "
                                    "or the image to fit on")
            c = self._own_fit(image)
        mu = c["mu_p"] + (rings.reshape(len(rings), -1).astype(np.float64)[:, c["r"]] - c["mu_r"]) @ c["a"].T
        return mu, c["chol"]

    def sample(self, image, ys, xs, n, rngs, start=0):
        K, w = self.K, self.K + 2 * self.l
        mu, chol = self.conditional(windows(pad(image, self.l), ys, xs, w), image)
        z = np.stack([rng.standard_normal((start + n, len(chol)))[start:] for rng in rngs])  # [P, n, D]
        x = mu[:, None, :] + z @ chol.T
        return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(len(ys), n, K, K, 3)

    def _own_fit(self, image):
        key = hash(image.tobytes())
        if key not in self._own:
            self._own = {key: self._condition(*self.fit_windows([image], self.K, self.l, stride=1))}
            self.fitted_on = "the explained image (no shipped fit for this K)"
        return self._own[key]

    def describe(self):
        d = {"sampler": self.name, "K": self.K, "ring": self.l, "fitted_on": self.fitted_on}
        if self.model_path is not None:
            d.update(sampler_model=os.path.abspath(self.model_path), sampler_sha256=file_sha256(self.model_path))
        return d
