"""Attribution measures from p(Y|x) and p(Y|x without r), in bits, and the patch → pixel averaging (DESIGN §3)."""
from __future__ import annotations

import numpy as np

EPS = 1e-13  # the reference implementation's guard inside the logs


def pmi(p0: np.ndarray, pr: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Pointwise mutual information log2 p0[c] − log2 pr[r, c], bits.

    p0 [Y], pr [P, Y] (float64 probabilities), classes [k] int → float64 [k, P].  Positive: the patch supports c.
    """
    return (np.log2(p0[classes] + EPS)[:, None] - np.log2(pr[:, classes] + EPS).T)


def information_gain(p0: np.ndarray, pr: np.ndarray) -> np.ndarray:
    """IG_r = Σ_c p0[c] (log2 p0[c] − log2 pr[r, c]) = KL(p0 ‖ pr), bits.  p0 [Y], pr [P, Y] → float64 [P]."""
    return (np.log2(p0 + EPS)[None, :] - np.log2(pr + EPS)) @ p0


def weight_of_evidence(p0: np.ndarray, pr: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """log2 odds(p0[c]) − log2 odds(pr[r, c]) (Zintgraf et al.), bits → float64 [k, P]."""
    def log_odds(p):
        return np.log2(p + EPS) - np.log2(1 - p + EPS)
    return log_odds(p0[classes])[:, None] - log_odds(pr[:, classes]).T


def probability_difference(p0: np.ndarray, pr: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """p0[c] − pr[r, c] (occlusion-style), probability units → float64 [k, P]."""
    return p0[classes][:, None] - pr[:, classes].T


def patches_to_pixels(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, K: int, shape: tuple[int, int]) -> np.ndarray:
    """Each pixel gets the mean of `values` over all patches that contain it.

    values [..., P] per patch; ys, xs [P] top-left corners of K×K patches; shape (H, W) → float32 [..., H, W].
    Every pixel must be covered (the engine's grid guarantees it).
    """
    H, W = shape
    acc = np.zeros(values.shape[:-1] + (H, W))
    count = np.zeros((H, W))
    for dy in range(K):
        for dx in range(K):
            # positions are distinct, so for one offset no pixel is hit twice and += needs no np.add.at
            acc[..., ys + dy, xs + dx] += values
            count[ys + dy, xs + dx] += 1
    return (acc / count).astype(np.float32)
