"""Model-randomization sanity check: what is randomized (and what never is), the cascade order, the command."""
import json
import math

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_builders
from conftest import run_cli
from infolens.evaluate.sanity import layer_table, layers, randomize, schedule, step_model


def _chain(path=None, seed=0):
    """x [N, 6] → MatMul(w1)+b1 → Clip(0, 6) → MatMul(w2) → Reshape(int64 shape) → MatMul(w3)+b3 → logits [N, 4].

    Besides the weights it holds float scalars (Clip bounds, shared by two Clips), an int64 Reshape shape and an
    int64 axes tensor (ReduceSum), which must never be touched; w2 is also read by an earlier Mul (shared)."""
    rng = np.random.default_rng(seed)
    arrays = {"w1": rng.normal(0.3, 0.5, (6, 64)), "b1": rng.normal(0, 0.1, 64),
              "w2": rng.normal(-0.2, 0.2, (64, 64)), "w3": rng.normal(0, 1.0, (64, 4)),
              "b3": np.array([0.1, -0.1, 0.2, 0.0]), "lo": np.array(0.0), "hi": np.array(6.0)}
    inits = [numpy_helper.from_array(a.astype(np.float32), k) for k, a in arrays.items()]
    inits += [numpy_helper.from_array(np.array([-1, 64], np.int64), "shape"),
              numpy_helper.from_array(np.array([1], np.int64), "axes")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Add", ["h1", "b1"], ["h1b"], name="fc1_bias"),
             helper.make_node("Clip", ["h1b", "lo", "hi"], ["a1"], name="act1"),
             helper.make_node("ReduceSum", ["w2", "axes"], ["w2sum"], name="w2_rowsum"),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
             helper.make_node("Clip", ["h2", "lo", "hi"], ["a2"], name="act2"),
             helper.make_node("Reshape", ["a2", "shape"], ["a2r"], name="flat"),
             helper.make_node("MatMul", ["a2r", "w3"], ["h3"], name="fc3"),
             helper.make_node("Add", ["h3", "b3"], ["logits"], name="fc3_bias")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=onnx_builders.OPSET, ir_version=onnx_builders.IR_VERSION)
    onnx.checker.check_model(model)
    return model


def _inits(model):
    return {t.name: t for t in model.graph.initializer}


def test_layers_follow_the_graph_and_skip_non_weights(tmp_path):
    table = layer_table(_chain())
    # w2 is read by w2_rowsum first and fc2 later: it belongs to fc2, the one the cascade reaches first
    assert [r["node"] for r in table] == ["fc1", "fc1_bias", "fc2", "fc3", "fc3_bias"]
    assert layers(_chain()) == [["w1"], ["b1"], ["w2"], ["w3"], ["b3"]]
    flat = onnx_builders.classifier(tmp_path / "flat.onnx", rank=2)  # an int64 Reshape shape before the Conv
    assert [(r["op"], r["tensors"]) for r in layer_table(onnx.load(flat))] == [("Conv", ["conv_w"]),
                                                                               ("MatMul", ["dense_w"])]


def test_randomize_changes_listed_floats_and_nothing_else():
    model = _chain()
    new = randomize(model, ["w1", "w2", "b3"], seed=3)
    before, after = _inits(model), _inits(new)
    for name in ("w1", "w2", "b3"):
        a, b = numpy_helper.to_array(before[name]), numpy_helper.to_array(after[name])
        assert b.shape == a.shape and b.dtype == a.dtype
        assert not np.any(a == b), name  # every element redrawn
    w2, r2 = numpy_helper.to_array(before["w2"]), numpy_helper.to_array(after["w2"])  # 4096 values
    assert r2.mean() == pytest.approx(w2.mean(), abs=0.02) and r2.std() == pytest.approx(w2.std(), rel=0.05)
    assert np.corrcoef(w2.ravel(), r2.ravel())[0, 1] < 0.1  # fresh values, not a perturbation
    for name in ("b1", "w3", "lo", "hi", "shape", "axes"):  # unlisted floats, scalars, int64 shape and axes
        assert after[name].SerializeToString() == before[name].SerializeToString(), name
    assert [n.SerializeToString() for n in new.graph.node] == [n.SerializeToString() for n in model.graph.node]
    # the whole cascade never lists the scalars or the integer tensors, so they stay byte-identical at the end too
    full = _inits(randomize(model, [n for layer in layers(model) for n in layer], seed=3))
    for name in ("lo", "hi", "shape", "axes"):
        assert full[name].SerializeToString() == before[name].SerializeToString(), name


def test_randomize_is_seeded_per_tensor_and_rejects_non_weights():
    model = _chain()
    alone = numpy_helper.to_array(_inits(randomize(model, ["w3"], seed=5))["w3"])
    together = numpy_helper.to_array(_inits(randomize(model, ["b3", "w1", "w3"], seed=5))["w3"])
    np.testing.assert_array_equal(alone, together)  # the call's other tensors do not shift a tensor's stream
    assert not np.array_equal(alone, numpy_helper.to_array(_inits(randomize(model, ["w3"], seed=6))["w3"]))
    from infolens import InfolensError

    with pytest.raises(InfolensError, match="neither a float nor a quantized weight"):
        randomize(model, ["shape"])
    with pytest.raises(InfolensError, match="no initializer"):
        randomize(model, ["nope"])


def test_randomized_model_still_runs(tmp_path):
    import onnxruntime as ort

    model = randomize(_chain(), [n for layer in layers(_chain()) for n in layer], seed=0)
    onnx.save(model, str(tmp_path / "r.onnx"))
    out = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.ones((2, 6), np.float32)})[0]
    assert out.shape == (2, 4) and np.isfinite(out).all()


def test_cascade_randomizes_the_last_i_layers_at_step_i():
    model = _chain()
    names = layers(model)
    orig = _inits(model)
    for i in range(len(names) + 1):
        step = _inits(step_model(model, names, i, seed=1))
        changed = {k for k in orig if step[k].SerializeToString() != orig[k].SerializeToString()}
        assert changed == {n for layer in names[len(names) - i:] for n in layer}, i


def test_schedule():
    assert schedule(3, 1) == [1, 2, 3]
    assert schedule(50) == [1, 6, 11, 16, 21, 26, 31, 36, 41, 46, 50]  # default: 5 per step, ≤ 11 steps
    assert schedule(50, 20) == [1, 21, 41, 50] and schedule(1) == [1]


@pytest.mark.slow
def test_sanity_command_end_to_end(tmp_path, image_file, model_file):
    out = tmp_path / "sanity"
    r = run_cli("eval", "sanity", image_file, "--model", model_file, "-K", "4", "-S", "4", "--out", out, "-q")
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "sanity.json").read_text())
    assert [r["node"] for r in rec["layers"]] == ["Conv_0", "MatMul_3"]
    steps = rec["steps"]
    assert [s["layers_randomized"] for s in steps] == [0, 1, 2]
    assert [s["nodes"] for s in steps] == [[], ["MatMul_3"], ["MatMul_3", "Conv_0"]]  # from the output down
    for name in ("pmi", "ig"):
        assert steps[0]["correlation"][name]["spearman"] == pytest.approx(1.0)
        assert steps[0]["correlation"][name]["pearson"] == pytest.approx(1.0)
        assert abs(steps[-1]["correlation"][name]["spearman"]) < 0.6
        assert abs(steps[-1]["correlation"][name]["pearson"]) < 0.6
    assert rec["params"]["sampler"] == "gray" and rec["params"]["K"] == 4
    assert all(s["forwards"] == steps[0]["forwards"] for s in steps)
    for png in ("sanity_correlation.png", "sanity_maps.png"):
        img = cv2.imread(str(out / png))
        assert img is not None and img.shape[1] > 200
    table = r.stdout.strip().splitlines()
    assert table[0].split()[:2] == ["step", "layers"] and len(table) == 4 and "+1.000" in table[1]


@pytest.mark.slow
def test_sanity_command_bad_input(tmp_path, image_file, model_file):
    r = run_cli("eval", "sanity", image_file, "--model", model_file, "--steps-every", "0", "--out", tmp_path, "-q")
    assert r.returncode == 2 and "--steps-every" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("eval", "sanity", tmp_path / "missing.png", "--model", model_file, "--out", tmp_path, "-q")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_qdq_quantized_model_randomizes_its_int8_weights_and_keeps_scales(tmp_path, model_file):
    """A QDQ model (quantized by ONNX Runtime's own tool, per channel): the layers are Conv and MatMul, their
    tensors the int8 weights; scales and zero points are untouched, so the layers still dequantize."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Images(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{"input": rng.normal(0, 1, (1, 3, 17, 19)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.items, None)

    qdq = str(tmp_path / "qdq.onnx")
    quantize_static(model_file, qdq, Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    model = onnx.load(qdq)
    inits = {t.name: t for t in model.graph.initializer}
    table = layer_table(model)
    assert [row["op"] for row in table] == ["Conv", "MatMul"]
    weights = [n for row in table for n in row["tensors"]]
    assert all(inits[n].data_type == TensorProto.INT8 for n in weights), weights
    scales = [n for n in inits if n not in weights]
    assert any(math.prod(inits[n].dims) > 1 for n in scales), "per-channel scales exist and must stay"
    out = randomize(model, weights, seed=3)
    after = {t.name: t for t in out.graph.initializer}
    for n in scales:
        assert after[n].SerializeToString() == inits[n].SerializeToString(), n
    for n in weights:
        a, b = numpy_helper.to_array(inits[n]), numpy_helper.to_array(after[n])
        assert b.dtype == np.int8 and not np.array_equal(a, b)
        assert abs(b.astype(float).std() - a.astype(float).std()) < 0.2 * a.astype(float).std() + 1
    sess = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(0, 1, (2, 3, 17, 19)).astype(np.float32)
    assert np.isfinite(sess.run(None, {"input": x})[0]).all()
