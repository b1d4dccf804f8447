"""CAM as a registered method (one forward, for a classifier ending in global pooling and a linear layer) and the
ring-mean sampler (the context's mean colour, nothing of the patch)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_builders
from conftest import run_cli
from infolens import OnnxClassifier, Preprocessing
from infolens.methods import Explainer
from infolens.samplers import load_sampler


def gap_classifier(path, pool="GlobalAveragePool", softmax=False):
    """Conv 3→6 (3×3, stride 2) → Relu → global average pool → Flatten → Gemm 6→4 (+ Softmax): CAM's shape."""
    rng = np.random.default_rng(0)
    conv = rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32)
    w, b = rng.normal(0, 1, (4, 6)).astype(np.float32), rng.normal(0, 1, 4).astype(np.float32)
    pool_node = (helper.make_node("GlobalAveragePool", ["a"], ["p"]) if pool == "GlobalAveragePool" else
                 helper.make_node("ReduceMean", ["a"], ["p"], axes=[2, 3], keepdims=1))
    nodes = [helper.make_node("Conv", ["input", "conv"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["a"]), pool_node, helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["logits"], transB=1)]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    g = helper.make_graph(nodes, "gap", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 4])],
                          [numpy_helper.from_array(conv, "conv"), numpy_helper.from_array(w, "w"),
                           numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(g, opset_imports=onnx_builders.OPSET, ir_version=onnx_builders.IR_VERSION), path)
    return str(path), conv, w, b


@pytest.mark.parametrize("pool,softmax", [("GlobalAveragePool", False), ("ReduceMean", True)])
def test_cam_is_the_class_weights_on_the_pooled_activation(tmp_path, pool, softmax):
    path, conv, w, b = gap_classifier(tmp_path / "gap.onnx", pool, softmax)
    clf = OnnxClassifier(path, Preprocessing(resize="none"))
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ex = Explainer(clf)
    e = ex.explain(image, classes=[0, 2, 3], method="cam")
    assert e.forwards == 1 and e.maps["cam"].shape == (3, 16, 16)
    # the activation by hand: the conv on the normalized image, ReLU; its class maps; mean + bias = the logit
    m = onnx.load(path)
    m.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    a = sess.run(["a"], {"input": clf.normalize(image[None])})[0][0]  # [6, 8, 8]
    cells = np.einsum("kc,chw->khw", w[[0, 2, 3]].astype(np.float64), a)
    np.testing.assert_allclose(ex.method("cam").cells(a, [0, 2, 3]), cells, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cells.mean((1, 2)) + b[[0, 2, 3]], (a.mean((1, 2)) @ w.T + b)[[0, 2, 3]], rtol=1e-5)
    import cv2
    np.testing.assert_allclose(e.maps["cam"][1], cv2.resize(cells[1].astype(np.float32), (16, 16)), rtol=1e-4,
                               atol=1e-5)


def test_cam_on_the_shipped_classifier_adds_up_to_its_logits():
    clf = OnnxClassifier.from_card("models/efficientnet_lite0.onnx")
    ex = Explainer(clf)
    e = ex.explain("examples/chelsea.png", classes="top3", method="cam")
    cam = ex.method("cam")
    img = clf.load_image("examples/chelsea.png")
    _, found = cam.tapped.run(clf.normalize(img[None]))
    cells = cam.cells(found[cam.tensor][0], e.classes)
    logits = clf.forward(clf.normalize(img[None]))[0]
    np.testing.assert_allclose(cells.mean((1, 2)) + cam.bias[e.classes], logits[e.classes], rtol=1e-4)


def test_a_classifier_without_global_pooling_is_one_line(tmp_path):
    model = onnx_builders.classifier(tmp_path / "dense.onnx", 16, 16)
    image = tmp_path / "x.png"
    import cv2
    cv2.imwrite(str(image), np.full((16, 16, 3), 100, np.uint8))
    r = run_cli("explain", image, "--model", model, "--method", "cam", "--mean", "120,110,100", "--std", "60,50,40",
                "--out", tmp_path / "out")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "CAM needs a classifier that ends in global average pooling" in r.stderr and "--method" in r.stderr


def test_ring_mean_is_the_visible_contexts_mean_without_the_patch():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (20, 23, 3), dtype=np.uint8)
    K = 4
    s = load_sampler("ring-mean", K=K)
    ys, xs = np.array([0, 8, 16, 5]), np.array([0, 9, 19, 0])
    got = s.sample(image, ys, xs, 2, [None] * 4)
    assert got.shape == (4, 2, K, K, 3) and s.deterministic
    for p, (y, x) in enumerate(zip(ys, xs)):
        win = np.zeros((20, 23), bool)
        win[max(0, y - K):y + 2 * K, max(0, x - K):x + 2 * K] = True
        win[y:y + K, x:x + K] = False
        want = np.rint(image[win].astype(np.float64).mean(0)).astype(np.uint8)
        assert (got[p] == want).all()
    changed = image.copy()
    changed[8:12, 9:13] = 255 - changed[8:12, 9:13]  # the patch itself changes nothing of its in-fill
    np.testing.assert_array_equal(s.sample(changed, ys[1:2], xs[1:2], 1, [None]), got[1:2, :1])
