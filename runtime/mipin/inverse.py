"""The inverse network as ONNX nodes, one emitter per kind of inverse layer.  The same emitters build the exported
inverse (one graph) and, while fitting, the small graphs that propagate the fitting crops' signals — so the signal
each layer is fitted on is computed exactly as at inference.

Signals carry a leading batch axis (classes at inference, crops while fitting); taps (the classifier's activations
and MaxPool indices) have batch 1 at inference and the crops' batch while fitting, and broadcast either way.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InfolensError

OPSET = 17
IR_VERSION = 10  # onnx 1.23 writes 14 by default, which onnxruntime 1.31 rejects
RESHAPING = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "QuantizeLinear",
             "DequantizeLinear"}


class Graph:
    """ONNX nodes, initializers and inputs being assembled; `model(outputs)` makes them a model."""

    def __init__(self):
        self.nodes, self.inits, self.inputs = [], [], []
        self._names: set[str] = set()
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"inv{self._count}_{hint}"

    def const(self, value, hint: str, dtype=np.float32) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, n_out: int = 1, **attrs):
        outs = [self.fresh(hint) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def input(self, name: str, elem=TensorProto.FLOAT, shape=None) -> str:
        if name not in self._names:
            self._names.add(name)
            self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def model(self, outputs: list[tuple[str, int | None, list | None]]) -> onnx.ModelProto:
        """outputs: (name, element type, shape); an element type of None leaves the output untyped."""
        values = [onnx.ValueInfoProto(name=n) if e is None else helper.make_tensor_value_info(n, e, s)
                  for n, e, s in outputs]
        graph = helper.make_graph(self.nodes, "mipin_inverse", self.inputs, values, self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


# ---- emitters: each returns the name of the contribution to the input's signal --------------------------------

def dense(g: Graph, s: str, theta: np.ndarray, rank: int) -> str:
    """A linear map over channels, the same at every position: theta [C_out, C_in]; s [B, C_out] (rank 2) or
    [B, C_out, h, w] (rank 4, a 1×1 convolution)."""
    if rank == 2:
        return g.node("MatMul", [s, g.const(theta, "theta")], "dense")
    w = np.ascontiguousarray(theta.T)[:, :, None, None]  # Conv weight [C_in, C_out, 1, 1]
    return g.node("Conv", [s, g.const(w, "theta")], "dense")


def conv_transpose(g: Graph, s: str, weight: np.ndarray, geom: dict) -> str:
    """ConvTranspose with the forward conv's geometry (strides, pads, dilations, group, output_padding): weight
    [C_out, C_in / group, kh, kw] maps s [B, C_out, h, w] back to [B, C_in, H, W].

    A depthwise one of stride 1 is emitted as the Conv it equals (kernel flipped, pads k − 1 − p): ONNX Runtime's
    depthwise Conv is several times faster than its grouped ConvTranspose (measured: the shipped inverse 0.24 →
    0.12 s per 64 images).  Spreading a strided one out and convolving measured no faster, so strides > 1 stay
    ConvTranspose."""
    c_out, per_group, kh, kw = weight.shape
    t, l, b, r = geom["pads"]
    pads = [kh - 1 - t, kw - 1 - l, kh - 1 - b, kw - 1 - r]
    if geom["group"] == c_out and per_group == 1 and list(geom["strides"]) == [1, 1] and \
            list(geom["dilations"]) == [1, 1] and not any(geom.get("output_padding", [0, 0])) and min(pads) >= 0:
        flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1])
        return g.node("Conv", [s, g.const(flipped, "convT")], "convT", group=c_out, pads=pads)
    return g.node("ConvTranspose", [s, g.const(weight, "convT")], "convT", **geom)


def delta_features(g: Graph, s: str, c_out: int, kernel: tuple[int, int], geom: dict) -> str:
    """Each channel of s placed by each kernel tap alone: [B, C_out·kh·kw, H, W], channel co·kh·kw + t — the
    features a conv_transpose of this geometry is linear in."""
    kh, kw = kernel
    d = np.zeros((c_out, kh * kw, kh, kw), np.float32)
    d[:, np.arange(kh * kw), np.arange(kh * kw) // kw, np.arange(kh * kw) % kw] = 1
    return g.node("ConvTranspose", [s, g.const(d, "delta")], "delta", **{**geom, "group": c_out})


def mask(g: Graph, s: str, x: str) -> str:
    """s where the forward ReLU passed its input (x, the ReLU's output, ≥ 0: Sign(x) is exactly 1[x ≠ 0]), 0
    elsewhere."""
    return g.node("Mul", [s, g.node("Sign", [x], "on")], "masked")


def reshape(g: Graph, s: str, shape: list[int]) -> str:
    """s to the input's shape (its batch axis kept)."""
    return g.node("Reshape", [s, g.const([-1, *shape[1:]], "shape", np.int64)], "reshape")


def broadcast(g: Graph, s: str, shape: list[int]) -> str:
    """A pooled [B, C, 1, 1] (or [B, C]) signal spread over the input's H×W."""
    s4 = g.node("Reshape", [s, g.const([-1, shape[1], 1, 1], "shape", np.int64)], "pooled")
    return g.node("Expand", [s4, g.const([1, *shape[1:]], "shape", np.int64)], "broadcast")


def transpose(g: Graph, s: str, perm: list[int]) -> str:
    inverse = [int(i) for i in np.argsort(perm)]
    return g.node("Transpose", [s], "transpose", perm=inverse)


def split(g: Graph, s: str, axis: int, sizes: list[int]) -> list[str]:
    outs = g.node("Split", [s, g.const(sizes, "sizes", np.int64)], "split", n_out=len(sizes), axis=axis)
    return outs if isinstance(outs, list) else [outs]


def unpool(g: Graph, s: str, indices: str, shape: list[int], attrs: dict) -> str:
    """MaxPool's inverse: each value back where its window's maximum was (the forward's argmax `indices`, batch 1
    at inference, flat over one image), zeros elsewhere."""
    batch = g.node("Gather", [g.node("Shape", [s], "shape"), g.const(0, "zero", np.int64)], "batch")
    per_image = int(np.prod(shape[1:]))
    offsets = g.node("Mul", [g.node("Range", [g.const(0, "zero", np.int64), batch, g.const(1, "one", np.int64)],
                                    "range"), g.const(per_image, "size", np.int64)], "offsets")
    offsets = g.node("Reshape", [offsets, g.const([-1, 1, 1, 1], "shape", np.int64)], "offsets4")
    local = g.node("Sub", [indices, g.node("Mul", [g.node("Div", [indices, g.const(per_image, "size", np.int64)],
                                                          "image"), g.const(per_image, "size", np.int64)], "base")],
                   "local")
    idx = g.node("Add", [g.node("Expand", [local, g.node("Shape", [s], "shape")], "idx"), offsets], "idx_b")
    out_shape = g.node("Concat", [g.node("Reshape", [batch, g.const([1], "one", np.int64)], "b1"),
                                  g.const(shape[1:], "chw", np.int64)], "out_shape", axis=0)
    return g.node("MaxUnpool", [s, idx, out_shape], "unpool", **attrs)


def add(g: Graph, terms: list[str]) -> str:
    """The signal of a tensor read by several nodes: the sum of their inverses' contributions."""
    total = terms[0]
    for t in terms[1:]:
        total = g.node("Add", [total, t], "sum")
    return total


def run(g: Graph, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    """Run what `g` holds on ONNX Runtime (CPU) for `feeds` (its inputs by name); returns `outputs`."""
    from ..backends import sessions

    model = g.model([(o, None, None) for o in outputs])
    session = sessions.open_session(model.SerializeToString())
    return session.run(outputs, feeds)


def attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def conv_geometry(node, in_shape, out_shape, kernel) -> dict:
    """strides, pads, dilations, output_padding of the ConvTranspose that maps the conv's output grid back onto its
    input grid (the adjoint geometry); auto_pad resolved to explicit pads."""
    a = attrs(node)
    strides = list(a.get("strides", [1, 1]))
    dil = list(a.get("dilations", [1, 1]))
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
    pads = list(a.get("pads", [0, 0, 0, 0]))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = [max((o - 1) * s + k - i, 0) for o, s, k, i in zip(out_shape[2:], strides, k_eff, in_shape[2:])]
        first = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        pads = first + [t - f for t, f in zip(total, first)]
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    extra = [i - ((o - 1) * s - pads[j] - pads[j + 2] + k)
             for j, (i, o, s, k) in enumerate(zip(in_shape[2:], out_shape[2:], strides, k_eff))]
    return {"strides": strides, "pads": pads, "dilations": dil, "output_padding": extra}


def free_layer(g: Graph, n, t: str, shape: list[int], s: str, shapes: dict, indices: dict) -> str:
    """A parameter-free reader n's inverse, from its output's signal s to its input t's shape: while fitting
    (on the crops) and in the export alike.  Its taps are graph inputs named after the tensors; shapes: tensor →
    shape [1, …]; indices: MaxPool output → the tap of its argmax indices."""
    op = n.op_type
    if op in ("Relu", "Clip"):
        return mask(g, s, g.input(n.output[0], TensorProto.FLOAT, ["batch", *shapes[n.output[0]][1:]]))
    if op in RESHAPING or op == "Add":
        return reshape(g, s, shape)
    if op in ("GlobalAveragePool", "ReduceMean"):
        return broadcast(g, s, shape)
    if op == "Transpose":
        return transpose(g, s, attrs(n)["perm"])
    if op == "Concat":
        axis = attrs(n)["axis"] % len(shape)
        sizes = [shapes[i][axis] for i in n.input]
        return split(g, s, axis, sizes)[list(n.input).index(t)]
    if op == "MaxPool":
        a = {k: v for k, v in attrs(n).items() if k in ("kernel_shape", "strides", "pads")}
        idx = g.input(indices[n.output[0]], TensorProto.INT64, ["batch", *shapes[n.output[0]][1:]])
        return unpool(g, s, idx, shape, a)
    raise InfolensError(f"MIP-IN has no inverse for {op} yet", "model")


def param_layer(g: Graph, f: dict, s: str) -> str:
    """A fitted reader's inverse: a dense map (rank 2 through its flat form) or a ConvTranspose."""
    if f["kind"] == "conv":
        return conv_transpose(g, s, f["weight"], f["geom"])
    if f["rank"] == 4:
        return dense(g, s, f["theta"], 4)
    return reshape(g, dense(g, g.node("Flatten", [s], "flat"), f["theta"], 2), f["shape"])


def network(part, plan: list[dict], shapes: dict, mu: dict, indices: dict) -> onnx.ModelProto:
    """The inverse of `part` (mipin/part.py) fitted as `plan` records (mipin/fit.py: per tensor, top-down, its
    parameter-free readers and its fitted ones), around the means `mu`, as one ONNX graph: inputs the logits
    tensor [b, Y], `classes` int64 [k] and the taps the masks and unpooling read [b, …]; outputs `maps` float
    [k, h, w] at the map layer's resolution, and for checks the whole `signal` [k, C, h, w] there and the map
    layer's mean activation `map_mean` [C, h, w].  Either one image (b = 1) and k classes of it, or k = b images
    with one class each (classes[i] of image i)."""
    g = Graph()
    y = g.input(part.logits, TensorProto.FLOAT, ["batch", *shapes[part.logits][1:]])
    classes = g.input("classes", TensorProto.INT64, ["k"])
    n_classes = shapes[part.logits][1]
    onehot = g.node("OneHot", [classes, g.const(n_classes, "depth", np.int64), g.const([0.0, 1.0], "values")],
                    "onehot", axis=-1)
    centred = g.node("Sub", [y, g.const(mu[part.logits], "mu")], "centred")
    signal = {part.logits: g.node("Mul", [onehot, centred], "signal")}
    readers = {n.output[0]: n for n in part.nodes}
    for step in plan:
        t, shape = step["tensor"], step["shape"]
        terms = []
        for out in step["free"]:
            terms.append(free_layer(g, readers[out], t, shape, signal[out], shapes, indices))
        terms += [param_layer(g, f, signal[f["reader"]]) for f in step["param"]]
        signal[t] = add(g, terms)
    # the map: the class's signal times the centred activation it reconstructs, summed over channels
    x_map = g.input(part.map_tensor, TensorProto.FLOAT, ["batch", *shapes[part.map_tensor][1:]])
    mu_map = g.const(mu[part.map_tensor], "mu_map")
    agreement = g.node("Mul", [signal[part.map_tensor], g.node("Sub", [x_map, mu_map], "x_centred")], "agree")
    maps = g.node("ReduceSum", [agreement, g.const([1], "axis", np.int64)], "maps", keepdims=0)
    g.nodes += [onnx.helper.make_node("Identity", [maps], ["maps"]),
                onnx.helper.make_node("Identity", [signal[part.map_tensor]], ["signal"]),
                onnx.helper.make_node("Identity", [mu_map], ["map_mean"])]
    c, h, w = shapes[part.map_tensor][1:]
    model = g.model([("maps", TensorProto.FLOAT, ["k", h, w]), ("signal", TensorProto.FLOAT, ["k", c, h, w]),
                     ("map_mean", TensorProto.FLOAT, [c, h, w])])
    onnx.checker.check_model(model)
    return model
