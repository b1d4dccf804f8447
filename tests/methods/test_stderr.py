"""Monte-Carlo standard errors of the maps: calibrated (two seeds differ by what they say), exact where they must be."""
import numpy as np
import pytest

import onnx_builders
from conftest import scene
from infolens import Explainer, OnnxClassifier, Preprocessing, load_sampler, measures
from infolens.methods import patch_grid

H = W = 24


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    # seed 2: p(Y|x) = 0.77, 0.13, 0.06, … on the scene, so the top-3 classes all move under in-filling
    path = onnx_builders.classifier(tmp_path_factory.mktemp("se") / "clf.onnx", H, W, seed=2)
    return OnnxClassifier(path, Preprocessing(mean=list(onnx_builders.MEAN), std=list(onnx_builders.STD),
                                              resize="none"))


def _z(a, b):
    """Differences of two independent explanations in units of their combined standard error, per pixel."""
    out = {}
    for name in ("pmi", "ig"):
        out[name] = ((a.maps[name] - b.maps[name]) / np.hypot(a.stderr[name], b.stderr[name])).ravel()
    return out


def test_two_seeds_differ_by_their_standard_errors(clf):
    """Over pixels, (map_seed1 − map_seed2) / √(se1² + se2²) is standard normal: ≈ 95 % within ±1.96.  Too small
    errors (e.g. 1/N instead of 1/√N) put far fewer inside, too large ones (no 1/√N, or a plain mean of the covering
    patches' errors instead of √Σse²/c) nearly all.  Measured: 0.943 (PMI) and 0.950 (IG); the delta method is an
    approximation, and with a class near probability 0 (a saturated model) PMI covers less (0.89 at N = 16)."""
    ex = Explainer(clf, load_sampler("noise", K=4), batch_size=50)
    img = scene(H, W)
    inside = {"pmi": [], "ig": []}
    for seed in range(4):
        a = ex.explain(img, classes="top3", stride=2, samples=16, seed=2 * seed)
        b = ex.explain(img, classes="top3", stride=2, samples=16, seed=2 * seed + 1)
        for name, z in _z(a, b).items():
            assert np.isfinite(z).all()
            inside[name].append(np.abs(z) < 1.96)
    for name, hits in inside.items():
        fraction = np.concatenate(hits).mean()
        assert 0.91 < fraction < 0.985, (name, fraction)


def test_stderr_is_the_delta_method_per_patch(clf):
    """Per patch, against the formula written out: |f'(p̄)| · sd(p_i) / √N from the classifier's outputs."""
    ex = Explainer(clf, load_sampler("noise", K=6), batch_size=9)
    img = scene(H, W)
    e = ex.explain(img, classes=[1, 3], stride=6, samples=5, seed=7)
    ys, xs = patch_grid(H, W, 6, 6)
    sampler = load_sampler("noise", K=6)
    from infolens.samplers.rng import streams

    fills = sampler.sample(img, ys, xs, 5, streams(7, np.arange(len(ys))))
    images = np.repeat(img[None], len(ys) * 5, axis=0).reshape(len(ys), 5, H, W, 3)
    for p, (y, x) in enumerate(zip(ys, xs)):
        images[p, :, y:y + 6, x:x + 6] = fills[p]
    probs = clf.predict_images(images.reshape(-1, H, W, 3)).reshape(len(ys), 5, -1)
    p0, pbar = e.probs, probs.mean(1)
    se_pmi = probs[:, :, [1, 3]].std(1, ddof=1) / np.sqrt(5) / (pbar[:, [1, 3]] * np.log(2))
    s = (probs * (p0 / pbar)[:, None, :]).sum(-1) / np.log(2)
    se_ig = s.std(1, ddof=1) / np.sqrt(5)
    # stride = K: every pixel has one patch, so the pixel's error is its patch's
    np.testing.assert_allclose(e.pmi_stderr, measures.patches_to_pixels(se_pmi.T, ys, xs, 6, (H, W)), rtol=2e-4)
    np.testing.assert_allclose(e.ig_stderr, measures.patches_to_pixels(se_ig, ys, xs, 6, (H, W)), rtol=2e-4)


def test_deterministic_sampler_has_no_error_and_one_random_sample_cannot_tell(clf):
    img = scene(H, W)
    gray = Explainer(clf, load_sampler("gray", K=4)).explain(img, stride=4, samples=8)
    assert (gray.pmi_stderr == 0).all() and (gray.ig_stderr == 0).all()
    one = Explainer(clf, load_sampler("noise", K=4)).explain(img, stride=4, samples=1)
    assert np.isnan(one.pmi_stderr).all() and np.isnan(one.ig_stderr).all()


def test_mask_insignificant_greys_out_pixels_within_two_standard_errors(clf, tmp_path):
    import cv2

    img = scene(H, W)
    e = Explainer(clf, load_sampler("noise", K=4)).explain(img, classes="top1", stride=4, samples=6, seed=1)
    hidden = np.abs(e.pmi[0]) < 2 * e.pmi_stderr[0]
    assert 0 < hidden.sum() < hidden.size, "the test needs both significant and insignificant pixels"
    files = {}
    for masked in (False, True):
        out = tmp_path / str(masked)
        files[masked] = e.save(str(out), mask_insignificant=masked)
    c = int(e.classes[0])
    plain, masked = (cv2.imread(files[m][f"pmi_{c}"]) for m in (False, True))
    f = -(-448 // H)  # the overlay's upscaling: the map starts 30 px below the title
    grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2BGR)
    at = (slice(30 + f // 2, 30 + H * f, f), slice(f // 2, W * f, f))  # one pixel per map pixel
    np.testing.assert_array_equal(masked[at][hidden], grey[hidden])
    np.testing.assert_array_equal(masked[at][~hidden], plain[at][~hidden])
    assert (plain[at][hidden] != grey[hidden]).any()
