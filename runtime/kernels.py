"""The engine's inner loops: categorical sampling, patch compositing and restoring.

Each function dispatches to the compiled module `infolens._sampling` (cpp_ext/sampling.cpp) when it is importable,
else to the numpy implementation below, which gives bit-identical results.  `INFOLENS_NO_EXT=1` in the environment
(read at import) forces numpy.  Both implementations are exposed for comparison: `numpy_impl` and `ext_impl`
(None when the extension is missing or disabled), each with the same three functions.

Every array argument must already have the stated dtype and be C-contiguous: a mismatch raises ValueError rather
than silently copying, so hidden conversions never land in the hot loop.  Messages are the same on both backends.
"""
from __future__ import annotations

import importlib
import os
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


numpy_impl = types.SimpleNamespace(sample_categorical=_np_sample_categorical, composite=_np_composite,
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
