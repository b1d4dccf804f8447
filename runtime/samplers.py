"""The Sampler protocol and its implementations: the ONNX PatchSampler, PDA's conditional Gaussian, heuristics.

A sampler draws in-fills for K×K patches of a uint8 RGB image in the classifier's input space:

    sampler.sample(image [H, W, 3] uint8, ys [P] int64, xs [P] int64, n, rngs) -> uint8 [P, n, K, K, 3]

(ys[p], xs[p]) is the patch's top-left corner; rngs[p] is the counter-based generator of position p (engine.py),
so what a position gets never depends on which other positions share its call.  Deterministic samplers
(`deterministic = True`) ignore n's randomness and return n identical copies; the engine asks them for n = 1.
"""
from __future__ import annotations

import os
from typing import Protocol, Sequence

import cv2
import numpy as np
import onnxruntime as ort

from . import kernels
from .errors import InfolensError
from .catalog import models_dir, shipped

SAMPLERS = ("patchsampler", "gaussian", "mean", "gray", "black", "noise", "blur")
COUPLINGS = ("pixel", "none")  # PatchSampler: channels of a pixel share one uniform, or every sub-pixel its own


class Sampler(Protocol):
    name: str
    K: int
    deterministic: bool

    def sample(self, image: np.ndarray, ys: np.ndarray, xs: np.ndarray, n: int,
               rngs: Sequence[np.random.Generator]) -> np.ndarray: ...

    def describe(self) -> dict: ...


def windows(padded: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    """uint8 [P, size, size, 3]: the size×size windows of `padded` whose top-left corners are (ys, xs)."""
    view = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(0, 1))
    return np.ascontiguousarray(view[ys, xs].transpose(0, 2, 3, 1))


def pad(image: np.ndarray, k: int) -> np.ndarray:
    """Zero-pad by k on every side, as the PatchSampler saw at training (DESIGN §3)."""
    return np.pad(image, ((k, k), (k, k), (0, 0)))


class PatchSampler:
    """The learned PatchSampler (Yi et al.) as an ONNX file with the fixed interface of DESIGN §3.

    `context` uint8 [B, 3K, 3K, 3] → `probs` float32 [B, K, K, 3, 256]; each sub-pixel is sampled from its own
    categorical distribution by inverse CDF (kernels.sample_categorical) with uniforms from the position's stream.
    """

    name = "patchsampler"
    deterministic = False

    def __init__(self, model_path: str, device: str = "cpu", coupling: str = "pixel"):
        from .classifier import _providers, session_options  # one session policy for all

        self.model_path = os.fspath(model_path)
        if not os.path.isfile(self.model_path):
            raise InfolensError(f"PatchSampler model not found: {self.model_path} (--sampler-model)")
        try:
            self.session = ort.InferenceSession(self.model_path, session_options(), providers=_providers(device))
        except Exception as e:
            raise InfolensError(f"cannot load PatchSampler {self.model_path}: {str(e).splitlines()[0]}") from None
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or not isinstance(shape[1], int) or shape[1] % 3 or shape[3] != 3:
            raise InfolensError(f"{self.model_path} is not a PatchSampler: input shape {shape}, expected "
                                f"uint8 [B, 3K, 3K, 3] (--sampler-model)")
        self.K = shape[1] // 3
        if coupling not in COUPLINGS:
            raise InfolensError(f"unknown coupling {coupling!r}: choose {' or '.join(COUPLINGS)} (--coupling)")
        self.coupling = coupling

    def probs(self, image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """float32 [P, K, K, 3, 256] PatchSampler distributions of the patches at (ys, xs)."""
        ctx = windows(pad(image, self.K), ys, xs, 3 * self.K)
        return self.session.run(None, {self.session.get_inputs()[0].name: ctx})[0]

    def sample(self, image, ys, xs, n, rngs):
        K = self.K
        p = self.probs(image, ys, xs).reshape(len(ys), K * K * 3, 256)
        if self.coupling == "pixel":
            # One uniform per pixel for all three channels: each sub-pixel keeps the model's marginal exactly, but the
            # channels move together (comonotone), as they do in photos, instead of speckling in random colours.
            u = np.stack([rng.random((n, K * K), dtype=np.float32) for rng in rngs]).repeat(3, axis=2)
        else:
            u = np.stack([rng.random((n, K * K * 3), dtype=np.float32) for rng in rngs])
        return kernels.sample_categorical(np.ascontiguousarray(p), u).reshape(len(ys), n, K, K, 3)

    def describe(self):
        return {"sampler": self.name, "K": self.K, "sampler_model": os.path.abspath(self.model_path),
                "coupling": self.coupling}


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
        self._cond = None if mean is None else self._condition(mean, cov)
        self._own = {}

    @classmethod
    def load(cls, path: str) -> "GaussianSampler":
        with np.load(path) as z:
            return cls(int(z["K"]), z["mean"], z["cov"], int(z["l"]), str(z["fitted_on"]))

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

    def sample(self, image, ys, xs, n, rngs):
        K, w = self.K, self.K + 2 * self.l
        mu, chol = self.conditional(windows(pad(image, self.l), ys, xs, w), image)
        z = np.stack([rng.standard_normal((n, len(chol))) for rng in rngs])  # [P, n, D]
        x = mu[:, None, :] + z @ chol.T
        return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(len(ys), n, K, K, 3)

    def _own_fit(self, image):
        key = hash(image.tobytes())
        if key not in self._own:
            self._own = {key: self._condition(*self.fit_windows([image], self.K, self.l, stride=1))}
            self.fitted_on = "the explained image (no shipped fit for this K)"
        return self._own[key]

    def describe(self):
        return {"sampler": self.name, "K": self.K, "ring": self.l, "fitted_on": self.fitted_on}


class HeuristicSampler:
    """Replacements without a model: `mean` (patch mean colour), `gray` (128), `black` (0), `noise` (uniform 0..255),
    `blur` (the patch of cv2.GaussianBlur(image, (11, 11), 5)). All but `noise` are deterministic."""

    def __init__(self, name: str, K: int):
        self.name, self.K = name, K
        self.deterministic = name != "noise"

    def sample(self, image, ys, xs, n, rngs):
        K, P = self.K, len(ys)
        if self.name == "noise":
            return np.stack([rng.integers(0, 256, (n, K, K, 3), dtype=np.uint8) for rng in rngs])
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


def load_sampler(name: str = "patchsampler", K: int = 8, model: str | None = None, device: str = "cpu",
                 coupling: str = "pixel") -> Sampler:
    """A sampler by name (one of SAMPLERS) for K×K patches.

    `patchsampler` loads `model` or the shipped `patchsampler_k{K}.onnx`; `gaussian` loads `model` (.npz) or the
    shipped `gaussian_k{K}.npz`, else fits on the explained image.  `device` places the PatchSampler session.
    `coupling` (PatchSampler): "pixel" draws a pixel's three channels with one shared uniform, "none" draws every
    sub-pixel independently as the reference implementation does; the per-sub-pixel distributions are the same.
    """
    if not isinstance(K, (int, np.integer)) or K < 1:
        raise InfolensError(f"patch size K must be a positive integer, got {K} (-K)")
    if name == "patchsampler":
        s = PatchSampler(model or shipped(f"patchsampler_k{K}.onnx", "--sampler-model"), device, coupling)
        if s.K != K and model is None:
            raise InfolensError(f"shipped PatchSampler for K={K} has K={s.K}")
        return s
    if name == "gaussian":
        path = model or os.path.join(models_dir(), f"gaussian_k{K}.npz")
        if model and not os.path.isfile(model):
            raise InfolensError(f"Gaussian fit not found: {model} (--sampler-model)")
        return GaussianSampler.load(path) if os.path.isfile(path) else GaussianSampler(K)
    if name in ("mean", "gray", "black", "noise", "blur"):
        return HeuristicSampler(name, K)
    raise InfolensError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)} (--sampler)")
