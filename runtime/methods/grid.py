"""The patch grid: where the K×K patches of an H×W image sit at stride S."""
from __future__ import annotations

import numpy as np

from .. import params
from ..errors import InfolensError


def patch_grid(H: int, W: int, K: int, S: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of K×K patches at stride S, row-major, int64 [P] each.

    Offsets 0, S, 2S, … ≤ H−K, plus H−K itself if the stride skipped it, so every pixel is covered (DESIGN §3).
    """
    def axis(n):
        a = list(range(0, n - K + 1, S))
        if a[-1] != n - K:
            a.append(n - K)
        return np.array(a, np.int64)

    gy, gx = np.meshgrid(axis(H), axis(W), indexing="ij")
    return gy.ravel(), gx.ravel()


def check_grid(K, S, N, seed, H, W):
    """K, S, N and the seed against their constraints and the image size (InfolensError naming the parameter)."""
    params.check("K", K)
    if K > min(H, W):
        raise InfolensError(f"patch size K={K} is larger than the {H}x{W} input image", "K")
    params.check("stride", S)
    if S > K:
        raise InfolensError(f"stride {S} is larger than the patch size K={K}: pixels between patches would get "
                            f"no value; use a stride of {K} or less", "stride")
    params.check("samples", N)
    params.check("seed", seed)
