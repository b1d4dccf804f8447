"""Multi-label (sigmoid) classifiers: detected, never softmaxed, explained with one Bernoulli variable per class."""
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import onnx_builders
from conftest import H, W, scene, write_card
from infolens import Explainer, OnnxClassifier, load_sampler, measures
from infolens.errors import InfolensError


def raw_outputs(path, images):
    """The model's own outputs for uint8 RGB images [B, H, W, 3], NCHW float32 as the test models take them."""
    x = ((images.astype(np.float64) - onnx_builders.MEAN) / onnx_builders.STD).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0].astype(np.float64)


def multilabel(tmp_path, kind="sigmoid", name="ml"):
    path = onnx_builders.classifier(tmp_path / f"{name}.onnx", kind=kind, n_classes=6)
    write_card(path, "NCHW", "RGB", "float32")  # no output kind: auto-detection decides
    return path


@pytest.mark.parametrize("kind", ["sigmoid", "sigmoid-div"])
def test_sigmoid_outputs_are_detected_and_used_as_they_are(tmp_path, kind):
    """The bug: a multi-label model was softmaxed (p = 0.323 reported where the model said 0.993)."""
    path = multilabel(tmp_path, kind)
    clf = OnnxClassifier.from_card(path)
    assert clf.output.kind == "sigmoid" and clf.output.bernoulli
    img = scene()
    p = clf.predict_images(img[None])[0]
    np.testing.assert_allclose(p, raw_outputs(path, img[None])[0], rtol=1e-6)
    assert abs(p.sum() - 1) > 0.05, "the test model's probabilities must not happen to sum to 1"


def test_multilabel_maps_equal_a_brute_force_recomputation(tmp_path):
    """PMI per class from p(c) itself; IG the sum over classes of the binary KL (gray fill: no Monte-Carlo)."""
    path = multilabel(tmp_path)
    K, S = 5, 3
    img = scene()
    e = Explainer(OnnxClassifier.from_card(path), load_sampler("gray", K=K), batch_size=7).explain(
        img, classes=list(range(6)), stride=S)
    p0 = raw_outputs(path, img[None])[0]
    ys = list(range(0, H - K + 1, S)) + ([H - K] if (H - K) % S else [])
    xs = list(range(0, W - K + 1, S)) + ([W - K] if (W - K) % S else [])
    pmi, ig, count = np.zeros((6, H, W)), np.zeros((H, W)), np.zeros((H, W))
    for y in ys:
        for x in xs:
            pert = img.copy()
            pert[y:y + K, x:x + K] = 128
            pr = raw_outputs(path, pert[None])[0]
            pmi[:, y:y + K, x:x + K] += (np.log2(p0) - np.log2(pr))[:, None, None]
            kl = p0 * np.log2(p0 / pr) + (1 - p0) * np.log2((1 - p0) / (1 - pr))
            ig[y:y + K, x:x + K] += kl.sum()
            count[y:y + K, x:x + K] += 1
    np.testing.assert_allclose(e.probs, p0, rtol=1e-6)
    np.testing.assert_allclose(e.pmi, pmi / count, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(e.ig, ig / count, rtol=1e-4, atol=2e-5)
    assert e.ig.max() > 1e-3 and e.ig.min() >= 0
    # the softmax reading of the same outputs gives different maps: the test can tell the two apart
    soft = Explainer(OnnxClassifier.from_card(path, output_kind="logits"), load_sampler("gray", K=K),
                     batch_size=7).explain(img, classes=list(range(6)), stride=S)
    assert np.abs(soft.ig - e.ig).max() > 1e-3


def test_bernoulli_ig_standard_error_is_the_delta_method():
    """The IG standard error linearizes Σ_c binary KL at p̄: compare with a finite-difference gradient."""
    rng = np.random.default_rng(3)
    p0 = rng.uniform(0.05, 0.95, 4)
    probs = rng.uniform(0.05, 0.95, (2, 9, 4))
    got = measures.reduce_samples("pmi", p0, probs, np.arange(4), bernoulli=True)["ig"]
    for m in range(2):
        pbar = probs[m].mean(0)
        grad = np.array([(measures.information_gain(p0, (pbar + h)[None], True) -
                          measures.information_gain(p0, (pbar - h)[None], True))[0] / 2e-6
                         for h in np.eye(4) * 1e-6])
        se = (probs[m] @ grad).std(ddof=1) / 3
        np.testing.assert_allclose(got[1][m], se, rtol=1e-4)
        np.testing.assert_allclose(got[0][m], measures.information_gain(p0, pbar[None], True)[0])


def test_sigmoid_logits_kind_applies_the_sigmoid(tmp_path):
    """A multi-label model that outputs raw logits cannot be told from a softmax one: the flag says so."""
    with_sigmoid = OnnxClassifier.from_card(multilabel(tmp_path, "sigmoid"))
    bare = onnx_builders.classifier(tmp_path / "bare.onnx", kind="logits", n_classes=6)
    write_card(bare, "NCHW", "RGB", "float32")
    assert OnnxClassifier.from_card(bare).output.kind == "logits"
    clf = OnnxClassifier.from_card(bare, output_kind="sigmoid-logits")
    assert clf.output.bernoulli
    np.testing.assert_allclose(clf.predict_images(scene()[None]), with_sigmoid.predict_images(scene()[None]),
                               rtol=1e-5, atol=1e-7)  # float64 here, ONNX Runtime's float32 Sigmoid there


@pytest.mark.slow
def test_undecidable_outputs_ask_for_the_flag(tmp_path):
    path = multilabel(tmp_path, "scores01")
    with pytest.raises(InfolensError, match="cannot tell what output") as err:
        OnnxClassifier.from_card(path)
    assert err.value.param == "output_kind"
    assert OnnxClassifier.from_card(path, output_kind="sigmoid").output.kind == "sigmoid"
    img = tmp_path / "x.png"
    import cv2
    cv2.imwrite(str(img), scene())
    cmd = [sys.executable, "-m", "infolens", "explain", str(img), "--model", path, "--out", str(tmp_path / "o"), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.rstrip().endswith("(--output-kind)")


def test_json_says_how_the_multilabel_maps_were_computed(tmp_path):
    path = multilabel(tmp_path)
    e = Explainer(OnnxClassifier.from_card(path), load_sampler("gray", K=4)).explain(scene(), stride=4)
    files = e.save(str(tmp_path / "out"), "ml", render=False)
    with open(files["json"]) as f:
        meta = json.load(f)
    assert meta["model"]["output_kind"] == "sigmoid"
    assert "Bern" in meta["maps"]["ig"]["meaning"]
