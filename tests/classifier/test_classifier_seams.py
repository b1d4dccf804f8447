"""The classifier's public seams: preprocessing as one value, a user's own session, options and providers."""
import json

import numpy as np
import onnxruntime as ort
import pytest

import onnx_builders
from conftest import scene
from infolens import Explainer, InfolensError, OnnxClassifier, Preprocessing, load_sampler

PRE = Preprocessing(mean=tuple(onnx_builders.MEAN), std=tuple(onnx_builders.STD), resize="none")


def test_preprocessing_is_one_value_resolved_from_the_graph(model_file):
    clf = OnnxClassifier(model_file, PRE)
    assert clf.pre == Preprocessing(layout="NCHW", size=(17, 19), channel_order="RGB", scale=1.0,
                                    mean=tuple(onnx_builders.MEAN), std=tuple(onnx_builders.STD), dtype="float32",
                                    resize="none", interpolation="auto", crop_fraction=1.0, channels=3)
    as_dict = OnnxClassifier(model_file, {"mean": list(onnx_builders.MEAN), "std": list(onnx_builders.STD),
                                          "resize": "none"})
    assert as_dict.pre == clf.pre
    card = json.load(open(model_file[:-5] + ".json"))["input"]
    assert OnnxClassifier.from_card(model_file).pre == Preprocessing.from_card(card).resolve(
        clf.session.get_inputs()[0])
    with pytest.raises(InfolensError, match="std must not be 0") as e:
        OnnxClassifier(model_file, PRE.replace(std=0))
    assert e.value.param == "std"


def test_twin_keeps_every_preprocessing_value(tmp_path):
    """A twin (another file of the same model, e.g. randomized for the sanity check) reads images exactly as the
    original: letterbox padding and the interpolation included."""
    path = onnx_builders.classifier(tmp_path / "a.onnx")
    other = onnx_builders.classifier(tmp_path / "b.onnx", seed=1)
    clf = OnnxClassifier(path, PRE.replace(resize="letterbox", pad_value=(9, 8, 7), interpolation="cubic"),
                         labels=list("abcde"))
    twin = clf.twin(other)
    assert twin.pre == clf.pre == twin.pre.resolve(twin.session.get_inputs()[0]) and twin.labels == clf.labels and twin.model_path == other
    photo = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(twin.load_image(photo), clf.load_image(photo))


def test_a_users_own_session_runs_as_it_is(tmp_path, model_file):
    mine = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
    clf = OnnxClassifier(model_file, PRE, session=mine)
    assert clf.session is mine
    ours = OnnxClassifier(model_file, PRE)
    e1 = Explainer(clf, load_sampler("noise", K=4)).explain(scene(), stride=4, samples=2, seed=0)
    e2 = Explainer(ours, load_sampler("noise", K=4)).explain(scene(), stride=4, samples=2, seed=0)
    np.testing.assert_array_equal(e1.pmi, e2.pmi)
    fixed = onnx_builders.classifier(tmp_path / "fixed.onnx", batch=1)
    clf = OnnxClassifier(fixed, PRE, session=ort.InferenceSession(fixed, providers=["CPUExecutionProvider"]))
    assert clf.batch_limit == 1  # not relaxed: the user's session is not reopened
    assert OnnxClassifier(fixed, PRE).batch_limit is None  # infolens relaxes the file it opens itself
    np.testing.assert_allclose(clf.predict_images(np.stack([scene()] * 3)),
                               ours.predict_images(np.stack([scene()] * 3)), rtol=1e-6)
    grey = onnx_builders.classifier(tmp_path / "grey.onnx", channels=1)
    with pytest.raises(InfolensError, match="a session you open yourself runs as it is") as e:
        OnnxClassifier(grey, Preprocessing(resize="none"), session=ort.InferenceSession(grey))
    assert e.value.param == "session"


def test_session_options_and_providers_are_the_users(tmp_path, model_file):
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")  # ONNX Runtime writes it when a session opens
    clf = OnnxClassifier(model_file, PRE, session_options=so, providers=["CPUExecutionProvider"])
    assert (tmp_path / "optimized.onnx").is_file()
    assert clf.session.get_providers() == ["CPUExecutionProvider"]
    assert clf.placement.helper().session_options is None  # helper graphs (samplers) keep infolens's options
    with pytest.raises(InfolensError, match="has no NoSuchExecutionProvider; it has .*CPUExecutionProvider") as e:
        OnnxClassifier(model_file, PRE, providers=["NoSuchExecutionProvider"])
    assert e.value.param == "providers"
