"""MIP-IN's view of a classifier graph: the inverted part found by walking back from the logits, and the taps."""
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from infolens.errors import InfolensError
from infolens.mipin.part import inverted_part, taps

IR_VERSION = 10


def small_cnn(path=None, middle="Relu", top="Relu", clip_min=0.0, depthwise_stride=None):
    """input [B,3,32,32] → conv 3→8 → Relu → MaxPool 2 → conv 8→8 → `middle` → Add(the MaxPool output) → Clip(min
    clip_min, 6) → GAP → Flatten → Gemm 8→5 → Softmax: a residual CNN with every op MIP-IN must walk over.
    depthwise_stride: a depthwise 3x3 conv of that stride and a Relu between the first Relu and the MaxPool."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.3, (5, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(5, np.float32), "fc_b"),
             numpy_helper.from_array(np.array(clip_min, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Conv", ["mp", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node(middle, ["c2"], ["r2"], name="act2"),
             helper.make_node("Add", ["r2", "mp"], ["res"], name="add"),
             helper.make_node("Clip", ["res", "lo", "hi"], ["r3"], name="relu6"),
             helper.make_node("GlobalAveragePool", ["r3"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    if depthwise_stride:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32), "wdw"))
        nodes[2:2] = [helper.make_node("Conv", ["r1", "wdw"], ["cd"], group=8, pads=[1, 1, 1, 1],
                                       strides=[depthwise_stride] * 2, name="dw"),
                      helper.make_node("Relu", ["cd"], ["rd"], name="relu_dw")]
        nodes[4].input[0] = "rd"
    if top != "Relu":  # an op MIP-IN has no inverse for, between the pooled features and the classifier
        nodes.insert(8, helper.make_node(top, ["gap"], ["gap2"], name="odd"))
        nodes[9].input[0] = "gap2"
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["B", 3, 32, 32])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    if path:
        onnx.save(model, str(path))
    return model


def part(model, **kw):
    return inverted_part(model, "input", "probs", [1, 3, 32, 32], **kw)


def test_default_map_layer_is_the_first_tensor_on_every_path_with_enough_resolution():
    p = part(small_cnn())
    assert p.logits == "logits"  # the Softmax's input
    assert [c.tensor for c in p.chain] == ["logits", "flat", "gap", "r3", "res"][:len(p.chain)]
    assert p.map_tensor == "r3" and p.map_shape == [1, 8, 16, 16]
    assert [n.op_type for n in p.nodes] == ["GlobalAveragePool", "Flatten", "Gemm"]


def test_a_deeper_map_layer_walks_over_the_residual_block_and_the_max_pool():
    p = part(small_cnn(), map_layer="r1")
    chain = [c.tensor for c in p.chain]
    assert chain == ["logits", "flat", "gap", "r3", "res", "mp", "r1"]
    assert "c2" not in chain and "r2" not in chain, "tensors inside the residual block are not on every path"
    assert p.map_shape == [1, 8, 32, 32]
    assert [n.op_type for n in p.nodes] == ["MaxPool", "Conv", "Relu", "Add", "Clip", "GlobalAveragePool", "Flatten",
                                            "Gemm"]


def test_unsupported_ops_stop_the_walk_and_are_named():
    p = part(small_cnn(middle="Tanh"))  # inside the residual block: the walk stops above it
    assert p.map_tensor == "r3" and "Tanh" not in [n.op_type for n in p.nodes]
    with pytest.raises(InfolensError, match="unsupported op Tanh") as err:
        part(small_cnn(middle="Tanh"), map_layer="r1")
    assert err.value.param == "map_layer"
    with pytest.raises(InfolensError, match="cannot invert this model: unsupported op Sigmoid") as err:
        part(small_cnn(top="Sigmoid"))
    assert err.value.param == "model"
    with pytest.raises(InfolensError, match="unsupported op Clip"):  # Clip(min −1) is not a ReLU
        part(small_cnn(clip_min=-1.0), map_layer="res")


def test_budget_of_inverse_ops():
    with pytest.raises(InfolensError, match="budget of 4 inverse ops"):
        part(small_cnn(), map_layer="r1", max_ops=4)
    assert part(small_cnn(), map_layer="res", max_ops=4).map_tensor == "res"
    with pytest.raises(InfolensError, match="cannot invert this model: budget of 2 inverse ops"):
        part(small_cnn(), max_ops=2)  # the 1x1 pooled tensor is no map


def test_taps_leave_the_outputs_unchanged_and_expose_max_pool_indices(tmp_path):
    model = small_cnn()
    p = part(model, map_layer="r1")
    tapped, indices = taps(model, p)
    assert indices == {"mp": "mp_infolens_indices"}
    x = np.random.default_rng(1).normal(0, 1, (4, 3, 32, 32)).astype(np.float32)
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    both = ort.InferenceSession(tapped.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in both.get_outputs()]
    assert {"r1", "mp", "c2", "r2", "res", "r3", "gap", "flat", "logits", "mp_infolens_indices"} <= set(names)
    out = dict(zip(names, both.run(None, {"input": x})))
    np.testing.assert_array_equal(out["probs"], plain.run(None, {"input": x})[0])
    typed = {o.name: o for o in tapped.graph.output}
    assert typed["mp_infolens_indices"].type.tensor_type.elem_type == TensorProto.INT64
    assert [d.dim_value for d in typed["r1"].type.tensor_type.shape.dim[1:]] == [8, 32, 32]
    # the indices point at each 2x2 window's maximum in the flattened r1
    r1, mp, idx = out["r1"], out["mp"], out["mp_infolens_indices"]
    np.testing.assert_array_equal(r1.reshape(-1)[idx.reshape(-1)], mp.reshape(-1))


@pytest.mark.slow
def test_mipin_layers_command_on_the_shipped_classifier():
    r = subprocess.run([sys.executable, "-m", "infolens", "mipin", "layers"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    head = r.stdout.splitlines()[0]
    assert "map layer" in head and "[1, 672, 14, 14]" in head
    assert "← map layer" in r.stdout
    r = subprocess.run([sys.executable, "-m", "infolens", "mipin", "layers", "--map-layer", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.rstrip().endswith("(--map-layer)")
