"""The GPU path on a CUDA device (issue #11): everything on the device with no op falling back to the CPU, maps
that agree with the CPU's, CUDA graphs and fp16 checked against plain CUDA, same seed → same maps, incremental
inference.  Skipped where this onnxruntime has no CUDAExecutionProvider (CI never has one; docs/gpu.md says how to
run them, `scripts/gpu_check.sh tests`)."""
import numpy as np
import onnxruntime as ort
import pytest

import onnx_builders
from conftest import REPO, scene
from infolens import Explainer, OnnxClassifier, Preprocessing, backends, load_sampler

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                                 reason="no CUDAExecutionProvider in this onnxruntime (install infolens[gpu] on a GPU)")]
HAS_TRT = "TensorrtExecutionProvider" in ort.get_available_providers()


def explain(clf, image, sampler="patchsampler", **kw):
    return Explainer(clf, load_sampler(sampler, K=8, device=clf.placement), batch_size=kw.pop("batch_size", 64)
                     ).explain(image, **{"stride": 8, "samples": 4, "seed": 3, "classes": "top3", **kw})


@pytest.fixture(scope="module")
def photo():
    """examples/coffee.png in the shipped classifier's input space (uint8 [224, 224, 3])."""
    import os

    return OnnxClassifier.from_card().load_image(os.path.join(REPO, "examples",
                                                              "coffee.png"))


def test_everything_runs_on_the_device_without_cpu_fallback(photo):
    clf = OnnxClassifier.from_card(device="cuda")
    # the sessions opened with session.disable_cpu_ep_fallback: an op without a CUDA kernel would have raised
    assert clf.batch_backend == "composer" and clf.session.get_providers()[0] == "CUDAExecutionProvider"
    e = explain(clf, photo)
    assert e.model["providers"][0] == "CUDAExecutionProvider" and np.isfinite(e.pmi).all()
    assert backends.composers(clf)[(64, 8)].composer.get_providers()[0] == "CUDAExecutionProvider"


def test_cuda_maps_agree_with_the_cpu_maps(photo):
    cpu = explain(OnnxClassifier.from_card(), photo)
    gpu = explain(OnnxClassifier.from_card(device="cuda"), photo)
    assert list(gpu.classes) == list(cpu.classes)
    # the in-fills are the same (host sampling, counter-based streams); only the classifier's arithmetic differs
    assert np.abs(gpu.pmi - cpu.pmi).max() < 0.02 * np.ptp(cpu.pmi)
    assert np.corrcoef(gpu.pmi.ravel(), cpu.pmi.ravel())[0, 1] > 0.999


def test_the_composer_on_cuda_builds_the_host_batch(tmp_path):
    path = onnx_builders.classifier(tmp_path / "m.onnx")
    cpu = OnnxClassifier(path, Preprocessing(resize="none", mean=list(onnx_builders.MEAN), std=list(onnx_builders.STD)))
    gpu = OnnxClassifier(path, Preprocessing(resize="none", mean=list(onnx_builders.MEAN), std=list(onnx_builders.STD)),
                         device="cuda")
    maps = [Explainer(c, load_sampler("noise", K=4), batch_size=6).explain(scene(), stride=2, samples=3).pmi
            for c in (cpu, gpu)]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-4)


def test_same_seed_same_maps_and_cuda_graphs_change_nothing(photo):
    plain = OnnxClassifier.from_card(device="cuda")
    graph = OnnxClassifier.from_card(device="cuda", cuda_graph=True)
    a, b, c = explain(plain, photo), explain(plain, photo), explain(graph, photo)
    np.testing.assert_array_equal(a.pmi, b.pmi)
    np.testing.assert_array_equal(a.ig, b.ig)
    np.testing.assert_array_equal(a.pmi, c.pmi)  # the same kernels, replayed
    d = explain(graph, photo[::-1].copy())  # a second image through the captured graph
    e = explain(plain, photo[::-1].copy())
    np.testing.assert_array_equal(d.pmi, e.pmi)


def test_fp16_on_cuda_is_checked_and_close(photo):
    full = explain(OnnxClassifier.from_card(device="cuda"), photo)
    half_clf = OnnxClassifier.from_card(device="cuda", fp16=True)
    half = explain(half_clf, photo)
    assert half.params["fp16_drift"] < 0.1 and half_clf.fp16_drift < 0.1
    assert np.corrcoef(half.pmi.ravel(), full.pmi.ravel())[0, 1] > 0.99


def test_the_patchsampler_runs_on_cuda_with_the_same_in_fills(photo):
    cpu = load_sampler("patchsampler", K=8)
    gpu = load_sampler("patchsampler", K=8, device="cuda")
    from infolens.samplers.rng import streams

    ys, xs = np.array([0, 40, 100]), np.array([8, 64, 200])
    a = cpu.sample(photo, ys, xs, 4, streams(5, np.arange(3)), 0)
    b = gpu.sample(photo, ys, xs, 4, streams(5, np.arange(3)), 0)
    # the same uniforms; a pixel differs only where CUDA's probabilities put a uniform on the other side of a bin
    assert (a != b).mean() < 0.01


@pytest.mark.skipif(not HAS_TRT, reason="no TensorrtExecutionProvider in this onnxruntime")
def test_tensorrt_maps_agree_with_cuda(photo):
    cuda = explain(OnnxClassifier.from_card(device="cuda"), photo)
    trt = explain(OnnxClassifier.from_card(device="cuda", provider="tensorrt"), photo)
    assert np.corrcoef(trt.pmi.ravel(), cuda.pmi.ravel())[0, 1] > 0.999


def test_incremental_inference_on_cuda_gives_the_full_forwards_maps(photo):
    """Incremental inference on the device: the generated graphs and the tapped photo run on CUDA (strict placement:
    an op without a CUDA kernel would have raised) and give the full forwards' maps within float rounding, the same
    bound as on the CPU (≤ 1e-4 bits)."""
    from infolens.backends import incremental

    off = explain(OnnxClassifier.from_card(device="cuda"), photo, classes="top1")
    on = explain(OnnxClassifier.from_card(device="cuda", incremental="on"), photo, classes="top1")
    assert on.model["incremental"]["used"]
    ex, sessions, _ = next(reversed(incremental._EXECUTORS.values()))
    assert all(s.get_providers()[0] == "CUDAExecutionProvider" for s in [*sessions.values(), ex._tap])
    for name in ("pmi", "ig"):
        assert np.abs(on.maps[name] - off.maps[name]).max() <= 1e-4, name  # bits
