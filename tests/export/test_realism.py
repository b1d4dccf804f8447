"""export/realism.py: the patch layout, compositing, the Fréchet distance and the independent feature network."""
import numpy as np
import pytest
import torch

from infolens import load_sampler
from infolens.export import realism


def test_chosen_patches_never_share_an_edge():
    ys, xs = realism.chosen_patches(224, 224, 8, np.random.default_rng(0))
    assert len(ys) == (28 * 28 // 2) // 2 and (ys % 8 == 0).all() and (xs % 8 == 0).all()
    cells = set(zip((ys // 8).tolist(), (xs // 8).tolist()))
    assert len(cells) == len(ys)
    assert not any((r + 1, c) in cells or (r, c + 1) in cells for r, c in cells)
    again = realism.chosen_patches(224, 224, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(ys, again[0])


def test_infilled_changes_exactly_the_chosen_patches():
    image = np.full((32, 40, 3), 77, np.uint8)
    ys, xs = np.array([0, 8, 24]), np.array([8, 24, 32])
    out = realism.infilled(load_sampler("black", 8), image, ys, xs)
    changed = (out != image).any(-1)
    want = np.zeros((32, 40), bool)
    for y, x in zip(ys, xs):
        want[y : y + 8, x : x + 8] = True
    np.testing.assert_array_equal(changed, want)


def test_frechet_distance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 5))
    assert realism.frechet(a, a) == pytest.approx(0, abs=1e-6)
    shifted = realism.frechet(a, a + 2.0)
    assert shifted == pytest.approx(5 * 4.0, rel=1e-6)  # equal covariances: |Δμ|² only
    assert realism.frechet(a, 3 * a) > realism.frechet(a, 1.5 * a) > 0.5


def test_feature_network_is_lite2_and_sees_content():
    torch.set_num_threads(1)
    net = realism.feature_network()
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    f = realism.features(net, images, batch=1)
    assert f.shape == (2, 1280) and np.isfinite(f).all()
    assert not np.allclose(f[0], f[1])
    np.testing.assert_allclose(realism.features(net, images[:1]), f[:1], rtol=1e-5, atol=1e-5)
