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

OPSET = 17
IR_VERSION = 10  # onnx 1.23 writes 14 by default, which onnxruntime 1.31 rejects


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
