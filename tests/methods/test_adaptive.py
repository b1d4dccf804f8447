"""Adaptive N: in-fills continue each position's stream, so a patch's values equal a fixed-N run with its final
count; positions stop at the target or the cap; fewer forwards than the fixed N that reaches the same worst case."""
import numpy as np
import pytest

import onnx_builders
from conftest import run_cli, scene
from infolens import Explainer, InfolensError, OnnxClassifier, Preprocessing, load_sampler
from infolens.samplers.rng import streams

H = W = 24


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    path = onnx_builders.classifier(tmp_path_factory.mktemp("ad") / "clf.onnx", H, W, seed=2)
    return OnnxClassifier(path, Preprocessing(mean=list(onnx_builders.MEAN), std=list(onnx_builders.STD),
                                              resize="none"))


@pytest.mark.parametrize("name", ["noise", "gaussian", "patchsampler"])
def test_samplers_continue_their_streams(name, tmp_path):
    model = onnx_builders.patch_sampler(tmp_path / "ps.onnx", 4) if name == "patchsampler" else None
    s = load_sampler(name, K=4, model=model)
    img, ys, xs = scene(H, W), np.array([0, 9, 20]), np.array([3, 17, 0])
    whole = s.sample(img, ys, xs, 7, streams(3, np.arange(3)))
    parts = [s.sample(img, ys, xs, 3, streams(3, np.arange(3))),
             s.sample(img, ys, xs, 4, streams(3, np.arange(3)), start=3)]
    np.testing.assert_array_equal(whole, np.concatenate(parts, axis=1))


def test_each_patch_equals_a_fixed_run_with_its_final_count(clf):
    img = scene(H, W)
    noise = load_sampler("noise", K=4)
    e = Explainer(clf, noise, target_se=0.3, max_samples=32).explain(img, classes="top2", stride=4, samples=4, seed=9)
    counts = e.params["samples_per_position"]
    assert set(counts) > {4} and max(counts) <= 32, counts  # some patches needed more, within the cap
    assert e.forwards == 1 + sum(c * k for c, k in counts.items())
    for c in counts:
        fixed = Explainer(clf, noise).explain(img, classes="top2", stride=4, samples=c, seed=9)
        same = np.zeros((H, W), bool)
        for name in ("pmi", "ig"):
            match = e.maps[name] == fixed.maps[name]
            same |= match if match.ndim == 2 else match.all(0)
        # S = K: a pixel's value is its one patch's; the patches that ended with c in-fills match the fixed run
        assert same.sum() >= 16 * counts[c], (c, same.sum())
    assert np.maximum(e.pmi_stderr.max(0), e.ig_stderr).max() <= 0.3 or 32 in counts  # above it only at the cap


def test_adaptive_saves_forwards_against_the_fixed_n_with_the_same_worst_case(clf):
    img = scene(H, W)
    noise = load_sampler("noise", K=4)
    ad = Explainer(clf, noise, target_se=0.4, max_samples=256).explain(img, classes="top2", stride=4, samples=4)
    worst = max(ad.pmi_stderr.max(), ad.ig_stderr.max())
    assert worst <= 0.4 and max(ad.params["samples_per_position"]) < 256  # every patch met the target
    fixed = next(f for n in (8, 16, 32, 64, 128, 256) if max((f := Explainer(clf, noise).explain(
        img, classes="top2", stride=4, samples=n)).pmi_stderr.max(), f.ig_stderr.max()) <= worst)
    assert ad.forwards < 0.8 * fixed.forwards, (ad.forwards, fixed.forwards)


def test_adaptive_options_are_validated(clf, image_file, model_file, tmp_path):
    with pytest.raises(InfolensError) as info:
        Explainer(clf, load_sampler("noise", K=4), target_se=0).explain(scene(H, W), stride=4)
    assert info.value.param == "target_se"
    r = run_cli("explain", image_file, "--model", model_file, "--out", tmp_path, "-K", "4", "--sampler", "noise",
                "--max-samples", "0", "--target-se", "0.1", "-q")
    assert r.returncode == 2 and r.stderr.strip().endswith("(--max-samples)")
