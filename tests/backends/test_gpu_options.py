"""The GPU path's options where they can run on the CPU (issue #11): placements and their errors, the float16
classifier and its drift check, the composer batch reused image after image with fixed buffers, and the GPU bench's
modes on a tiny model.  tests/test_cuda.py checks the same on a CUDA device where there is one."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import onnx_builders
from conftest import run_cli, scene
from infolens import Explainer, OnnxClassifier, Preprocessing, backends, load_sampler
from infolens.backends.sessions import Placement
from infolens.errors import InfolensError

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.parametrize("kw,param", [({"provider": "tensorrt"}, "provider"), ({"cuda_graph": True}, "cuda_graph"),
                                      ({"provider": "vulkan"}, "provider")])
def test_placements_a_cpu_cannot_have_are_refused(kw, param):
    with pytest.raises(InfolensError) as e:
        Placement("cpu", **kw)
    assert e.value.param == param


def _fallback_disabled(placement) -> bool:
    try:
        return placement.options().get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
    except RuntimeError:  # ONNX Runtime: no such entry
        return False


def test_on_cuda_no_op_may_fall_back_to_the_cpu_unless_allowed():
    assert _fallback_disabled(Placement("cuda"))
    assert not _fallback_disabled(Placement("cuda", cpu_fallback=True))
    assert not _fallback_disabled(Placement("cpu"))
    assert Placement("cuda", provider="tensorrt", cuda_graph=True).helper() == Placement("cuda", cuda_graph=True)


@pytest.mark.parametrize("flags,flag", [(["--cuda-graph"], "--cuda-graph"), (["--provider", "tensorrt"], "--provider"),
                                        (["--device", "cuda", "--batch-backend", "host", "--cuda-graph"],
                                         "--batch-backend")])
def test_cli_gpu_flags_a_machine_cannot_use_are_one_line(tmp_path, model_file, image_file, flags, flag):
    r = run_cli("explain", image_file, "--model", model_file, "--out", tmp_path / "o", *flags)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in r.stderr, r.stderr


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA: the missing-provider message cannot show")
def test_device_cuda_without_a_cuda_onnxruntime_names_the_extra(tmp_path, model_file, image_file):
    r = run_cli("explain", image_file, "--model", model_file, "--out", tmp_path / "o", "--device", "cuda")
    assert r.returncode == 2 and "infolens[gpu]" in r.stderr and "--device" in r.stderr, r.stderr


@pytest.mark.slow
def test_fp16_maps_stay_close_to_float32_and_the_drift_is_recorded(tmp_path, model_file, image_file):
    maps = {}
    for fp16 in (False, True):
        clf = OnnxClassifier.from_card(model_file, fp16=fp16)
        maps[fp16] = Explainer(clf, load_sampler("noise", K=4), batch_size=8).explain(scene(), stride=2, samples=3)
    assert clf.fp16 and 0 < clf.fp16_drift < 0.1
    assert maps[True].model["fp16"] is True and maps[True].model["fp16_drift"] == clf.fp16_drift
    assert 0 < maps[True].params["fp16_drift"] < 0.1  # the explained image's own check
    assert "fp16" not in maps[False].model
    a, b = maps[False].pmi, maps[True].pmi
    assert not np.array_equal(a, b)  # the float16 graph really ran
    assert np.abs(a - b).max() < 0.02 * np.ptp(a) and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    r = run_cli("explain", image_file, "--model", model_file, "--out", tmp_path / "o", "--fp16", "-K", "4", "-N", "2",
                "--sampler", "noise", "-q")
    assert r.returncode == 0, r.stderr
    record = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert record["model"]["fp16"] is True and record["model"]["fp16_drift"] < 0.1


def test_fp16_is_refused_when_half_precision_changes_the_answer(tmp_path):
    """logits = 100 · (x·W(1 + 10⁻⁴) − x·W): float16 rounds the two weight matrices (relative step 2⁻¹¹) to values
    whose difference is noise, so the probabilities move and --fp16 is refused.  (ONNX Runtime's CPU provider runs
    float16 ops it has no kernel for in float32 between casts, so it is the weights' rounding that shows here.)"""
    path = onnx_builders.classifier(tmp_path / "cancel.onnx")
    model = onnx.load(path)
    dense = next(i for i in model.graph.initializer if i.name == "dense_w")
    node = next(n for n in model.graph.node if "dense_w" in n.input)
    out = node.output[0]
    node.output[0] = "xw"
    w2 = numpy_helper.to_array(dense) * np.float32(1 + 1e-4)
    model.graph.initializer.extend([numpy_helper.from_array(w2, "dense_w2"),
                                    numpy_helper.from_array(np.array(1e2, np.float32), "k")])
    model.graph.node.extend([helper.make_node("MatMul", [node.input[0], "dense_w2"], ["xw2"]),
                             helper.make_node("Sub", ["xw2", "xw"], ["d"]), helper.make_node("Mul", ["d", "k"], [out])])
    onnx.save(model, path)
    OnnxClassifier(path, Preprocessing(resize="none"))  # fine in float32
    with pytest.raises(InfolensError) as e:
        OnnxClassifier(path, Preprocessing(resize="none"), fp16=True)
    assert e.value.param == "fp16" and "without --fp16" in str(e.value)


def test_fp16_grey_models_keep_their_exact_grey_front(tmp_path):
    """The float16 conversion comes before the grey front, which stays float32 (OpenCV's grey levels exactly).  This
    toy model's runner-up classes have p < 10⁻⁴, whose log2 moves by 0.26 bit in float16: refused at the default
    tolerance, accepted at 1 bit."""
    grey = onnx_builders.classifier(tmp_path / "g.onnx", channels=1)
    with pytest.raises(InfolensError):
        OnnxClassifier(grey, Preprocessing(resize="none"), fp16=True)
    clf = OnnxClassifier(grey, Preprocessing(resize="none"), fp16=True, fp16_tolerance=1.0)
    assert 0.1 < clf.fp16_drift < 1.0
    full = OnnxClassifier(grey, Preprocessing(resize="none")).predict_images(scene()[None])
    half = clf.predict_images(scene()[None])
    top = full.argmax()
    assert half.argmax() == top and abs(np.log2(half[0, top] / full[0, top])) < 1e-3


def test_one_composer_batch_serves_image_after_image(model_file):
    """The composer's device buffers are made once per (batch, K) and reused: maps of several images in a row, with
    short padded last batches, equal the host path's."""
    clfs = {b: OnnxClassifier.from_card(model_file, batch_backend=b) for b in ("host", "composer")}
    for seed in range(3):
        image = scene(seed=seed)[::-1] if seed else scene()
        runs = {b: Explainer(c, load_sampler("noise", K=4), batch_size=7).explain(image, stride=3, samples=2, seed=seed)
                for b, c in clfs.items()}
        np.testing.assert_array_equal(runs["host"].pmi, runs["composer"].pmi)
        assert runs["host"].forwards == runs["composer"].forwards
    assert len(backends.composers(clfs["composer"])) == 1


def test_batch_backend_auto_is_host_on_the_cpu(model_file):
    assert OnnxClassifier.from_card(model_file).batch_backend == "host"
    with pytest.raises(InfolensError) as e:
        OnnxClassifier.from_card(model_file, batch_backend="wrong")
    assert e.value.param == "batch_backend"
