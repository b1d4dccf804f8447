"""PMI / IG maps against a brute-force recomputation, and the identities they must satisfy."""
import numpy as np
import pytest

import onnx_builders
from conftest import H, W, scene
from infolens import Explainer, OnnxClassifier, Preprocessing, load_sampler, measures
from infolens.methods import patch_grid


def brute_force(model, image, K, S, fill=128, layout="NCHW", order="RGB", dtype="float32"):
    """Every patch position by the rule of DESIGN §3, written out with plain loops."""
    ys = list(range(0, H - K + 1, S)) + ([H - K] if (H - K) % S else [])
    xs = list(range(0, W - K + 1, S)) + ([W - K] if (W - K) % S else [])
    p0 = onnx_builders.reference_probs(model, image[None].astype(np.float64), layout, order, dtype)[0]
    pmi_sum, ig_sum, count = np.zeros((len(p0), H, W)), np.zeros((H, W)), np.zeros((H, W))
    for y in ys:
        for x in xs:
            pert = image.astype(np.float64).copy()
            pert[y:y + K, x:x + K] = fill
            pr = onnx_builders.reference_probs(model, pert[None], layout, order, dtype)[0]
            pmi = np.log2(p0 + 1e-13) - np.log2(pr + 1e-13)
            pmi_sum[:, y:y + K, x:x + K] += pmi[:, None, None]
            ig_sum[y:y + K, x:x + K] += np.sum(p0 * pmi)
            count[y:y + K, x:x + K] += 1
    return p0, pmi_sum / count, ig_sum / count


@pytest.mark.parametrize("K,S", [(5, 3), (4, 4), (6, 5), (1, 1)])
def test_gray_sampler_maps_equal_brute_force(model_file, K, S):
    img = scene()
    clf = OnnxClassifier.from_card(model_file)
    e = Explainer(clf, load_sampler("gray", K=K), batch_size=7).explain(img, classes=[0, 1, 2, 3, 4], stride=S)
    p0, pmi, ig = brute_force(model_file, img, K, S)
    np.testing.assert_allclose(e.probs, p0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(e.pmi, pmi, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(e.ig, ig, rtol=1e-4, atol=2e-5)
    assert np.abs(e.pmi).max() > 1e-3, "the test model must actually react to the patches"


def test_grid_covers_every_pixel_with_border_rule():
    ys, xs = patch_grid(17, 19, 5, 3)
    assert sorted(set(ys)) == [0, 3, 6, 9, 12] and sorted(set(xs)) == [0, 3, 6, 9, 12, 14]
    ys, xs = patch_grid(16, 16, 8, 8)
    assert sorted(set(ys)) == [0, 8] and len(ys) == 4


def test_ig_is_p0_weighted_sum_of_pmi(model_file):
    clf = OnnxClassifier.from_card(model_file)
    e = Explainer(clf, load_sampler("noise", K=4), batch_size=16).explain(
        scene(), classes=list(range(5)), stride=2, samples=3, seed=1)
    # per pixel: averaging is linear, so the identity holds for the maps too
    np.testing.assert_allclose(e.ig, np.tensordot(e.probs[e.classes], e.pmi, 1), rtol=1e-4, atol=1e-5)
    rng = np.random.default_rng(0)
    p0 = rng.dirichlet(np.ones(7))
    pr = rng.dirichlet(np.ones(7), size=11)
    np.testing.assert_allclose(measures.information_gain(p0, pr), p0 @ measures.pmi(p0, pr, np.arange(7)))
    assert np.all(measures.information_gain(p0, pr) >= 0)


VARIANTS = [("NHWC", "RGB", "logits", "float32"), ("NCHW", "BGR", "logits", "float32"),
            ("NCHW", "RGB", "probs", "float32"), ("NHWC", "BGR", "probs", "uint8"), ("NCHW", "RGB", "logits", "uint8")]


@pytest.mark.parametrize("layout,order,kind,dtype", VARIANTS)
def test_equivalent_models_give_identical_maps(tmp_path, model_file, layout, order, kind, dtype):
    from conftest import write_card

    other = onnx_builders.classifier(tmp_path / "v.onnx", layout=layout, order=order, kind=kind, dtype=dtype)
    write_card(other, layout, order, dtype)  # output kind left to auto-detection
    img = scene()

    def maps(path):
        clf = OnnxClassifier.from_card(path)
        return Explainer(clf, load_sampler("noise", K=4), batch_size=9).explain(img, stride=3, samples=4, seed=5)

    ref, got = maps(model_file), maps(other)
    assert OnnxClassifier.from_card(other).output.kind == kind
    np.testing.assert_array_equal(ref.classes, got.classes)
    np.testing.assert_allclose(got.probs, ref.probs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.pmi, ref.pmi, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.ig, ref.ig, rtol=1e-4, atol=1e-5)


def test_flags_alone_explain_a_model_without_card(tmp_path, model_file):
    """A vendor model known only from its documentation: everything through keyword overrides, nothing inferred."""
    bare = onnx_builders.classifier(tmp_path / "bare.onnx", layout="NHWC", order="BGR")
    clf = OnnxClassifier(bare, Preprocessing(layout="NHWC", channel_order="BGR", mean=list(onnx_builders.MEAN[::-1]),
                                             std=list(onnx_builders.STD[::-1]), resize="none"))
    got = Explainer(clf, load_sampler("gray", K=4)).explain(scene(), stride=4)
    ref = Explainer(OnnxClassifier.from_card(model_file), load_sampler("gray", K=4)).explain(scene(), stride=4)
    np.testing.assert_allclose(got.pmi, ref.pmi, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampler", ["noise", "gaussian", "patchsampler", "mean", "blur"])
def test_same_seed_same_maps_for_any_batch_size(tmp_path, model_file, sampler):
    K = 4
    kw = {}
    if sampler == "patchsampler":
        kw["model"] = onnx_builders.patch_sampler(tmp_path / "ps.onnx", K)
    clf = OnnxClassifier.from_card(model_file)
    runs = [Explainer(clf, load_sampler(sampler, K=K, **kw), batch_size=b).explain(
        scene(), stride=2, samples=5, seed=11) for b in (1, 6, 64)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.pmi, runs[0].pmi)
        np.testing.assert_array_equal(r.ig, runs[0].ig)
    other_seed = Explainer(clf, load_sampler(sampler, K=K, **kw)).explain(scene(), stride=2, samples=5, seed=12)
    if load_sampler(sampler, K=K, **kw).deterministic:
        np.testing.assert_array_equal(other_seed.pmi, runs[0].pmi)
    else:
        assert not np.array_equal(other_seed.pmi, runs[0].pmi)


def test_samplers_protocol_shapes_and_values():
    img = scene()
    ys, xs = np.array([0, 5, 13]), np.array([0, 7, 15])
    rngs = [np.random.default_rng(i) for i in range(3)]
    for name in ["gray", "black", "mean", "blur", "noise", "gaussian"]:
        out = load_sampler(name, K=4).sample(img, ys, xs, 2, rngs)
        assert out.shape == (3, 2, 4, 4, 3) and out.dtype == np.uint8, name
    assert (load_sampler("gray", K=4).sample(img, ys, xs, 1, rngs) == 128).all()
    assert (load_sampler("black", K=4).sample(img, ys, xs, 1, rngs) == 0).all()
    m = load_sampler("mean", K=4).sample(img, ys, xs, 1, rngs)
    np.testing.assert_array_equal(m[1, 0, 0, 0], np.rint(img[5:9, 7:11].mean((0, 1))))


def test_patchsampler_draws_follow_its_distribution(tmp_path):
    """Inverse-CDF sampling through the runtime reproduces the ONNX model's categorical (mean value check)."""
    K = 2
    s = load_sampler("patchsampler", K=K, model=onnx_builders.patch_sampler(tmp_path / "ps.onnx", K))
    img = scene()
    ys, xs = np.array([3]), np.array([4])
    probs = s.probs(img, ys, xs)[0]  # [K, K, 3, 256]
    draws = s.sample(img, ys, xs, 4000, [np.random.Generator(np.random.Philox(1))])[0]
    expected = (probs * np.arange(256)).sum(-1)
    np.testing.assert_allclose(draws.mean(0), expected, atol=3.0)


def test_pixel_coupling_moves_channels_together_and_keeps_marginals(tmp_path):
    """On a grey context all three channels have the same distribution: coupled draws are grey (R = G = B),
    independent ones are not; both keep each sub-pixel's distribution."""
    K = 2
    path = onnx_builders.patch_sampler(tmp_path / "ps.onnx", K)
    grey = np.repeat(scene()[..., :1], 3, axis=2)
    ys, xs = np.array([3]), np.array([4])
    draws = {c: load_sampler("patchsampler", K=K, model=path, coupling=c).sample(
        grey, ys, xs, 3000, [np.random.Generator(np.random.Philox(7))])[0] for c in ("pixel", "none")}
    assert (draws["pixel"][..., 0] == draws["pixel"][..., 2]).all()
    assert (draws["none"][..., 0] != draws["none"][..., 2]).mean() > 0.5
    probs = load_sampler("patchsampler", K=K, model=path).probs(grey, ys, xs)[0]
    expected = (probs * np.arange(256)).sum(-1)
    for d in draws.values():
        np.testing.assert_allclose(d.mean(0), expected, atol=3.0)
