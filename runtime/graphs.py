"""Edits of a classifier's ONNX graph, made in memory before a session opens (the model file is never changed): a
grey-level front for single-channel models, float16 conversion, and intermediate tensors exposed as extra outputs."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import InfolensError

GREY_FRONT_INPUT = "infolens_rgb"
# Luma weights of R, G, B per formula, as fixed-point fractions n / 2^b: exact in float32, so ⌊Σ w·c + 0.5⌋ is exactly
# the integer (Σ n·c + 2^(b−1)) >> b of the library named.  bt601: OpenCV's cvtColor RGB2GRAY (its 15-bit weights,
# checked equal on every pixel of a test image); pil: PIL's convert("L") (16-bit; differs from OpenCV by one grey level
# on about 0.1 % of pixels); bt709: the BT.709 weights in 15 bits; average: (R + G + B) / 3, which never lands on a half.
LUMA = {"bt601": (9798 / 32768, 19235 / 32768, 3735 / 32768), "pil": (19595 / 65536, 38470 / 65536, 7471 / 65536),
        "bt709": (6967 / 32768, 23435 / 32768, 2366 / 32768), "average": (1 / 3, 1 / 3, 1 / 3)}


def grey_front(model: onnx.ModelProto, input_name: str, layout: str, formula: str, scale: float = 1.0,
               mean: float = 0.0, std: float = 1.0) -> onnx.ModelProto:
    """The model with a 3-channel RGB input in place of its 1-channel one.  The new input, GREY_FRONT_INPUT (same
    element type, same layout, 3 channels), holds raw pixel values 0..255; inside the graph each pixel becomes
    Y = ⌊w_R·R + w_G·G + w_B·B + 0.5⌋ (weights LUMA[formula]), then (Y·scale − mean) / std for a float input, or
    Y itself for a uint8 one — the grey image the vendor's code would have made, then its normalization."""
    graph = model.graph
    old = next(i for i in graph.input if i.name == input_name)
    elem = old.type.tensor_type.elem_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in old.type.tensor_type.shape.dim]
    c_axis = 1 if layout == "NCHW" else 3
    dims[c_axis] = 3
    rgb = GREY_FRONT_INPUT
    w = np.asarray(LUMA[formula], np.float32)
    inits = [numpy_helper.from_array(w.reshape(1, 3, 1, 1) if layout == "NCHW" else w.reshape(3, 1), "infolens_luma"),
             numpy_helper.from_array(np.array(0.5, np.float32), "infolens_half")]
    nodes = []
    x = rgb
    if elem == TensorProto.UINT8:
        nodes.append(helper.make_node("Cast", [rgb], ["infolens_rgb_f"], to=TensorProto.FLOAT))
        x = "infolens_rgb_f"
    nodes += [helper.make_node("Conv" if layout == "NCHW" else "MatMul", [x, "infolens_luma"], ["infolens_y"]),
              helper.make_node("Add", ["infolens_y", "infolens_half"], ["infolens_y_half"]),
              helper.make_node("Floor", ["infolens_y_half"], ["infolens_grey"])]
    if elem == TensorProto.UINT8:
        nodes.append(helper.make_node("Cast", ["infolens_grey"], [input_name], to=TensorProto.UINT8))
    else:
        inits += [numpy_helper.from_array(np.array(v, np.float32), f"infolens_{k}")
                  for k, v in (("scale", scale), ("mean", mean), ("std", std))]
        nodes += [helper.make_node("Mul", ["infolens_grey", "infolens_scale"], ["infolens_scaled"]),
                  helper.make_node("Sub", ["infolens_scaled", "infolens_mean"], ["infolens_centred"]),
                  helper.make_node("Div", ["infolens_centred", "infolens_std"], [input_name])]
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    g = edited.graph
    inputs = [helper.make_tensor_value_info(rgb, elem, dims) if i.name == input_name else i for i in g.input]
    del g.input[:]
    g.input.extend(inputs)
    g.initializer.extend(inits)
    body = list(g.node)
    del g.node[:]
    g.node.extend(nodes + body)
    return edited


# ops that carry a tensor's values through unchanged in meaning (shape, type, quantization)
PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "QuantizeLinear", "DequantizeLinear",
                "Transpose"}


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph computed in float16 by ONNX Runtime's own converter; its float32 inputs and outputs are kept (a
    Cast at each end), so feeds and results do not change type."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        return convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:  # the converter's own failures (e.g. an op it cannot type) as one line
        raise InfolensError(f"cannot convert the model to float16: {str(e).strip().splitlines()[0]}", "fp16") from None


def walk_back(graph: onnx.GraphProto, tensor: str, through=PASS_THROUGH):
    """From `tensor` back through the producers whose op is in `through`: (the first tensor made otherwise, its
    producer node or None for a graph input or initializer)."""
    made_by = {o: node for node in graph.node for o in node.output}
    node = made_by.get(tensor)
    while node is not None and node.op_type in through and node.input:
        tensor = node.input[0]
        node = made_by.get(tensor)
    return tensor, node


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """The model with the tensors `names` (outputs of its nodes) as extra graph outputs, typed by shape inference
    where it can tell (untyped otherwise: ONNX Runtime accepts both)."""
    made = {o for node in model.graph.node for o in node.output}
    missing = [n for n in names if n not in made]
    if missing:
        raise InfolensError(f"model has no tensor named {missing[0]!r}", "model")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        typed = {v.name: v for v in inferred.graph.value_info}
    except Exception:  # inference is a courtesy here: a graph it cannot follow still runs
        typed = {}
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(typed.get(n, onnx.ValueInfoProto(name=n)) for n in dict.fromkeys(names) if n not in have)
    return model
