"""The logistic-mixture head's sampling kernel (C++ = numpy, bit for bit; draws follow the density) and its exact
scoring function (equal to a direct evaluation of DESIGN §3's formula; stable far in the tails)."""
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from infolens import kernels
from infolens.samplers import logistic_mixture_log2prob
from infolens.samplers.mixture import log_bin

ARGS = ("hyp", "comp", "loc", "scale", "coeff", "u_hyp", "u_comp", "z")


# -- inputs and the literal contract ----------------------------------------------------------------------------

def awkward_mixture(rng, B, S, Q, M, N):
    """The kernel's eight float64 arguments with the hard cases mixed in: exact zero and unnormalized weights,
    one-hot rows, uniforms 0, just below 1 and exactly on cdf thresholds, σ from 1e-6 to 1e4, means far outside
    0..255 and near the clip, half-integer means with z = 0 (rint ties), large coupling slopes."""
    hyp = rng.dirichlet(np.full(S, 0.7), B) * rng.uniform(0.5, 2, (B, 1))
    comp = rng.dirichlet(np.full(M, 0.7), (B, S, Q)) * rng.uniform(0.5, 2, (B, S, Q, 1))
    if S > 1:
        hyp[::3, 0] = 0
    if M > 1:
        comp[:, :, ::2, -1] = 0
        comp[:, :, 1::5] = 0
        comp[:, :, 1::5, 0] = 3.0
    shape = (B, S, Q, 3, M)
    loc = rng.normal(128, 90, shape)
    loc[..., ::4, :, :] = rng.choice([-1e6, -40.0, -0.5, 0.49, 254.5, 255.6, 300.0, 1e6], shape)[..., ::4, :, :]
    loc[..., 1::4, :, :] = (rng.integers(-2, 258, shape) + 0.5)[..., 1::4, :, :]
    scale = np.exp(rng.uniform(math.log(1e-6), math.log(1e4), shape))
    scale[..., 2::4, :, :] = rng.uniform(0.5, 4, shape)[..., 2::4, :, :]
    coeff = rng.uniform(-3, 3, shape)
    coeff[..., 1::4, :, :] = rng.choice([0.0, 0.5, 1.0, -1.0], shape)[..., 1::4, :, :]
    u_hyp = rng.random((B, N))
    u_comp = rng.random((B, N, Q))
    if N >= 3:
        u_hyp[:, 0], u_comp[:, 0] = 0, 0
        u_hyp[:, 1], u_comp[:, 1] = np.nextafter(1, 0), np.nextafter(1, 0)
        cdf = np.cumsum(hyp, 1)
        u_hyp[:, 2] = cdf[:, S // 2 - 1] / cdf[:, -1] if S > 1 else 0.5  # exactly on a threshold
    u = np.clip(rng.random((B, N, Q, 3)), 1e-12, 1 - 1e-12)
    z = np.log(u / (1 - u))
    z[:, ::3, 1::4] = 0.0  # with the half-integer means: v exactly k + 0.5
    z[:, 1::5, ::7] = np.log(1e12)
    return dict(zip(ARGS, (hyp, comp, loc, scale, coeff, u_hyp, u_comp, z)))


def _choose(w, u):
    total = 0.0
    for x in w:
        total += x
    t, s = u * total, 0.0
    for j, x in enumerate(w[:-1]):
        s += x
        if s > t:
            return j
    return len(w) - 1


def _level(v):
    """rint half-to-even (Python's round), then clip to 0..255."""
    return 255.0 if v > 1e9 else 0.0 if v < -1e9 else float(min(max(round(v), 0), 255))


def reference_draws(a):
    """The contract of kernels.sample_logistic_mixture written out literally with Python floats."""
    B, S = a["hyp"].shape
    Q, M = a["comp"].shape[2:]
    N = a["u_hyp"].shape[1]
    out = np.zeros((B, N, Q, 3), np.uint8)
    for b in range(B):
        for n in range(N):
            s = _choose(a["hyp"][b].tolist(), float(a["u_hyp"][b, n]))
            for q in range(Q):
                m = _choose(a["comp"][b, s, q].tolist(), float(a["u_comp"][b, n, q]))
                loc, sc, k = (a[x][b, s, q, :, m].tolist() for x in ("loc", "scale", "coeff"))
                z = a["z"][b, n, q].tolist()
                r = _level(loc[0] + sc[0] * z[0])
                g = _level((loc[1] + k[0] * r) + sc[1] * z[1])
                bl = _level(((loc[2] + k[1] * r) + k[2] * g) + sc[2] * z[2])
                out[b, n, q] = (r, g, bl)
    return out


# -- the kernel: contract, C++ = numpy --------------------------------------------------------------------------

def test_mixture_kernel_follows_definition(impl):
    a = awkward_mixture(np.random.default_rng(1), B=4, S=3, Q=5, M=4, N=12)
    np.testing.assert_array_equal(impl.sample_logistic_mixture(**a), reference_draws(a))


@pytest.mark.parametrize("B,S,Q,M,N", [(3, 2, 16, 3, 8), (2, 16, 64, 5, 4), (5, 1, 7, 1, 9), (1, 4, 1, 2, 300),
                                       (0, 2, 3, 2, 4), (2, 2, 0, 2, 4), (2, 2, 3, 2, 0)])
def test_mixture_kernel_ext_equals_numpy(ext, B, S, Q, M, N):
    for seed in range(25):
        a = awkward_mixture(np.random.default_rng(seed * 100 + B * 7 + M), B, S, Q, M, N)
        got, want = ext.sample_logistic_mixture(**a), kernels.numpy_impl.sample_logistic_mixture(**a)
        assert got.dtype == want.dtype == np.uint8 and got.shape == want.shape == (B, N, Q, 3)
        np.testing.assert_array_equal(got, want)


def test_mixture_kernel_rounds_half_to_even_and_couples_the_rounded_values(impl):
    """R = rint(10.4) = 10; G = rint(0.3 + 1·R) = 10 (11 if R entered unrounded); B = rint(0.2 + 0.5·R + 1·G) = 15
    (16 unrounded); half-integers go to the even neighbour; values clip to 0..255."""
    loc = np.array([[10.4, 0.3, 0.2], [2.5, 3.5, -0.5], [255.4, 254.5, 999.0]])  # per case: R, G, B means
    coeff = np.array([[1.0, 0.5, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # per case: α, β, γ
    a = dict(hyp=np.ones((3, 1)), comp=np.ones((3, 1, 1, 1)), loc=loc.reshape(3, 1, 1, 3, 1),
             scale=np.full((3, 1, 1, 3, 1), 1e-9), coeff=coeff.reshape(3, 1, 1, 3, 1), u_hyp=np.full((3, 1), 0.5),
             u_comp=np.full((3, 1, 1), 0.5), z=np.zeros((3, 1, 1, 3)))
    out = impl.sample_logistic_mixture(**a)[:, 0, 0]
    np.testing.assert_array_equal(out, [[10, 10, 15], [2, 4, 0], [255, 254, 255]])


def test_mixture_kernel_never_picks_zero_weight(impl):
    rng = np.random.default_rng(4)
    a = awkward_mixture(rng, B=6, S=4, Q=8, M=3, N=64)
    a["hyp"][:, 1::2] = 0
    a["comp"][..., 1] = 0
    a["comp"][..., 0] += 0.1
    # every (s, m) gets its own far-apart, sharp R so the draw names the choice
    a["loc"][..., 0, :] = 10 + 60 * np.arange(4)[:, None, None] + 20 * np.arange(3)
    a["scale"][..., 0, :] = 1e-3
    r = impl.sample_logistic_mixture(**a)[..., 0].astype(int)
    s, m = (r - 10) // 60, (r - 10) % 60 // 20
    assert (s % 2 == 0).all() and (m != 1).all()
    assert len(np.unique(s[:, :, 0])) == 2  # both allowed hypotheses do occur


# -- the kernel: draws follow the density -----------------------------------------------------------------------

def bin_mass(v, mu, sigma):
    """L(v; μ, σ) straight from DESIGN §3: F((v+½−μ)/σ) − F((v−½−μ)/σ), the edge bins taking the tails."""
    hi = np.where(v >= 255, 1.0, expit((v + 0.5 - mu) / sigma))
    lo = np.where(v <= 0, 0.0, expit((v - 0.5 - mu) / sigma))
    return hi - lo


def chi_square_p(observed_keys, cell_keys, cell_probs, n):
    """p-value of observed samples (int keys) against exact cell probabilities; cells expecting < 5 are pooled."""
    keys, counts = np.unique(observed_keys, return_counts=True)
    big = cell_probs * n >= 5
    expected = cell_probs[big] * n
    index = {k: i for i, k in enumerate(cell_keys[big])}
    obs = np.zeros(len(expected) + 1)
    for k, c in zip(keys.tolist(), counts.tolist()):
        obs[index.get(k, len(expected))] += c
    exp = np.append(expected, n - expected.sum())
    return stats.chisquare(obs, exp).pvalue


def pixel_joint(a, q):
    """Exact p(R, G, B) of pixel q of row 0: keys r·65536 + g·256 + b and their probabilities (mass ≥ 1e-14)."""
    hyp, comp = a["hyp"][0] / a["hyp"][0].sum(), a["comp"][0, :, q]
    v = np.arange(256.0)
    keys, probs = [], []
    for s in range(comp.shape[0]):
        w = comp[s] / comp[s].sum()
        for m in range(len(w)):
            loc, sc, k = (a[x][0, s, q, :, m] for x in ("loc", "scale", "coeff"))
            p_r = hyp[s] * w[m] * bin_mass(v, loc[0], sc[0])  # [256]
            p_rg = p_r[:, None] * bin_mass(v[None, :], loc[1] + k[0] * v[:, None], sc[1])  # [r, g]
            r, g = np.nonzero(p_rg > 1e-14)
            p_b = bin_mass(v[None, :], (loc[2] + k[1] * r + k[2] * g)[:, None], sc[2])  # [pairs, b]
            keys.append(((r * 65536 + g * 256)[:, None] + np.arange(256)).ravel())
            probs.append((p_rg[r, g][:, None] * p_b).ravel())
    keys, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return keys, np.bincount(inverse, np.concatenate(probs))


def chi_square_case():
    """Two hypotheses (dark and bright), two pixels, two components per pixel with different weights per
    hypothesis and pixel, nonzero α, β, γ (slopes up to 1.8), σ from 0.5 to 4 grey levels; 200,000 draws."""
    a = dict(hyp=np.array([[0.35, 0.65]]),
             comp=np.array([[[[0.3, 0.7], [0.8, 0.2]], [[0.6, 0.4], [0.25, 0.75]]]]))
    loc = np.zeros((1, 2, 2, 3, 2))
    loc[0, :, :, 0] = [[[60, 80], [65, 90]], [[160, 185], [150, 175]]]
    loc[0, :, :, 1] = [[[20, -10], [5, 30]], [[-60, 10], [-20, -90]]]
    loc[0, :, :, 2] = [[[40, -60], [-5, 20]], [[-30, 60], [20, 5]]]
    coeff = np.zeros_like(loc)
    coeff[0, :, :, 0] = [[[0.9, 1.8], [1.2, 0.7]], [[1.1, 0.6], [0.8, 1.5]]]  # α
    coeff[0, :, :, 1] = [[[-0.4, 0.3], [0.5, -0.2]], [[0.2, -0.3], [-0.5, 0.4]]]  # β
    coeff[0, :, :, 2] = [[[0.7, 1.6], [0.4, 0.9]], [[1.2, 0.8], [1.4, 0.3]]]  # γ
    scale = np.zeros_like(loc)
    scale[0, :, :, 0] = [[[2.0, 3.0], [1.5, 4.0]], [[2.5, 1.0], [3.5, 2.0]]]
    scale[0, :, :, 1] = [[[0.5, 1.5], [0.7, 2.0]], [[0.6, 3.0], [1.2, 0.5]]]
    scale[0, :, :, 2] = [[[1.0, 0.6], [2.5, 0.8]], [[0.7, 1.5], [0.5, 2.0]]]
    n = 200_000
    rng = np.random.default_rng(2025)
    u = np.clip(rng.random((1, n, 2, 3)), 1e-12, 1 - 1e-12)
    a.update(loc=loc, scale=scale, coeff=coeff, u_hyp=rng.random((1, n)), u_comp=rng.random((1, n, 2)),
             z=np.log(u / (1 - u)))
    return a, n


@pytest.mark.slow
def test_mixture_kernel_draws_follow_the_density(impl):
    """χ² of 200,000 draws against the exact probabilities: the joint (R, G, B) of each pixel (component choice,
    channel coupling through the rounded values, clipping) and the joint of the two pixels' R (one hypothesis per
    patch, one component per pixel).  Fails with coupling through unrounded values, a per-pixel hypothesis, or a
    component chosen from the wrong hypothesis."""
    a, n = chi_square_case()
    x = impl.sample_logistic_mixture(**a)[0].astype(np.int64)  # [n, 2, 3]
    for q in range(2):
        keys, probs = pixel_joint(a, q)
        assert probs.sum() == pytest.approx(1, abs=1e-9)
        p = chi_square_p(x[:, q, 0] * 65536 + x[:, q, 1] * 256 + x[:, q, 2], keys, probs, n)
        assert p > 1e-4, (q, p)
    v = np.arange(256.0)
    joint = np.zeros((256, 256))
    for s in range(2):
        pixel_r = [sum(a["comp"][0, s, q, m] * bin_mass(v, a["loc"][0, s, q, 0, m], a["scale"][0, s, q, 0, m])
                       for m in range(2)) for q in range(2)]
        joint += a["hyp"][0, s] * np.outer(*pixel_r)
    p = chi_square_p(x[:, 0, 0] * 256 + x[:, 1, 0], np.arange(65536), joint.ravel(), n)
    assert p > 1e-4, p


# -- scoring ----------------------------------------------------------------------------------------------------

def random_outputs(rng, B, S, K, M):
    """float32 outputs with σ ≥ 3, so even a truth at the far end of 0..255 keeps each pixel's mass above 1e-300."""
    shape = (B, S, K, K, 3, M)
    return {"patch_logits": rng.normal(0, 2, (B, S)).astype(np.float32),
            "pixel_logits": rng.normal(0, 2, (B, S, K, K, M)).astype(np.float32),
            "loc": rng.uniform(-30, 285, shape).astype(np.float32),
            "log_scale": rng.uniform(math.log(3), math.log(40), shape).astype(np.float32),
            "coeff": rng.uniform(-0.8, 0.8, shape).astype(np.float32)}


def tail_mass(v, mu, sigma):
    """L(v; μ, σ) as bin_mass, but a bin above the mean as a difference of upper tails 1 − F (no cancellation)."""
    a, b = (v - 0.5 - mu) / sigma, (v + 0.5 - mu) / sigma
    if v <= 0:
        return expit(b)
    if v >= 255:
        return expit(-a)
    return expit(-a) - expit(-b) if a > 0 else expit(b) - expit(a)


def direct_log2prob(out, patches, select):
    """DESIGN §3's formula evaluated the plain way: loops, probabilities (not logs) within a pixel."""
    B, S = out["patch_logits"].shape
    K, M = patches.shape[1], out["pixel_logits"].shape[-1]
    result = np.zeros(B)
    for b in range(B):
        pl = out["patch_logits"][b].astype(np.float64)
        pi = np.exp(pl - pl.max()) / np.exp(pl - pl.max()).sum()
        log_terms = []
        for s in range(S):
            log_p = math.log(pi[s])
            for i in range(K):
                for j in range(K):
                    if select is not None and not select[i, j]:
                        continue
                    lw = out["pixel_logits"][b, s, i, j].astype(np.float64)
                    w = np.exp(lw - lw.max()) / np.exp(lw - lw.max()).sum()
                    r, g, bl = (float(v) for v in patches[b, i, j])
                    total = 0.0
                    for m in range(M):
                        loc, ls, k = (out[x][b, s, i, j, :, m].astype(np.float64)
                                      for x in ("loc", "log_scale", "coeff"))
                        sig = np.exp(ls)
                        mus = (loc[0], loc[1] + k[0] * r, loc[2] + k[1] * r + k[2] * g)
                        total += w[m] * np.prod([tail_mass(v, mu, sg) for v, mu, sg in zip((r, g, bl), mus, sig)])
                    log_p += math.log(total)
            log_terms.append(log_p)
        result[b] = np.logaddexp.reduce(log_terms) / math.log(2)
    return result


@pytest.mark.parametrize("S,M,select", [(2, 3, None), (1, 1, None), (3, 2, "checkerboard")])
def test_log2prob_equals_direct_formula(S, M, select):
    rng = np.random.default_rng(S * 10 + M)
    K, B = 3, 6
    out = random_outputs(rng, B, S, K, M)
    patches = rng.integers(0, 256, (B, K, K, 3), dtype=np.uint8)
    patches[0] = 0
    patches[1] = 255
    patches[2, ..., 0] = np.clip(np.rint(out["loc"][2, 0, ..., 0, 0]), 0, 255)  # a likely R
    sel = None if select is None else np.indices((K, K)).sum(0) % 2 == 0
    got = logistic_mixture_log2prob(out, patches, sel)
    assert got.dtype == np.float64 and got.shape == (B,)
    np.testing.assert_allclose(got, direct_log2prob(out, patches, sel), rtol=1e-9, atol=1e-9)


def test_log2prob_selection_splits_the_sum_for_one_hypothesis():
    """With S = 1 the pixels are independent given the outputs: scores over complementary selections add up."""
    rng = np.random.default_rng(3)
    out = random_outputs(rng, 4, 1, 4, 3)
    patches = rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8)
    sel = np.indices((4, 4)).sum(0) % 2 == 1
    parts = logistic_mixture_log2prob(out, patches, sel) + logistic_mixture_log2prob(out, patches, ~sel)
    np.testing.assert_allclose(parts, logistic_mixture_log2prob(out, patches), rtol=1e-12)


def test_bins_sum_to_one_and_tails_do_not_cancel():
    v = np.arange(256.0)
    for mu, log_s in [(128.0, 1.0), (-40.0, 0.0), (300.0, 2.0), (0.3, -3.0), (254.8, 5.0), (77.7, 9.0)]:
        mass = np.exp(log_bin(v, np.float64(mu), np.float64(log_s)))
        assert mass.sum() == pytest.approx(1.0, abs=1e-12)
    # 199.5 scales above the mean: F differences in float64 would be 0; the upper tails give e^−a·(1 − e^−1)
    a = 199.5
    assert log_bin(np.float64(200), np.float64(0), np.float64(0)) == pytest.approx(-a + math.log(1 - math.exp(-1)),
                                                                                    rel=1e-12)
    assert log_bin(np.float64(0), np.float64(200), np.float64(0)) == pytest.approx(-a, rel=1e-12)  # lower edge
    assert log_bin(np.float64(255), np.float64(0), np.float64(0)) == pytest.approx(-254.5, rel=1e-12)
    assert log_bin(np.float64(3), np.float64(250), np.float64(-1)) == pytest.approx(
        -(250 - 3.5) * math.e + math.log(1 - math.exp(-math.e)), rel=1e-12)
    # far-tail patches keep finite, ordered scores
    out = random_outputs(np.random.default_rng(5), 1, 2, 2, 2)
    out["log_scale"][:] = 0
    out["loc"][:] = 0
    out["coeff"][:] = 0
    far = [logistic_mixture_log2prob(out, np.full((1, 2, 2, 3), v, np.uint8))[0] for v in (100, 200, 254)]
    assert np.isfinite(far).all() and far[0] > far[1] > far[2]
