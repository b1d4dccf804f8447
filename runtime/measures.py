"""Attribution measures from p(Y|x) and p(Y|x without r), in bits, their Monte-Carlo standard errors, and the
patch → pixel averaging (DESIGN §3)."""
from __future__ import annotations

import numpy as np

EPS = 1e-13  # the reference implementation's guard inside the logs
LN2 = np.log(2.0)


def pmi(p0: np.ndarray, pr: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Pointwise mutual information log2 p0[c] − log2 pr[r, c], bits.

    p0 [Y], pr [P, Y] (float64 probabilities), classes [k] int → float64 [k, P].  Positive: the patch supports c.
    """
    return (np.log2(p0[classes] + EPS)[:, None] - np.log2(pr[:, classes] + EPS).T)


def information_gain(p0: np.ndarray, pr: np.ndarray, bernoulli: bool = False) -> np.ndarray:
    """IG_r = Σ_c p0[c] (log2 p0[c] − log2 pr[r, c]) = KL(p0 ‖ pr), bits.  p0 [Y], pr [P, Y] → float64 [P].

    bernoulli (multi-label): each class is its own yes/no variable, independent given the image, so the KL of the
    joint is the sum over classes of the binary KLs, Σ_c KL(Bern(p0[c]) ‖ Bern(pr[r, c])).
    """
    ig = (np.log2(p0 + EPS)[None, :] - np.log2(pr + EPS)) @ p0
    if bernoulli:
        q0 = 1 - p0
        ig += (np.log2(q0 + EPS)[None, :] - np.log2(1 - pr + EPS)) @ q0
    return ig


def weight_of_evidence(p0: np.ndarray, pr: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """log2 odds(p0[c]) − log2 odds(pr[r, c]) (Zintgraf et al.), bits → float64 [k, P]."""
    def log_odds(p):
        return np.log2(p + EPS) - np.log2(1 - p + EPS)
    return log_odds(p0[classes])[:, None] - log_odds(pr[:, classes]).T


def probability_difference(p0: np.ndarray, pr: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """p0[c] − pr[r, c] (occlusion-style), probability units → float64 [k, P]."""
    return p0[classes][:, None] - pr[:, classes].T


def reduce_samples(method: str, p0: np.ndarray, probs: np.ndarray, classes: np.ndarray,
                   deterministic: bool = False, bernoulli: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The maps' per-patch values of m positions from the classifier's outputs on their n in-fills, with the
    Monte-Carlo standard error of each (delta method).

    method "pmi" (maps pmi and ig), "pda" (woe) or "occlusion"; p0 [Y]; probs float64 [m, n, Y]: p(Y | x with
    patch r := in-fill i); classes [k].  Returns map name → (values, stderr), float64 [k, m] (ig: [m]), in the map's
    units.  p(Y|x without r) is estimated by the mean over the n in-fills; a value f(p̄) gets the standard error
    |f'(p̄)| · sd_i(p_i) / √n (ig: sd_i of Σ_y ∂IG/∂p̄_y · p_i,y, the linearization of KL in all classes at once).
    A deterministic sampler has no Monte-Carlo error (0); a random one with n = 1 cannot estimate it (nan).
    bernoulli: a multi-label classifier's per-class probabilities (IG is the sum of binary KLs, information_gain).
    """
    m, n, _ = probs.shape
    pr = probs.sum(1) / n  # the sequential float64 sum of the in-fills, as the maps have always used

    def stderr(samples, slope):  # samples [m, n, ...] of a statistic, slope [m, ...] of f at its mean
        if deterministic:
            return np.zeros_like(slope)
        if n < 2:
            return np.full_like(slope, np.nan)
        return np.abs(slope) * samples.std(1, ddof=1) / np.sqrt(n)

    sel, p_sel = probs[:, :, classes], pr[:, classes]  # [m, n, k], [m, k]
    if method == "pmi":
        # ∂/∂p̄ of −log2(p̄ + EPS) is −1 / ((p̄ + EPS) ln 2); IG = Σ_y p0_y (log2 p0_y − log2 p̄_y)
        weights = p0[None, :] / ((pr + EPS) * LN2)  # [m, Y]: −∂IG/∂p̄
        if bernoulli:  # + Σ_y (1 − p0_y)(log2(1 − p0_y) − log2(1 − p̄_y))
            weights -= (1 - p0)[None, :] / ((1 - pr + EPS) * LN2)
        return {"pmi": (pmi(p0, pr, classes), stderr(sel, 1 / ((p_sel + EPS) * LN2)).T),
                "ig": (information_gain(p0, pr, bernoulli),
                       stderr(np.einsum("miy,my->mi", probs, weights), np.ones(m)))}
    if method == "pda":
        slope = (1 / (p_sel + EPS) + 1 / (1 - p_sel + EPS)) / LN2
        return {"woe": (weight_of_evidence(p0, pr, classes), stderr(sel, slope).T)}
    return {"occlusion": (probability_difference(p0, pr, classes), stderr(sel, np.ones_like(p_sel)).T)}


def patches_to_pixels(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, K: int, shape: tuple[int, int]) -> np.ndarray:
    """Each pixel gets the mean of `values` over all patches that contain it.

    values [..., P] per patch; ys, xs [P] top-left corners of K×K patches; shape (H, W) → float32 [..., H, W].
    Every pixel must be covered (methods/grid.py's grid guarantees it).
    """
    acc, count = _over_patches(values, ys, xs, K, shape)
    return (acc / count).astype(np.float32)


def patches_to_pixels_stderr(stderr: np.ndarray, ys: np.ndarray, xs: np.ndarray, K: int,
                             shape: tuple[int, int]) -> np.ndarray:
    """The standard error of `patches_to_pixels(values)` from the patches' standard errors [..., P]: the patches'
    in-fills are drawn independently, so a pixel's mean over its c covering patches has √(Σ stderr²) / c."""
    acc, count = _over_patches(stderr ** 2, ys, xs, K, shape)
    return (np.sqrt(acc) / count).astype(np.float32)


def _over_patches(values, ys, xs, K, shape):
    """Per pixel: the sum of `values` [..., P] over the patches containing it, and their number."""
    H, W = shape
    acc = np.zeros(values.shape[:-1] + (H, W))
    count = np.zeros((H, W))
    for dy in range(K):
        for dx in range(K):
            # positions are distinct, so for one offset no pixel is hit twice and += needs no np.add.at
            acc[..., ys + dy, xs + dx] += values
            count[ys + dy, xs + dx] += 1
    return acc, count
