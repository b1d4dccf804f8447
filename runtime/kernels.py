"""The marginalization's inner loops: categorical and logistic-mixture sampling, patch compositing and restoring.

Each function dispatches to the compiled module `infolens._sampling` (cpp_ext/sampling.cpp) when it is importable,
else to the numpy implementation below, which gives bit-identical results.  `INFOLENS_NO_EXT=1` in the environment
(read at import) forces numpy.  Both implementations are exposed for comparison: `numpy_impl` and `ext_impl`
(None when the extension is missing or disabled), each with the same four functions.

Every array argument must already have the stated dtype and be C-contiguous: a mismatch raises ValueError rather
than silently copying, so hidden conversions never land in the hot loop.  Messages are the same on both backends.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

import numpy as np

LEVELS = 256  # pixel values 0..255

# -- numpy implementation ---------------------------------------------------------------------------------------


def _as_array(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    return a


def _check_layout(a: np.ndarray, name: str, ndim: int, writeable: bool = False) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable")


def _check_array(a: np.ndarray, name: str, dtype, dtype_name: str, ndim: int) -> None:
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype_name}, got {a.dtype}")
    _check_layout(a, name, ndim)


def _np_sample_categorical(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    probs, uniforms = _as_array(probs, "probs"), _as_array(uniforms, "uniforms")
    _check_array(probs, "probs", np.float32, "float32", 3)
    _check_array(uniforms, "uniforms", np.float32, "float32", 3)
    (P, M, _), N = probs.shape, uniforms.shape[1]
    if probs.shape[2] != LEVELS:
        raise ValueError(f"probs must have shape [P, M, 256], got {probs.shape}")
    if uniforms.shape[0] != P or uniforms.shape[2] != M:
        raise ValueError(f"uniforms must have shape [P, N, M] = [{P}, N, {M}] to match probs {probs.shape}, "
                         f"got {uniforms.shape}")
    # Sequential float32 adds in index order: the C++ does exactly these.
    with np.errstate(over="ignore"):  # an overflowing row is reported below
        cdf = np.cumsum(probs, axis=-1, dtype=np.float32)
    total = cdf[..., -1]
    if not ((probs >= 0).all() and np.isfinite(total).all() and ((uniforms >= 0) & (uniforms < 1)).all()):
        raise ValueError("probs must be non-negative with finite row sums, and uniforms must lie in [0, 1)")
    # Rows in [P*M, N] order so each row's queries sit together; float32 multiply as in the C++.
    t = (uniforms * total[:, None, :]).transpose(0, 2, 1).reshape(P * M, N)

    # The C++'s branch-free upper bound, vectorized over all queries: after the 8 halvings
    # pos = #{j : cdf[j] <= t} clipped to 255, because the steps sum to 255.
    flat = cdf.reshape(-1)
    first = np.arange(P * M, dtype=np.intp)[:, None] * LEVELS - 1  # flat index just before each row's cdf[0]
    pos = np.zeros(t.shape, dtype=np.intp)
    step = LEVELS // 2
    while step:
        pos += step * (flat[first + pos + step] <= t)
        step //= 2
    return np.ascontiguousarray(pos.astype(np.uint8).reshape(P, M, N).transpose(0, 2, 1))


def _check_shape(a: np.ndarray, name: str, dims: str, expected: tuple) -> None:
    """expected: one int per axis, or a dimension letter where any size is allowed."""
    if any(isinstance(e, int) and e != n for e, n in zip(expected, a.shape)):
        shown = "(" + ", ".join(str(e) for e in expected) + ")"
        raise ValueError(f"{name} must have shape [{dims}] = {shown}, got {a.shape}")


_MIXTURE_ARGS = ("hyp", "comp", "loc", "scale", "coeff", "u_hyp", "u_comp", "z")
_MIXTURE_WEIGHTS_MSG = "hyp and comp must be non-negative with finite positive row sums"
_MIXTURE_PARAMS_MSG = "loc, scale and coeff must be finite, with scale > 0"
_MIXTURE_UNIFORMS_MSG = "u_hyp and u_comp must lie in [0, 1), and z must be finite"
_MIXTURE_NAN_MSG = "a drawn value is NaN: loc + coeff·x + scale·z overflowed"


def _np_sample_logistic_mixture(hyp, comp, loc, scale, coeff, u_hyp, u_comp, z) -> np.ndarray:
    hyp, comp, loc, scale, coeff, u_hyp, u_comp, z = map(
        _as_array, (hyp, comp, loc, scale, coeff, u_hyp, u_comp, z), _MIXTURE_ARGS)
    for a, name, ndim in ((hyp, "hyp", 2), (comp, "comp", 4), (loc, "loc", 5), (scale, "scale", 5),
                          (coeff, "coeff", 5), (u_hyp, "u_hyp", 2), (u_comp, "u_comp", 3), (z, "z", 4)):
        _check_array(a, name, np.float64, "float64", ndim)
    (B, S), (Q, M), N = hyp.shape, comp.shape[2:], u_hyp.shape[1]
    _check_shape(comp, "comp", "B, S, Q, M", (B, S, "Q", "M"))
    for a, name in ((loc, "loc"), (scale, "scale"), (coeff, "coeff")):
        _check_shape(a, name, "B, S, Q, 3, M", (B, S, Q, 3, M))
    _check_shape(u_hyp, "u_hyp", "B, N", (B, "N"))
    _check_shape(u_comp, "u_comp", "B, N, Q", (B, N, Q))
    _check_shape(z, "z", "B, N, Q, 3", (B, N, Q, 3))

    # Sequential float64 adds in index order, and the same comparisons: the C++ does exactly these.
    with np.errstate(over="ignore", invalid="ignore"):  # overflowing or nan rows are reported below
        cdf_h, cdf_c = np.cumsum(hyp, axis=1), np.cumsum(comp, axis=3)
    total_h, total_c = cdf_h[:, -1:], cdf_c[..., -1]
    if not ((hyp >= 0).all() and (comp >= 0).all() and (np.isfinite(total_h) & (total_h > 0)).all()
            and (np.isfinite(total_c) & (total_c > 0)).all()):
        raise ValueError(_MIXTURE_WEIGHTS_MSG)
    if not (np.isfinite(loc).all() and np.isfinite(coeff).all() and (np.isfinite(scale) & (scale > 0)).all()):
        raise ValueError(_MIXTURE_PARAMS_MSG)
    if not (((u_hyp >= 0) & (u_hyp < 1)).all() and ((u_comp >= 0) & (u_comp < 1)).all() and np.isfinite(z).all()):
        raise ValueError(_MIXTURE_UNIFORMS_MSG)

    # cdf is non-decreasing, so the count of entries <= t is the C++'s first index whose cdf exceeds t.
    s = np.minimum((cdf_h[:, None, :] <= (u_hyp * total_h)[..., None]).sum(-1), S - 1)  # [B, N]
    b_i, s_i, q_i = np.arange(B)[:, None, None], s[:, :, None], np.arange(Q)
    cdf = cdf_c[b_i, s_i, q_i]  # [B, N, Q, M]: the component cdfs of each sample's hypothesis
    m = np.minimum((cdf <= (u_comp * cdf[..., -1])[..., None]).sum(-1), M - 1)  # [B, N, Q]

    def pick(a, c):
        return a[b_i, s_i, q_i, c, m]

    def value(mean, c):
        v = np.clip(np.rint(mean + pick(scale, c) * z[..., c]), 0.0, 255.0)
        if np.isnan(v).any():
            raise ValueError(_MIXTURE_NAN_MSG)
        return v

    with np.errstate(over="ignore", invalid="ignore"):  # overflow to ±inf clips; a NaN is reported
        r = value(pick(loc, 0), 0)
        g = value(pick(loc, 1) + pick(coeff, 0) * r, 1)
        mean_b = pick(loc, 2) + pick(coeff, 1) * r
        b = value(mean_b + pick(coeff, 2) * g, 2)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def _layout(batch: np.ndarray, nchw: bool) -> tuple[int, int, int]:
    """(C, H, W) of a [B, C, H, W] (nchw) or [B, H, W, C] batch."""
    _, a, b, c = batch.shape
    return (a, b, c) if nchw else (c, a, b)


def _check_batch(batch: np.ndarray) -> None:
    if batch.dtype != np.float32 and batch.dtype != np.uint8:
        raise ValueError(f"batch must have dtype float32 or uint8, got {batch.dtype}")
    _check_layout(batch, "batch", 4, writeable=True)


def _check_like_batch(a: np.ndarray, name: str, batch: np.ndarray, ndim: int) -> None:
    _check_array(a, name, batch.dtype, f"{batch.dtype} (same as batch)", ndim)


def _check_corners(ys: np.ndarray, xs: np.ndarray, items: int) -> None:
    _check_array(ys, "ys", np.int64, "int64", 1)
    _check_array(xs, "xs", np.int64, "int64", 1)
    if len(xs) != len(ys):
        raise ValueError(f"ys and xs must have the same length, got {ys.shape} and {xs.shape}")
    if len(ys) > items:
        raise ValueError(f"ys has {len(ys)} items but batch only {items}")


def _check_bounds(ys: np.ndarray, xs: np.ndarray, K: int, H: int, W: int) -> None:
    if not 1 <= K <= min(H, W):
        raise ValueError(f"patch size K={K} must satisfy 1 <= K <= min(H, W) = {min(H, W)}")
    bad = np.flatnonzero((ys < 0) | (ys > H - K) | (xs < 0) | (xs > W - K))
    if bad.size:
        b = bad[0]
        raise ValueError(f"patch corner (y, x) = ({ys[b]}, {xs[b]}) of item {b} is outside "
                         f"0 <= y <= H-K = {H - K}, 0 <= x <= W-K = {W - K}")


def _np_composite(batch, patches, ys, xs, lut, src, nchw: bool) -> None:
    batch, patches, ys, xs, lut, src = map(_as_array, (batch, patches, ys, xs, lut, src),
                                           ("batch", "patches", "ys", "xs", "lut", "src"))
    _check_batch(batch)
    C, H, W = _layout(batch, nchw)
    _check_array(patches, "patches", np.uint8, "uint8", 4)
    K = patches.shape[1]
    if patches.shape[2] != K or patches.shape[3] != 3:
        raise ValueError(f"patches must have shape [B, K, K, 3], got {patches.shape}")
    _check_corners(ys, xs, batch.shape[0])
    if len(patches) != len(ys):
        raise ValueError(f"patches has {len(patches)} items but ys has {len(ys)}")
    _check_bounds(ys, xs, K, H, W)
    _check_like_batch(lut, "lut", batch, 2)
    if lut.shape != (C, LEVELS):
        raise ValueError(f"lut must have shape [C, 256] = [{C}, 256], got {lut.shape}")
    _check_array(src, "src", np.int64, "int64", 1)
    if src.shape != (C,):
        raise ValueError(f"src must have shape ({C},), got {src.shape}")
    bad = src[(src < 0) | (src > 2)]
    if bad.size:
        raise ValueError(f"src values must be patch channels 0, 1 or 2, got {bad[0]}")

    values = lut[np.arange(C), patches[..., src]]  # [B', K, K, C]: values[..., c] = lut[c, patch[..., src[c]]]
    if nchw:
        values = values.transpose(0, 3, 1, 2)
        for b, (y, x) in enumerate(zip(ys.tolist(), xs.tolist())):
            batch[b, :, y:y + K, x:x + K] = values[b]
    else:
        for b, (y, x) in enumerate(zip(ys.tolist(), xs.tolist())):
            batch[b, y:y + K, x:x + K] = values[b]


def _np_restore(batch, base, ys, xs, K: int, nchw: bool) -> None:
    batch, base, ys, xs = map(_as_array, (batch, base, ys, xs), ("batch", "base", "ys", "xs"))
    _check_batch(batch)
    C, H, W = _layout(batch, nchw)
    _check_like_batch(base, "base", batch, 3)
    if base.shape != batch.shape[1:]:
        raise ValueError(f"base must have shape batch.shape[1:], got {base.shape} for batch {batch.shape}")
    _check_corners(ys, xs, batch.shape[0])
    _check_bounds(ys, xs, K, H, W)
    for b, (y, x) in enumerate(zip(ys.tolist(), xs.tolist())):
        if nchw:
            batch[b, :, y:y + K, x:x + K] = base[:, y:y + K, x:x + K]
        else:
            batch[b, y:y + K, x:x + K] = base[y:y + K, x:x + K]


numpy_impl = types.SimpleNamespace(sample_categorical=_np_sample_categorical,
                                   sample_logistic_mixture=_np_sample_logistic_mixture, composite=_np_composite,
                                   restore=_np_restore)

# -- dispatch ---------------------------------------------------------------------------------------------------

ext_impl = None
EXT_UNAVAILABLE_REASON: str | None = None  # why ext_impl is None, for messages and test skips
if os.environ.get("INFOLENS_NO_EXT", "") not in ("", "0"):
    EXT_UNAVAILABLE_REASON = "disabled by INFOLENS_NO_EXT"
else:
    try:  # import_module, not `from . import`: its error names the missing module while infolens initializes
        ext_impl = importlib.import_module(f"{__package__}._sampling")
    except ImportError as e:
        EXT_UNAVAILABLE_REASON = f"infolens._sampling not importable ({e}); build it with `pip install -e .`"
        # installs without a C++17 compiler skip the extension (setup.py: optional); say once what that costs
        sys.stderr.write("infolens: note: the compiled sampling kernels are not installed (no C++ compiler at "
                         "install?); using numpy: the same results, slower\n")

USING_EXTENSION: bool = ext_impl is not None
_impl = ext_impl if USING_EXTENSION else numpy_impl


def backend() -> str:
    """"c++" when the compiled extension serves the calls, else "numpy"."""
    return "c++" if USING_EXTENSION else "numpy"


def sample_categorical(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws of pixel values, one per uniform.

    probs: float32 [P, M, 256], each row a distribution over 0..255 (non-negative; sums need not be exactly 1).
    uniforms: float32 [P, N, M] in [0, 1).
    Returns uint8 [P, N, M]: out[p, n, m] = #{j : cdf[p, m, j] <= uniforms[p, n, m] * cdf[p, m, 255]}, clipped to
    255, where cdf is the float32 running sum in index order.  A zero-probability value is never drawn (except
    255 when the threshold rounds up to the row total).
    """
    return _impl.sample_categorical(probs, uniforms)


def sample_logistic_mixture(hyp: np.ndarray, comp: np.ndarray, loc: np.ndarray, scale: np.ndarray,
                            coeff: np.ndarray, u_hyp: np.ndarray, u_comp: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Draws of whole patches from the logistic-mixture head (DESIGN §3), N per row, Q pixels each.

    Every argument is float64 and C-contiguous; B rows (a position, or a position's sample), S hypotheses, Q
    pixels, M components, N draws per row:
    hyp [B, S] and comp [B, S, Q, M]: hypothesis and component weights (non-negative; sums need not be 1).
    loc, scale, coeff [B, S, Q, 3, M]: μ, σ > 0 (grey levels) and the coupling α, β, γ in channel slots 0, 1, 2.
    u_hyp [B, N], u_comp [B, N, Q]: uniforms in [0, 1); z [B, N, Q, 3]: the logistic quantiles log(u/(1−u)).
    Returns uint8 [B, N, Q, 3] (R, G, B).  Per draw: s = #{j : cdf_hyp[j] <= u_hyp·cdf_hyp[S−1]} clipped to
    S−1 (float64 running sums in index order); per pixel m likewise from comp[s] and u_comp; then
    x_R = clip(rint(μ_R + σ_R·z_R)), x_G from μ_G = loc_G + α·x_R, x_B from μ_B = (loc_B + β·x_R) + γ·x_G, with
    rint half-to-even and clip to 0..255: the rounded, clipped values feed the next channel's mean.
    The transcendentals (softmax, exp, the logit) are the caller's, so both backends do the same float64 adds and
    multiplies, in the same order, and agree bit for bit.
    """
    return _impl.sample_logistic_mixture(hyp, comp, loc, scale, coeff, u_hyp, u_comp, z)


def composite(batch: np.ndarray, patches: np.ndarray, ys: np.ndarray, xs: np.ndarray, lut: np.ndarray,
              src: np.ndarray, nchw: bool) -> None:
    """Write one K×K patch per batch item, in place, through a per-channel lookup table.

    batch: float32 or uint8 [B, C, H, W] (nchw) or [B, H, W, C], C-contiguous, writeable.
    patches: uint8 [B', K, K, 3] RGB pixel values, B' <= B; items b >= B' are left alone.
    ys, xs: int64 [B'] top-left corners, 0 <= ys <= H-K, 0 <= xs <= W-K.
    lut: batch dtype [C, 256]: model-space value of model channel c for pixel value v.
    src: int64 [C]: the patch channel each model channel reads ([2, 1, 0] for a BGR model).
    Effect: batch[b, c, ys[b]+i, xs[b]+j] (or [b, ys[b]+i, xs[b]+j, c]) = lut[c, patches[b, i, j, src[c]]];
    nothing outside the patch regions is touched.
    """
    _impl.composite(batch, patches, ys, xs, lut, src, nchw)


def restore(batch: np.ndarray, base: np.ndarray, ys: np.ndarray, xs: np.ndarray, K: int, nchw: bool) -> None:
    """Undo `composite`, in place: copy the K×K region at (ys[b], xs[b]), all channels, from base into batch[b].

    batch: float32 or uint8 [B, C, H, W] (nchw) or [B, H, W, C], C-contiguous, writeable.
    base: the unperturbed item, shape batch.shape[1:], same dtype.
    ys, xs: int64 [B'] with B' <= B; items b >= B' are left alone.
    """
    _impl.restore(batch, base, ys, xs, K, nchw)
