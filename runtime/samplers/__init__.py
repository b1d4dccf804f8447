"""The Sampler protocol, the registry of samplers by name, and the window geometry they share.

A sampler draws in-fills for K×K patches of a uint8 RGB image in the classifier's input space:

    sampler.sample(image [H, W, 3] uint8, ys [P] int64, xs [P] int64, n, rngs, start=0) -> uint8 [P, n, K, K, 3]

(ys[p], xs[p]) is the patch's top-left corner; rngs[p] is the counter-based generator of position p (samplers/rng.py),
so what a position gets never depends on which other positions share its call.  The call returns in-fills
start..start+n−1 of each position's sequence: a later call with start = n continues where a call with n stopped
(a sampler draws its random numbers for all start+n in-fills, cheap, and computes only the last n).
Deterministic samplers (`deterministic = True`) ignore n's randomness and return n identical copies; the
marginalization asks them for n = 1.

Implementations, one module each: `patchsampler` (the learned ONNX PatchSampler, categorical and logistic-mixture
heads, optional stages), `gaussian` (PDA's conditional Gaussian), `heuristic` (mean, gray, black, noise, blur, ring-mean).
"""
from __future__ import annotations

import os
from typing import Callable, Protocol, Sequence

import numpy as np

from .. import params
from ..catalog import models_dir, shipped
from ..errors import InfolensError


class Sampler(Protocol):
    name: str
    K: int
    deterministic: bool

    def sample(self, image: np.ndarray, ys: np.ndarray, xs: np.ndarray, n: int,
               rngs: Sequence[np.random.Generator], start: int = 0) -> np.ndarray: ...

    def describe(self) -> dict: ...


def windows(padded: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    """uint8 [P, size, size, 3]: the size×size windows of `padded` whose top-left corners are (ys, xs)."""
    view = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(0, 1))
    return np.ascontiguousarray(view[ys, xs].transpose(0, 2, 3, 1))


def pad(image: np.ndarray, k: int) -> np.ndarray:
    """Zero-pad by k on every side, as the PatchSampler saw at training (DESIGN §3)."""
    return np.pad(image, ((k, k), (k, k), (0, 0)))


# The implementations import `windows` and `pad` from this package, so they are imported only once those exist.
from .gaussian import GaussianSampler  # noqa: E402
from .heuristic import HeuristicSampler  # noqa: E402
from .mixture import logistic_mixture_log2prob  # noqa: E402
from .patchsampler import COUPLINGS, PatchSampler  # noqa: E402


def _patchsampler(K: int, model: str | None, device, coupling: str) -> Sampler:
    s = PatchSampler(model or shipped(f"patchsampler_k{K}.onnx", "sampler_model"), device, coupling)
    if s.K != K and model is None:
        raise InfolensError(f"shipped PatchSampler for K={K} has K={s.K}", "K")
    return s


def _gaussian(K: int, model: str | None, device, coupling: str) -> Sampler:
    path = model or os.path.join(models_dir(), f"gaussian_k{K}.npz")
    if model and not os.path.isfile(model):
        raise InfolensError(f"Gaussian fit not found: {model}", "sampler_model")
    return GaussianSampler.load(path) if os.path.isfile(path) else GaussianSampler(K)


def _heuristic(name: str):
    return lambda K, model, device, coupling: HeuristicSampler(name, K)


# The registry: name → factory(K, model, device, coupling).  It feeds params.PARAMS["sampler"] (the CLI's choices,
# the server's validation) and `load_sampler`.
SAMPLERS: dict[str, Callable[..., Sampler]] = {"patchsampler": _patchsampler, "gaussian": _gaussian,
                                               **{name: _heuristic(name) for name in HeuristicSampler.NAMES}}


def load_sampler(name: str, K: int, model: str | None = None, device="cpu",
                 coupling: str = "pixel") -> Sampler:
    """A sampler by name (a SAMPLERS key) for K×K patches.

    `patchsampler` loads `model` or the shipped `patchsampler_k{K}.onnx`; `gaussian` loads `model` (.npz) or the
    shipped `gaussian_k{K}.npz`, else fits on the explained image.  `device` ("cpu", "cuda" or a
    backends.sessions.Placement) places the PatchSampler session.
    `coupling` (PatchSampler, categorical head only): "pixel" draws a pixel's three channels with one shared
    uniform, "none" draws every sub-pixel independently as the reference implementation does; the per-sub-pixel
    distributions are the same.  A logistic-mixture PatchSampler couples the channels through its own model
    (α, β, γ), so `coupling` does not change its draws.
    """
    params.check("K", K)
    return SAMPLERS[params.check("sampler", name)](K, model, device, coupling)


__all__ = ["SAMPLERS", "COUPLINGS", "Sampler", "windows", "pad", "load_sampler", "PatchSampler", "GaussianSampler",
           "HeuristicSampler", "logistic_mixture_log2prob"]
