"""The logistic-mixture head's density (DESIGN §3): the tail-stable bin mass of a discretized logistic and log2 p(x)
of a patch under a mixture over patch hypotheses of per-pixel mixtures with linear channel coupling, in float64."""
from __future__ import annotations

import math

import numpy as np


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    """float64 softmax, C-contiguous (the kernels' input)."""
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max(axis, keepdims=True))
    return np.ascontiguousarray(e / e.sum(axis, keepdims=True))


def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # all −inf stays −inf, without inf − inf
    return (m + np.log(np.exp(x - m).sum(axis, keepdims=True))).squeeze(axis)


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def log_bin(v: np.ndarray, mu: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    """Natural log of L(v; μ, σ): the logistic mass of [v − ½, v + ½] (of (−∞, ½] at v = 0, [254.5, ∞) at 255).

    With a = (v − ½ − μ)/σ and b = (v + ½ − μ)/σ, exactly F(b) − F(a) = F(b)·(1 − F(a))·(1 − e^(a−b)), where
    1 − F(a) is the upper tail sigmoid(−a): a product of a lower tail, an upper tail and 1 − e^(−1/σ), each taken
    in log space, so no bin cancels to 0 however far it lies in either tail.
    """
    inv = np.exp(-log_scale)
    lo, hi = v <= 0, v >= 255
    a = np.where(lo, -np.inf, (v - 0.5 - mu) * inv)
    b = np.where(hi, np.inf, (v + 0.5 - mu) * inv)
    a_minus_b = np.where(lo | hi, -np.inf, -inv)
    return log_sigmoid(b) + log_sigmoid(-a) + np.log(-np.expm1(a_minus_b))


def logistic_mixture_log2prob(outputs: dict, patches: np.ndarray, select: np.ndarray | None = None) -> np.ndarray:
    """float64 [B]: log2 p(x) of the selected pixels of each patch under logistic-mixture outputs (DESIGN §3), bits.

        p(x) = Σ_s π_s · Π_{ij selected} Σ_m w_{s,ij,m} · L(x_R; μ_R, σ_R) · L(x_G; μ_G, σ_G) · L(x_B; μ_B, σ_B)
        π = softmax(patch_logits), w = softmax(pixel_logits[s, i, j]), σ = exp(log_scale),
        μ_R = loc_R, μ_G = loc_G + α·x_R, μ_B = loc_B + β·x_R + γ·x_G

    outputs: "patch_logits" [B, S], "pixel_logits" [B, S, K, K, M], "loc", "log_scale", "coeff" [B, S, K, K, 3, M]
    (any float dtype; grey levels; coeff channels α, β, γ).  patches: uint8 [B, K, K, 3], the true pixel values.
    select: bool [K, K], the pixels scored (one stage's), or None for all.  Computed in float64 with logsumexp over
    components and hypotheses and the tail-stable bin masses of `log_bin`.
    """
    patch_logits = np.asarray(outputs["patch_logits"], np.float64)
    B, S = patch_logits.shape
    K = patches.shape[1]
    M = outputs["pixel_logits"].shape[-1]
    q = np.flatnonzero(np.ones((K, K), bool) if select is None else select)

    def params(name):
        return np.asarray(outputs[name], np.float64).reshape(B, S, K * K, 3, M)[:, :, q]  # [B, S, Q, 3, M]

    loc, log_scale, coeff = params("loc"), params("log_scale"), params("coeff")
    logits = np.asarray(outputs["pixel_logits"], np.float64).reshape(B, S, K * K, M)[:, :, q]
    log_w = logits - logsumexp(logits, -1)[..., None]
    x = patches.reshape(B, 1, K * K, 3, 1)[:, :, q].astype(np.float64)  # [B, 1, Q, 3, 1]
    r, g, b = x[..., 0, :], x[..., 1, :], x[..., 2, :]
    mu = (loc[..., 0, :], loc[..., 1, :] + coeff[..., 0, :] * r,
          loc[..., 2, :] + coeff[..., 1, :] * r + coeff[..., 2, :] * g)
    per_component = log_w + sum(log_bin(v, m, log_scale[..., c, :]) for c, (v, m) in enumerate(zip((r, g, b), mu)))
    per_hypothesis = logsumexp(per_component, -1).sum(-1)  # [B, S]
    log_pi = patch_logits - logsumexp(patch_logits, -1)[..., None]
    return logsumexp(log_pi + per_hypothesis, -1) / math.log(2)
