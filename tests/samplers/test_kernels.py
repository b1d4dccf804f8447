"""infolens.kernels: the C++ extension and the numpy fallback agree bit for bit and both meet the contract.

Comparison tests need the compiled `infolens._sampling`; without it they skip, or fail when
INFOLENS_REQUIRE_EXT=1 (CI sets it so a broken build cannot pass silently).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from conftest import REQUIRE_EXT
from infolens import kernels


# -- inputs -----------------------------------------------------------------------------------------------------

def awkward_probs(rng, P, M):
    """float32 [P, M, 256]: sparse Dirichlet rows with exact zeros, one-hot and near-one-hot rows, an all-zero
    row, and sums off 1 by up to 3 %, as a softmax in float32 gives and worse."""
    p = rng.dirichlet(np.full(256, 0.2), size=(P, M)).astype(np.float32)
    p[p < 2e-3] = 0
    p[:, ::5] = 0
    hot = rng.integers(0, 256, (P, M))
    p[:, ::5][np.arange(P)[:, None], np.arange(p[:, ::5].shape[1]), hot[:, ::5]] = 1
    p[:, 1::7] *= np.float32(1e-7)
    p[:, 1::7, rng.integers(0, 256)] = 1
    if P and M > 2:
        p[0, 2] = 0
    p *= rng.uniform(0.97, 1.03, (P, M, 1)).astype(np.float32)
    return np.ascontiguousarray(p)


def awkward_uniforms(rng, probs, N):
    """float32 [P, N, M] in [0, 1): random, the extremes, and thresholds landing exactly on cdf values (ties)."""
    P, M, _ = probs.shape
    u = rng.random((P, N, M), dtype=np.float32)
    u[:, 0] = 0
    u[:, 1] = np.nextafter(np.float32(1), np.float32(0))
    cdf = np.cumsum(probs, axis=-1, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = cdf[np.arange(P)[:, None], np.arange(M), rng.integers(0, 256, (P, M))] / cdf[..., -1]
    u[:, 2] = np.where(np.isfinite(ratio) & (ratio < 1), ratio, 0.5)
    return u


def reference_sample(probs, uniforms):
    """The contract written out literally: count cdf <= t, clip to 255."""
    cdf = np.cumsum(probs, axis=-1, dtype=np.float32)
    t = uniforms * cdf[:, None, :, -1]
    counts = (cdf[:, None, :, :] <= t[..., None]).sum(-1)
    return np.minimum(counts, 255).astype(np.uint8)


def composite_case(rng, dtype, nchw, bgr, B=5, used=4, C=3, H=11, W=13, K=4):
    """(batch, base, patches, ys, xs, lut, src): batch items are noisy copies of base so restore has work."""
    shape = (C, H, W) if nchw else (H, W, C)
    if dtype == np.uint8:
        base = rng.integers(0, 256, shape, dtype=np.uint8)
        lut = rng.integers(0, 256, (C, 256), dtype=np.uint8)
    else:
        base = rng.normal(size=shape).astype(np.float32)
        lut = ((np.arange(256) - 127.0) / 128.0 * rng.uniform(0.5, 2, (C, 1))).astype(np.float32)
    batch = np.ascontiguousarray(np.broadcast_to(base, (B,) + shape))
    patches = rng.integers(0, 256, (used, K, K, 3), dtype=np.uint8)
    ys = rng.integers(0, H - K + 1, used)
    xs = rng.integers(0, W - K + 1, used)
    ys[0], xs[0] = 0, W - K  # corners at the borders
    ys[1], xs[1] = H - K, 0
    src = np.array([2, 1, 0] if bgr else [0, 1, 2], dtype=np.int64)
    return batch, base, patches, ys, xs, lut, src


def expected_composite(batch, patches, ys, xs, lut, src, nchw):
    """Pixel by pixel, independent of either implementation."""
    out = batch.copy()
    K = patches.shape[1]
    for b in range(len(patches)):
        for i in range(K):
            for j in range(K):
                for c in range(len(src)):
                    v = lut[c, patches[b, i, j, src[c]]]
                    if nchw:
                        out[b, c, ys[b] + i, xs[b] + j] = v
                    else:
                        out[b, ys[b] + i, xs[b] + j, c] = v
    return out


def region_mask(shape, ys, xs, K, nchw):
    mask = np.zeros(shape, bool)
    for b, (y, x) in enumerate(zip(ys, xs)):
        if nchw:
            mask[b, :, y:y + K, x:x + K] = True
        else:
            mask[b, y:y + K, x:x + K] = True
    return mask


# -- dispatch ---------------------------------------------------------------------------------------------------

def test_backend_matches_dispatch():
    assert kernels.USING_EXTENSION == (kernels.ext_impl is not None)
    assert kernels.backend() == ("c++" if kernels.USING_EXTENSION else "numpy")
    if REQUIRE_EXT:
        assert kernels.backend() == "c++", kernels.EXT_UNAVAILABLE_REASON


def test_no_ext_env_forces_numpy():
    env = dict(os.environ, INFOLENS_NO_EXT="1")
    code = "from infolens import kernels as k; print(k.backend(), k.ext_impl is None, k.EXT_UNAVAILABLE_REASON)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["numpy", "True"]


def test_extension_is_compiled_module(ext):
    assert ext.__name__ == "infolens._sampling"
    assert ext.__file__.endswith((".so", ".pyd"))


# -- C++ == numpy -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("P,N,M", [(3, 7, 37), (2, 8, 768), (1, 1, 1), (4, 0, 5), (0, 3, 8)])
def test_sample_categorical_ext_equals_numpy(ext, P, N, M):
    rng = np.random.default_rng(P * 1000 + M)
    probs = awkward_probs(rng, P, M)
    u = awkward_uniforms(rng, probs, N) if N >= 3 else rng.random((P, N, M), dtype=np.float32)
    got, want = ext.sample_categorical(probs, u), kernels.numpy_impl.sample_categorical(probs, u)
    assert got.dtype == want.dtype == np.uint8 and got.shape == want.shape == (P, N, M)
    np.testing.assert_array_equal(got, want)


def test_sample_categorical_ext_equals_numpy_large_random(ext):
    rng = np.random.default_rng(7)
    logits = rng.normal(scale=rng.uniform(0.1, 8, (6, 300, 1)), size=(6, 300, 256)).astype(np.float32)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True)).astype(np.float32)
    u = rng.random((6, 64, 300), dtype=np.float32)
    np.testing.assert_array_equal(ext.sample_categorical(probs, u), kernels.numpy_impl.sample_categorical(probs, u))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("nchw", [True, False], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("bgr", [False, True], ids=["rgb", "bgr"])
def test_composite_restore_ext_equals_numpy(ext, dtype, nchw, bgr):
    rng = np.random.default_rng(3)
    batch, base, patches, ys, xs, lut, src = composite_case(rng, dtype, nchw, bgr)
    a, b = batch.copy(), batch.copy()
    ext.composite(a, patches, ys, xs, lut, src, nchw)
    kernels.numpy_impl.composite(b, patches, ys, xs, lut, src, nchw)
    assert a.tobytes() == b.tobytes()
    ext.restore(a, base, ys[:3], xs[:3], patches.shape[1], nchw)
    kernels.numpy_impl.restore(b, base, ys[:3], xs[:3], patches.shape[1], nchw)
    assert a.tobytes() == b.tobytes()


# -- the contract, on each implementation -----------------------------------------------------------------------

def test_sample_categorical_follows_definition(impl):
    rng = np.random.default_rng(11)
    probs = awkward_probs(rng, 3, 41)
    u = awkward_uniforms(rng, probs, 9)
    np.testing.assert_array_equal(impl.sample_categorical(probs, u), reference_sample(probs, u))


def test_sample_categorical_never_draws_zero_probability(impl):
    rng = np.random.default_rng(5)
    probs = awkward_probs(rng, 4, 50)
    probs[0, 2, 0] = 1  # the all-zero row would legitimately clip to 255
    u = awkward_uniforms(rng, probs, 200)
    out = impl.sample_categorical(probs, u)
    drawn = probs[np.arange(4)[:, None, None], np.arange(50), out]
    assert (drawn > 0).all()


@pytest.mark.parametrize("hot", [0, 1, 128, 254, 255])
def test_sample_categorical_one_hot(impl, hot):
    probs = np.zeros((2, 3, 256), np.float32)
    probs[..., hot] = 1
    probs[1] *= np.float32(0.9)  # one-hot but not normalized
    u = np.random.default_rng(hot).random((2, 50, 3), dtype=np.float32)
    u[:, 0], u[:, 1] = 0, np.nextafter(np.float32(1), np.float32(0))
    assert (impl.sample_categorical(probs, u) == hot).all()


def test_sample_categorical_histogram_matches_probs(impl):
    rng = np.random.default_rng(2024)
    probs = np.zeros((1, 2, 256), np.float32)
    support = [0, 3, 17, 100, 101, 200, 254, 255]
    probs[0, 0, support] = rng.dirichlet(np.ones(len(support)))
    probs[0, 1] = rng.dirichlet(np.full(256, 2.0))
    n = 200_000
    out = impl.sample_categorical(probs, rng.random((1, n, 2), dtype=np.float32))
    for m in range(2):
        p = probs[0, m].astype(np.float64)
        keep = p > 0
        counts = np.bincount(out[0, :, m], minlength=256)
        assert counts[~keep].sum() == 0
        chi2 = ((counts[keep] - n * p[keep] / p.sum()) ** 2 / (n * p[keep] / p.sum())).sum()
        assert chi2 < stats.chi2.ppf(1 - 1e-4, keep.sum() - 1), chi2


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("nchw", [True, False], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("bgr", [False, True], ids=["rgb", "bgr"])
def test_composite_writes_exactly_the_patch(impl, dtype, nchw, bgr):
    rng = np.random.default_rng(17)
    batch, _, patches, ys, xs, lut, src = composite_case(rng, dtype, nchw, bgr)
    before = batch.copy()
    impl.composite(batch, patches, ys, xs, lut, src, nchw)
    want = expected_composite(before, patches, ys, xs, lut, src, nchw)
    assert batch.tobytes() == want.tobytes()
    K = patches.shape[1]
    outside = ~region_mask(batch.shape, ys, xs, K, nchw)
    assert batch[outside].tobytes() == before[outside].tobytes()
    assert batch[len(patches):].tobytes() == before[len(patches):].tobytes()  # items past B' untouched


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
@pytest.mark.parametrize("nchw", [True, False], ids=["nchw", "nhwc"])
def test_restore_undoes_composite(impl, dtype, nchw):
    rng = np.random.default_rng(19)
    batch, base, patches, ys, xs, lut, src = composite_case(rng, dtype, nchw, bgr=True)
    before = batch.copy()
    impl.composite(batch, patches, ys, xs, lut, src, nchw)
    assert batch.tobytes() != before.tobytes()
    impl.restore(batch, base, ys, xs, patches.shape[1], nchw)
    assert batch.tobytes() == before.tobytes()


@pytest.mark.parametrize("nchw", [True, False], ids=["nchw", "nhwc"])
def test_restore_copies_only_the_region(impl, nchw):
    rng = np.random.default_rng(23)
    shape = (3, 9, 10) if nchw else (9, 10, 3)
    base = rng.normal(size=shape).astype(np.float32)
    batch = rng.normal(size=(4,) + shape).astype(np.float32)
    before = batch.copy()
    ys, xs, K = np.array([0, 6, 2]), np.array([7, 0, 3]), 3
    impl.restore(batch, base, ys, xs, K, nchw)
    mask = region_mask(batch.shape, ys, xs, K, nchw)
    np.testing.assert_array_equal(batch[~mask], before[~mask])
    np.testing.assert_array_equal(batch[mask], np.broadcast_to(base, batch.shape)[mask])


def test_public_functions_dispatch():
    rng = np.random.default_rng(29)
    probs = awkward_probs(rng, 2, 9)
    u = awkward_uniforms(rng, probs, 4)
    np.testing.assert_array_equal(kernels.sample_categorical(probs, u), reference_sample(probs, u))
    batch, base, patches, ys, xs, lut, src = composite_case(rng, np.float32, True, False)
    before = batch.copy()
    kernels.composite(batch, patches, ys, xs, lut, src, True)
    assert batch.tobytes() == expected_composite(before, patches, ys, xs, lut, src, True).tobytes()
    kernels.restore(batch, base, ys, xs, patches.shape[1], True)
    assert batch.tobytes() == before.tobytes()


# -- validation -------------------------------------------------------------------------------------------------

def _read_only(a):
    a.flags.writeable = False
    return a


def _sample_args(**change):
    args = dict(probs=np.full((2, 5, 256), 1 / 256, np.float32), uniforms=np.full((2, 3, 5), 0.5, np.float32))
    args.update(change)
    return args


def _composite_args(**change):
    batch, _, patches, ys, xs, lut, src = composite_case(np.random.default_rng(0), np.float32, True, False)
    args = dict(batch=batch, patches=patches, ys=ys, xs=xs, lut=lut, src=src, nchw=True)
    args.update(change)
    return args


def _restore_args(**change):
    batch, base, _, ys, xs, _, _ = composite_case(np.random.default_rng(0), np.uint8, False, False)
    args = dict(batch=batch, base=base, ys=ys, xs=xs, K=4, nchw=False)
    args.update(change)
    return args


def _mixture_args(**change):
    B, S, Q, M, N = 2, 2, 3, 2, 4
    args = dict(hyp=np.full((B, S), 0.5), comp=np.full((B, S, Q, M), 0.5), loc=np.full((B, S, Q, 3, M), 100.0),
                scale=np.full((B, S, Q, 3, M), 2.0), coeff=np.full((B, S, Q, 3, M), 0.5), u_hyp=np.full((B, N), 0.5),
                u_comp=np.full((B, N, Q), 0.5), z=np.zeros((B, N, Q, 3)))
    args.update(change)
    return args


def _overflowing_mixture():
    """Finite inputs: R = 255, then G's mean overflows to +inf while σ·z overflows to −inf, so its draw is NaN."""
    full = np.full((2, 2, 3, 3, 2), 1.0)
    z = np.full((2, 4, 3, 3), -27.0)
    z[..., 0] = 27.0
    return _mixture_args(loc=full * 1.7e308, coeff=full * 1e306, scale=full * 1e308, z=z)


BAD_CALLS = {
    "probs float64": ("sample_categorical", _sample_args(probs=np.full((2, 5, 256), 1 / 256)), "dtype float32"),
    "probs 2-D": ("sample_categorical", _sample_args(probs=np.zeros((5, 256), np.float32)), "3-D"),
    "probs not 256": ("sample_categorical", _sample_args(probs=np.zeros((2, 5, 255), np.float32)), r"\[P, M, 256\]"),
    "uniforms P/M mismatch": ("sample_categorical", _sample_args(uniforms=np.zeros((2, 3, 4), np.float32)),
                              r"\[P, N, M\]"),
    "probs strided": ("sample_categorical", _sample_args(probs=np.zeros((2, 10, 256), np.float32)[:, ::2]),
                      "C-contiguous"),
    "probs list": ("sample_categorical", _sample_args(probs=[[[0.5] * 256]]), "numpy array"),
    "negative prob": ("sample_categorical", _sample_args(probs=np.full((2, 5, 256), -1e-3, np.float32)),
                      "non-negative"),
    "nan prob": ("sample_categorical", _sample_args(probs=np.full((2, 5, 256), np.nan, np.float32)),
                 "non-negative"),
    "overflowing sum": ("sample_categorical", _sample_args(probs=np.full((2, 5, 256), 3e38, np.float32)),
                        "finite row sums"),
    "uniform 1": ("sample_categorical", _sample_args(uniforms=np.ones((2, 3, 5), np.float32)), r"\[0, 1\)"),
    "mixture hyp float32": ("sample_logistic_mixture", _mixture_args(hyp=np.full((2, 2), 0.5, np.float32)),
                            "dtype float64"),
    "mixture comp 3-D": ("sample_logistic_mixture", _mixture_args(comp=np.full((2, 2, 3), 0.5)), "4-D"),
    "mixture comp vs hyp": ("sample_logistic_mixture", _mixture_args(comp=np.full((2, 3, 3, 2), 0.5)),
                            r"comp must have shape \[B, S, Q, M\] = \(2, 2, Q, M\), got \(2, 3, 3, 2\)"),
    "mixture loc channels": ("sample_logistic_mixture", _mixture_args(loc=np.full((2, 2, 3, 2, 2), 1.0)),
                             r"loc must have shape \[B, S, Q, 3, M\] = \(2, 2, 3, 3, 2\)"),
    "mixture u_comp shape": ("sample_logistic_mixture", _mixture_args(u_comp=np.full((2, 4, 2), 0.5)),
                             r"u_comp must have shape \[B, N, Q\] = \(2, 4, 3\)"),
    "mixture z strided": ("sample_logistic_mixture", _mixture_args(z=np.zeros((2, 4, 3, 6))[..., ::2]), "C-contiguous"),
    "mixture loc list": ("sample_logistic_mixture", _mixture_args(loc=[1.0]), "numpy array"),
    "mixture negative weight": ("sample_logistic_mixture", _mixture_args(hyp=np.array([[0.5, -0.1], [1.0, 0.0]])),
                                "non-negative"),
    "mixture zero row": ("sample_logistic_mixture", _mixture_args(comp=np.zeros((2, 2, 3, 2))), "positive row sums"),
    "mixture scale zero": ("sample_logistic_mixture", _mixture_args(scale=np.zeros((2, 2, 3, 3, 2))), "scale > 0"),
    "mixture loc nan": ("sample_logistic_mixture", _mixture_args(loc=np.full((2, 2, 3, 3, 2), np.nan)), "finite"),
    "mixture uniform 1": ("sample_logistic_mixture", _mixture_args(u_comp=np.ones((2, 4, 3))), r"\[0, 1\)"),
    "mixture z inf": ("sample_logistic_mixture", _mixture_args(z=np.full((2, 4, 3, 3), np.inf)), "z must be finite"),
    "mixture nan draw": ("sample_logistic_mixture", _overflowing_mixture(), "NaN"),
    "batch float64": ("composite", _composite_args(batch=np.zeros((5, 3, 11, 13))), "float32 or uint8"),
    "batch 3-D": ("composite", _composite_args(batch=np.zeros((3, 11, 13), np.float32)), "4-D"),
    "batch strided": ("composite", _composite_args(batch=np.zeros((5, 3, 11, 26), np.float32)[..., ::2]),
                      "C-contiguous"),
    "batch read-only": ("composite", _composite_args(batch=_read_only(np.zeros((5, 3, 11, 13), np.float32))),
                        "writeable"),
    "lut dtype": ("composite", _composite_args(lut=np.zeros((3, 256), np.uint8)), "same as batch"),
    "lut shape": ("composite", _composite_args(lut=np.zeros((3, 255), np.float32)), r"\[C, 256\]"),
    "patches not square": ("composite", _composite_args(patches=np.zeros((4, 4, 3, 3), np.uint8)), r"\[B, K, K, 3\]"),
    "patches vs ys": ("composite", _composite_args(patches=np.zeros((3, 4, 4, 3), np.uint8)), "items but ys"),
    "too many patches": ("composite", _composite_args(patches=np.zeros((6, 4, 4, 3), np.uint8),
                                                      ys=np.zeros(6, np.int64), xs=np.zeros(6, np.int64)),
                         "batch only"),
    "ys int32": ("composite", _composite_args(ys=np.zeros(4, np.int32)), "dtype int64"),
    "xs length": ("composite", _composite_args(xs=np.zeros(3, np.int64)), "same length"),
    "y too large": ("composite", _composite_args(ys=np.array([0, 0, 8, 0])), r"\(y, x\) = \(8, \d+\) of item 2"),
    "x negative": ("composite", _composite_args(xs=np.array([0, -1, 0, 0])), "outside"),
    "K larger than image": ("composite", _composite_args(patches=np.zeros((4, 12, 12, 3), np.uint8)), "K=12"),
    "src shape": ("composite", _composite_args(src=np.array([0, 1])), r"src must have shape \(3,\)"),
    "src value": ("composite", _composite_args(src=np.array([0, 3, 1])), "got 3"),
    "nchw batch as nhwc": ("composite", _composite_args(nchw=False), r"min\(H, W\) = 3"),
    "base shape": ("restore", _restore_args(base=np.zeros((11, 13, 4), np.uint8)), r"batch.shape\[1:\]"),
    "base dtype": ("restore", _restore_args(base=np.zeros((11, 13, 3), np.float32)), "uint8 \\(same as batch\\)"),
    "restore K zero": ("restore", _restore_args(K=0), "K=0"),
    "restore x too large": ("restore", _restore_args(xs=np.array([0, 10, 0, 0])), "W-K = 9"),
    "restore too many ys": ("restore", _restore_args(ys=np.zeros(6, np.int64), xs=np.zeros(6, np.int64)),
                            "batch only"),
}


@pytest.mark.parametrize("case", BAD_CALLS, ids=list(BAD_CALLS))
def test_bad_arguments_raise_value_error(impl, case):
    fn, args, match = BAD_CALLS[case]
    batch = args.get("batch")
    before = batch.copy() if isinstance(batch, np.ndarray) else None
    with pytest.raises(ValueError, match=match):
        getattr(impl, fn)(*args.values())
    if before is not None:
        assert batch.tobytes() == before.tobytes()  # validation precedes every write


@pytest.mark.parametrize("case", BAD_CALLS, ids=list(BAD_CALLS))
def test_bad_arguments_same_message_on_both_backends(ext, case):
    fn, args, _ = BAD_CALLS[case]
    messages = []
    for impl in (ext, kernels.numpy_impl):
        with pytest.raises(ValueError) as info:
            getattr(impl, fn)(*args.values())
        messages.append(str(info.value))
    assert messages[0] == messages[1]
