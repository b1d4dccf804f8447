"""Held-out NLL baselines (export/sampler_quality.py) and the shipped PatchSamplers through the runtime.

The PatchSampler's exact likelihood itself is tested with the runtime's sampler tests and in test_patchsampler.py.
"""
import json
import math
import os

import cv2
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from conftest import REPO
from infolens import load_sampler, samplers
from infolens.samplers.rng import streams
from infolens.export import data, infill_figure, sampler_quality as ev

ROOT = REPO
MODELS = os.path.join(ROOT, "models")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


def _gaussian(K, l, seed=0):
    """A GaussianSampler with a random well-conditioned fit around grey 128."""
    D = (K + 2 * l) ** 2 * 3
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, D))
    cov = 30 * (a @ a.T / D + np.eye(D))
    return samplers.GaussianSampler(K, 128 + rng.normal(0, 5, D), cov, l)


def test_gaussian_nll_is_the_joint_density_per_subpixel():
    rng = np.random.default_rng(1)
    D = 12
    a = rng.normal(size=(D, D))
    chol = np.linalg.cholesky(a @ a.T + np.eye(D))
    mu, x = rng.normal(0, 3, (4, D)), rng.normal(0, 3, (4, D))
    want = np.mean([-multivariate_normal.logpdf(x[i], mu[i], chol @ chol.T) for i in range(4)]) / math.log(2) / D
    assert ev.gaussian_nll_bits(x, mu, chol).mean() == pytest.approx(want, rel=1e-10)


def test_gaussian_conditional_is_what_sample_draws():
    K, l = 2, 1
    g = _gaussian(K, l)
    image = np.random.default_rng(2).integers(90, 170, (10, 12, 3), dtype=np.uint8)
    ys, xs = np.array([0, 4, 8]), np.array([0, 5, 10])  # corners: part of their ring is outside the image
    cuts = [(1, 0, 1, 0), (0, 0, 0, 0), (0, 1, 0, 1)]  # rows/columns of each window outside: top, bottom, left, right
    drawn = g.sample(image, ys, xs, 3, [np.random.Generator(np.random.Philox(i)) for i in range(3)])
    rings = samplers.windows(samplers.pad(image, l), ys, xs, K + 2 * l)
    for i in range(3):
        mu, chol = g.conditional(rings[i:i + 1], cut=cuts[i])
        assert mu.shape == (1, K * K * 3) and chol.shape == (K * K * 3, K * K * 3)
        z = np.random.Generator(np.random.Philox(i)).standard_normal((3, K * K * 3))
        want = np.clip(np.rint(mu[0] + z @ chol.T), 0, 255).astype(np.uint8).reshape(3, K, K, 3)
        np.testing.assert_array_equal(drawn[i], want)
    with pytest.raises(Exception, match="fitted"):
        samplers.GaussianSampler(K).conditional(np.zeros((1, 4, 4, 3), np.uint8))


def test_gaussian_border_patches_condition_on_the_ring_inside_the_image_only():
    """The conditional of a corner patch is the textbook one given the ring pixels that exist (computed here from
    the fit's mean and covariance), whatever the padding holds; on a bright image the border in-fills are as bright
    as the interior ones (conditioning on zero padding made them dark)."""
    K, l = 2, 1
    g = _gaussian(K, l)
    w = K + 2 * l
    image = np.full((8, 8, 3), 200, np.uint8)
    rings = samplers.windows(samplers.pad(image, l), np.array([0, 3]), np.array([0, 3]), w)
    mu, chol = g.conditional(rings[:1], cut=(1, 0, 1, 0))
    mean, cov = g._fit
    idx = np.arange(w * w * 3).reshape(w, w, 3)
    p = idx[l:l + K, l:l + K].ravel()
    ring = np.ones((w, w), bool)
    ring[l:l + K, l:l + K] = False
    ring[0, :] = ring[:, 0] = False  # the top row and left column are outside the image
    r = idx[ring].ravel()
    s_rr = cov[np.ix_(r, r)] + 1e-3 * np.eye(len(r)) * np.trace(cov) / len(cov)
    want = mean[p] + cov[np.ix_(p, r)] @ np.linalg.solve(s_rr, rings[0].reshape(-1)[r] - mean[r])
    np.testing.assert_allclose(mu[0], want, rtol=1e-9)
    polluted = rings.copy()
    polluted[0, 0, :] = 255  # padding values must not matter
    np.testing.assert_array_equal(g.conditional(polluted[:1], cut=(1, 0, 1, 0))[0], mu)
    interior, _ = g.conditional(rings[1:], cut=(0, 0, 0, 0))
    zero_padded, _ = g.conditional(rings[:1], cut=(0, 0, 0, 0))  # the old way: the padding read as black pixels
    assert abs(mu.mean() - interior.mean()) < abs(zero_padded.mean() - interior.mean()) / 3


def test_draw_marks_padding_and_cuts_the_runtime_ring():
    """R = row, G = column, B = 255 inside the image: windows name their position, padding is B = 0."""
    K, l = 4, 2
    y, x = np.mgrid[0:30, 0:37]
    image = np.stack([y, x, np.full_like(y, 255)], -1).astype(np.uint8)
    windows, owner, inside = ev.draw([("coords", image)], K, 300, seed=3)
    np.testing.assert_array_equal(windows, data.heldout_windows([("coords", image)], K, 300, seed=3)[0])
    assert (owner == 0).all()
    np.testing.assert_array_equal(inside, windows[..., 2] == 255)
    assert (~inside).any(axis=(1, 2)).mean() > 0.3
    ys, xs = windows[:, K, K, 0].astype(np.int64), windows[:, K, K, 1].astype(np.int64)
    ring = samplers.windows(samplers.pad(image, l), ys, xs, K + 2 * l)
    np.testing.assert_array_equal(windows[:, K - l : 2 * K + l, K - l : 2 * K + l], ring)


@pytest.mark.parametrize("mu,sigma", [(128.3, 9.0), (2.0, 30.0), (250.0, 4.0), (-40.0, 3.0), (127.5, 0.2)])
def test_binned_gaussian_is_a_distribution_over_0_to_255(mu, sigma):
    p = 2.0 ** -ev.binned_gaussian_bits(np.arange(256, dtype=np.uint8), mu, sigma)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)


def test_mean_baseline_fits_sigma_and_scores_a_flat_image_far_below_8():
    K, colour, sigma = 4, np.array([200, 30, 90]), np.array([4.0, 6.0, 8.0])
    rng = np.random.default_rng(4)
    noisy = [np.clip(np.rint(colour + rng.normal(size=(64, 64, 3)) * sigma), 0, 255).astype(np.uint8)
             for _ in range(2)]
    windows, _, inside = ev.draw([("a", noisy[0]), ("b", noisy[1])], K, 1000, seed=0)
    fitted = ev.fit_sigma(windows, inside, K)
    np.testing.assert_allclose(fitted, sigma, rtol=0.08)

    flat = np.broadcast_to(colour.astype(np.uint8), (40, 40, 3)).copy()
    windows, _, inside = ev.draw([("flat", flat)], K, 300, seed=0)
    assert not inside.all()  # border windows: zero padding is excluded from the context mean
    np.testing.assert_array_equal(ev.context_mean(windows, inside, K), np.broadcast_to(colour, (300, 3)))
    bits = ev.mean_bits(windows, inside, K, fitted).mean()
    exact = np.mean([-math.log2(math.erf(0.5 / s / math.sqrt(2))) for s in fitted])  # the central bin's mass
    assert bits == pytest.approx(exact, abs=1e-6) and bits < 4.5


def test_histogram_baseline_approaches_the_entropy():
    rng = np.random.default_rng(5)
    support = rng.choice(256, 20, replace=False)
    p = rng.dirichlet(np.ones(20))
    entropy = -(p * np.log2(p)).sum()
    images = [support[rng.choice(20, size=(120, 120, 3), p=p)].astype(np.uint8) for _ in range(4)]
    named = [(str(i), im) for i, im in enumerate(images)]
    hist = ev.fit_histogram(ev.draw(named[:2], 4, 1500, seed=0)[0], 4)
    np.testing.assert_allclose(hist.sum(1), 1.0)
    bits = ev.histogram_bits(ev.draw(named[2:], 4, 1000, seed=1)[0], 4, hist).mean()
    assert bits == pytest.approx(entropy, abs=0.05)


def test_table_scores_every_model_on_the_same_windows(tmp_path):
    """nll_table on photos it can check: a PatchSampler file is scored by its exact likelihood, per photo too."""
    K = 8
    rng = np.random.default_rng(6)
    photos = [(f"p{i}", cv2.resize(rng.integers(0, 256, (7, 7, 3), dtype=np.uint8), (60, 60),
                                   interpolation=cv2.INTER_CUBIC)) for i in range(4)]
    for name in (f"patchsampler_k{K}.onnx", f"gaussian_k{K}.npz", ev.CATEGORICAL.format(K=K)):
        os.symlink(os.path.join(MODELS, name), tmp_path / name)
    table, per_photo, fitted = ev.nll_table(K, photos[:2], photos[2:], str(tmp_path), per_photo=20)
    assert list(table) == ["patchsampler", "patchsampler_categorical", "gaussian", "gaussian_marginals", "mean",
                           "histogram", "uniform"]
    assert set(per_photo) == {"p0", "p1"} and table["uniform"] == 8.0
    windows, owner, _ = ev.draw(photos[:2], K, 20)
    own = -samplers.PatchSampler(str(tmp_path / f"patchsampler_k{K}.onnx")).log2prob(windows) / (3 * K * K)
    assert table["patchsampler"] == pytest.approx(own.mean(), abs=1e-4)
    assert per_photo["p1"]["patchsampler"] == pytest.approx(own[owner == 1].mean(), abs=1e-4)
    assert np.mean([v["gaussian"] for v in per_photo.values()]) == pytest.approx(table["gaussian"], abs=1e-4)
    summary = ev.summary(table, per_photo)
    assert summary["worst_photo"]["uniform"][1] == 8.0 and summary["patchsampler_beats_gaussian_on"].endswith("of 2 photos")
    assert len(fitted["mean_sigma_rgb"]) == 3


@pytest.mark.skipif(not all(os.path.isdir(os.path.join(SHARED, d)) for d in ("bsds500", "coco128")),
                    reason="needs ../shared/data/bsds500 and coco128")
@pytest.mark.slow
def test_shipped_cards_table_reproduces():
    K = 16
    with open(os.path.join(MODELS, f"patchsampler_k{K}.json")) as f:
        card = json.load(f)
    folders = [os.path.join(SHARED, d) for d in ("bsds500", "coco128")]
    train, heldout = (data.input_space(p) for p in data.split(data.load_photos(folders)))
    table, _, _ = ev.nll_table(K, heldout, train, MODELS, per_photo=100)
    for name, bits in table.items():
        assert bits == pytest.approx(card["nll_bits_per_subpixel"][name], abs=2e-3), name
    assert table["patchsampler"] < table["gaussian"] < table["gaussian_marginals"] < table["histogram"]


@pytest.mark.parametrize("K", [8, 16])
def test_shipped_patchsampler_samples_through_the_runtime(K):
    image = infill_figure.coffee()
    ys, xs = np.array([0, 50, 224 - K]), np.array([0, 100, 224 - K])
    sampler = load_sampler("patchsampler", K=K)
    assert sampler.K == K
    fills = sampler.sample(image, ys, xs, 2, streams(0, np.arange(3)))
    assert fills.shape == (3, 2, K, K, 3) and fills.dtype == np.uint8
    np.testing.assert_array_equal(fills, sampler.sample(image, ys, xs, 2, streams(0, np.arange(3))))
    assert not np.array_equal(fills[:, 0], fills[:, 1])


def test_gaussian_sampler_is_safe_to_share_between_threads():
    """An own-fit sampler (no shipped fit for this K) used on two images from two threads draws what it draws one
    image at a time: nothing about one image leaks into the other's draws."""
    from concurrent.futures import ThreadPoolExecutor

    K = 3
    images = [np.random.default_rng(s).integers(0, 256, (12, 13, 3), dtype=np.uint8) for s in range(2)]
    ys, xs = np.array([0, 4, 9]), np.array([0, 5, 10])

    def draw(sampler, i):
        return sampler.sample(images[i % 2], ys, xs, 2, streams(i, np.arange(3)))

    alone = [draw(samplers.GaussianSampler(K), i) for i in range(8)]
    shared = samplers.GaussianSampler(K)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: draw(shared, i), range(8)))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
