"""Incremental-inference plans (DESIGN §11): for a K×K patch at (y, x) of a classifier's input, the box of every
tensor of its ONNX graph that can differ from the photo's, and the multiply-adds a pass that recomputes only those
boxes costs against a full forward.

A box is one [lo, hi) interval per axis of the tensor.  Convolutions and pooling grow a box by their receptive field
(any stride, padding, dilation, groups); element-wise ops keep it, Add/Mul/… take the union of their inputs' (after
broadcasting: a changed axis of size 1 broadcast over a map changes the whole map, as a squeeze-and-excitation
gate does), Concat and Transpose move it, Resize scales it with a halo of one; a reduction over an axis, and every
op this module does not know, changes all of its output.  From the first tensor whose box covers at least
`threshold` of it (or that an unknown op made), the graph runs in full: the plan's cut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple  # tuple[tuple[int, int], ...]: [lo, hi) per axis

# ops whose output element depends only on the same element of each input (with broadcasting)
ELEMENTWISE = frozenset("""Abs Acos Add And BatchNormalization Cast Ceil Celu Clip Cos DequantizeLinear Div Dropout
Elu Equal Erf Exp Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish Identity IsInf IsNaN LeakyRelu Less
LessOrEqual Log Max Mean Min Mish Mod Mul Neg Not Or PRelu Pow QuantizeLinear Reciprocal Relu Round Selu Sigmoid Sign
Sin Softplus Softsign Sqrt Sub Sum Tan Tanh ThresholdedRelu Where Xor""".split())
WINDOWED = frozenset({"Conv", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"})
# ops that never read their data input's values: an output as unchanged as the shapes
SHAPE_ONLY = frozenset({"Shape", "Size", "Constant", "ConstantOfShape", "EyeLike"})
THRESHOLD = 0.5  # a box over this share of its tensor: from there the graph runs in full


@dataclass
class Layer:
    """One node of the plan: its output's box (None: unchanged), whether it runs on the box alone (`incremental`)
    or in full, and its multiply-adds in full and in the incremental pass."""

    name: str
    op: str
    shape: tuple
    box: Box | None
    incremental: bool
    macs_full: int
    macs: int

    @property
    def share(self) -> float:
        """Share of the output tensor inside the box (0 when unchanged)."""
        return 0.0 if self.box is None else _size(self.box) / max(1, math.prod(self.shape))


@dataclass
class Plan:
    """The plan of one patch position: its layers in graph order, every tensor's box, the first op that is not
    supported (None when all are), and the totals."""

    layers: list[Layer]
    boxes: dict  # tensor name → its box (None: unchanged), whatever runs in full
    unsupported: str | None = None
    cut: int | None = None  # index of the first layer that runs in full although its input changed

    @property
    def macs_full(self) -> int:
        return sum(layer.macs_full for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


class Graph:
    """An ONNX classifier's graph with every tensor's static shape (batch 1), ready for `plan`.

    model: a path or an onnx.ModelProto; spatial: the input's (height axis, width axis) — (2, 3) for NCHW, (1, 2)
    for NHWC."""

    def __init__(self, model, spatial=(2, 3)):
        import onnx
        from onnx import shape_inference

        proto = onnx.load(model) if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__") else model
        proto = _batch_one(proto)
        proto = shape_inference.infer_shapes(proto, data_prop=True)
        g = proto.graph
        self.initializers = {t.name: t for t in g.initializer}
        inputs = [i for i in g.input if i.name not in self.initializers]
        self.input = inputs[0].name
        self.shapes = {}
        for v in [*g.input, *g.value_info, *g.output]:
            dims = v.type.tensor_type.shape.dim
            self.shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims)
        for t in g.initializer:
            self.shapes[t.name] = tuple(t.dims)
        self.nodes = list(g.node)
        self.consumers: dict[str, list] = {}  # tensor → the nodes that read it
        self.producers = {o: n for n in self.nodes for o in n.output}  # tensor → the node that writes it
        for n in self.nodes:
            for i in dict.fromkeys(n.input):
                self.consumers.setdefault(i, []).append(n)
        self.spatial = tuple(spatial)
        self.output = g.output[0].name
        self._attrs = {id(n): _parse_attributes(n) for n in self.nodes}  # parsed once: plans run per position
        self.macs_full = [_macs(n, self) for n in self.nodes]

    def attributes(self, node) -> dict:
        """The node's attributes, name → value."""
        return self._attrs[id(node)]

    def window(self, node) -> tuple[list, list, list, list]:
        """A convolution's or pooling's kernel, strides, dilations and leading pads per spatial axis (auto_pad
        resolved)."""
        attrs, shapes = self.attributes(node), self.shapes
        in_shape, out_shape = shapes[node.input[0]], shapes[node.output[0]]
        nsp = len(in_shape) - 2
        kernel = attrs.get("kernel_shape") or list(shapes[node.input[3 if node.op_type == "QLinearConv" else 1]][2:])
        strides = attrs.get("strides") or [1] * nsp
        dilations = attrs.get("dilations") or [1] * nsp
        return kernel, strides, dilations, _leading_pads(attrs, in_shape[2:], out_shape[2:], kernel, strides,
                                                         dilations)

    def plan(self, y: int, x: int, K: int, threshold: float = THRESHOLD, clip: bool = True) -> Plan:
        """The plan for a K×K patch whose top-left corner is at row y, column x of the input.  clip False: the
        boxes are not cut at the borders of their maps (a box may start below 0 or end past the map), so that they
        have the same shape wherever the patch lies: the executor batches positions that way, and computes (and
        counts the multiply-adds of) these boxes, the part beyond the map included — which also decides where the
        pass runs in full."""
        shape = self.shapes[self.input]
        box = [(0, n) for n in shape]
        (hy, wx) = self.spatial
        box[hy], box[wx] = (y, min(y + K, shape[hy])), (x, min(x + K, shape[wx]))
        boxes: dict[str, Box | None] = {self.input: tuple(box)}
        full: set[str] = set()  # changed tensors that are computed in full
        plan = Plan([], boxes)
        for node, macs_full in zip(self.nodes, self.macs_full):
            name = node.name or node.output[0]
            ins = [boxes.get(n) for n in node.input]
            out_shape = self.shapes.get(node.output[0], ())
            if all(b is None for b in ins):
                boxes.update((o, None) for o in node.output)
                plan.layers.append(Layer(name, node.op_type, out_shape, None, True, macs_full, 0))
                continue
            try:
                outs = _propagate(node, ins, self, clip)
                runs_full = any(n in full for n in node.input) or any(
                    b is not None and _size(b) >= threshold * max(1, math.prod(self.shapes[o]))
                    for o, b in zip(node.output, outs))
            except _Unsupported:
                outs, runs_full = [_whole(self.shapes.get(o, ())) for o in node.output], True
                plan.unsupported = plan.unsupported or node.op_type
            if runs_full:
                full.update(node.output)
                if plan.cut is None:
                    plan.cut = len(plan.layers)
            boxes.update(zip(node.output, outs))
            plan.layers.append(Layer(name, node.op_type, out_shape, outs[0], not runs_full, macs_full,
                                     macs_full if runs_full else _macs(node, self, outs[0])))
        return plan


class _Unsupported(Exception):
    pass


def _batch_one(proto):
    """A copy whose symbolic input and output dimensions are 1, so that shape inference gives every tensor."""
    import onnx

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for v in [*proto.graph.input, *proto.graph.output]:
        for d in v.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 1
    return proto


def _whole(shape) -> Box:
    return tuple((0, n) for n in shape)


def _clip(box: Box, shape) -> Box:
    """The part of `box` inside a map of `shape`."""
    return tuple((max(0, lo), min(n, hi)) for (lo, hi), n in zip(box, shape))


def _size(box: Box) -> int:
    return math.prod(max(0, hi - lo) for lo, hi in box)


def _parse_attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple((min(p[0], q[0]), max(p[1], q[1])) for p, q in zip(a, b))


def _broadcast(box: Box | None, shape, out_shape) -> Box | None:
    """`box` of a tensor of `shape` seen through numpy broadcasting to `out_shape`."""
    if box is None:
        return None
    pad = len(out_shape) - len(shape)
    out = []
    for axis, n in enumerate(out_shape):
        if axis < pad:
            out.append((0, n))
        elif shape[axis - pad] == 1 and n != 1:
            out.append((0, n))  # a changed axis of size 1, repeated over the whole axis
        else:
            out.append(box[axis - pad])
    return tuple(out)


def _window(lo: int, hi: int, k: int, s: int, p: int, d: int, n_out: int, clip: bool = True) -> tuple[int, int]:
    """Output positions [lo', hi') whose window (kernel k, stride s, leading pad p, dilation d) meets input [lo, hi)
    (clip False: not cut to [0, n_out))."""
    first = -((-(lo + p - d * (k - 1))) // s)  # ceil
    last = (hi - 1 + p) // s
    return (max(0, first), min(n_out, last + 1)) if clip else (first, last + 1)


def _leading_pads(attrs, in_sp, out_sp, kernel, strides, dilations) -> list[int]:
    """Leading pads per spatial axis, auto_pad included."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        lead = []
        for i, o, k, s, d in zip(in_sp, out_sp, kernel, strides, dilations):
            total = max(0, (o - 1) * s + (k - 1) * d + 1 - i)
            lead.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        return lead
    if auto == "VALID":
        return [0] * len(in_sp)
    pads = attrs.get("pads") or [0] * (2 * len(in_sp))
    return list(pads[:len(in_sp)])


def _propagate(node, ins: list, graph: Graph, clip: bool = True) -> list:
    """Output boxes of `node` from its inputs' (None: unchanged); _Unsupported for an op not handled.  clip False:
    windows are not cut at the map's borders (Plan's nominal boxes)."""
    op, attrs = node.op_type, graph.attributes(node)
    shapes = graph.shapes
    out_shapes = [shapes.get(o) for o in node.output]
    if any(s is None or 0 in s for s in out_shapes[:1]):
        raise _Unsupported(op)
    out_shape = out_shapes[0]
    if op in SHAPE_ONLY:
        return [None] * len(node.output)
    if op in ELEMENTWISE:
        box = None
        for name, b in zip(node.input, ins):
            if name:
                box = _union(box, _broadcast(b, shapes[name], out_shape))
        return [box] + [None] * (len(node.output) - 1)
    if op in WINDOWED:
        data = ins[0]
        if data is None or any(b is not None for b in ins[1:]):
            raise _Unsupported(op)  # changed weights: not a convolution of the photo's activations
        kernel, strides, dilations, pads = graph.window(node)
        channels = (0, out_shape[1]) if op in ("Conv", "ConvInteger", "QLinearConv") else data[1]
        spatial = tuple(_window(*data[2 + i], kernel[i], strides[i], pads[i], dilations[i], out_shape[2 + i], clip)
                        for i in range(len(kernel)))
        box = (data[0], channels, *spatial)
        inside = _clip(spatial, out_shape[2:])
        return [None if any(hi <= lo for lo, hi in inside) else box] + [None] * (len(node.output) - 1)
    if op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"):
        return [(ins[0][0], ins[0][1], *((0, n) for n in out_shape[2:]))]
    if op == "Concat":
        axis = attrs["axis"] % len(out_shape)
        box, offset = None, 0
        for name, b in zip(node.input, ins):
            n = shapes[name][axis]
            if b is not None:
                moved = tuple((lo + offset, hi + offset) if a == axis else (lo, hi) for a, (lo, hi) in enumerate(b))
                box = _union(box, moved)
            offset += n
        return [box]
    if op == "Transpose":
        perm = attrs.get("perm") or list(reversed(range(len(out_shape))))
        return [tuple(ins[0][p] for p in perm)]
    if op == "Pad":
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if len(node.input) > 1 and node.input[1] in graph.initializers:
            from onnx import numpy_helper

            pads = numpy_helper.to_array(graph.initializers[node.input[1]]).tolist()
        else:
            pads = attrs.get("pads")
        if pads is None or any(b is not None for b in ins[1:]) or len(pads) != 2 * len(out_shape):
            raise _Unsupported(op)
        box = []
        for a, (lo, hi) in enumerate(ins[0]):
            lo, hi = lo + pads[a], hi + pads[a]
            if mode != "constant":  # reflected or repeated border values: a box at the border reaches the padding
                n_in = shapes[node.input[0]][a]
                if lo - pads[a] < pads[a] + 1:
                    lo = 0
                if hi - pads[a] > n_in - pads[len(out_shape) + a] - 1:
                    hi = out_shape[a]
            box.append((max(0, lo), min(out_shape[a], hi)))
        return [tuple(box)]
    if op in ("Resize", "Upsample"):
        in_shape = shapes[node.input[0]]
        box = []
        for (lo, hi), n_in, n_out in zip(ins[0], in_shape, out_shape):
            if n_in == n_out:
                box.append((lo, hi))
            else:
                scale = n_out / n_in
                box.append((max(0, math.floor(lo * scale) - 1), min(n_out, math.ceil(hi * scale) + 1)))
        return [tuple(box)]
    if op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceProd") or all(
            b is None or b == _whole(shapes[name]) for name, b in zip(node.input, ins)):
        return [_whole(s or ()) for s in out_shapes]  # and any op on inputs changed throughout (the head: Reshape, Gemm)
    raise _Unsupported(op)


def _macs(node, graph: Graph, box: Box | None = None) -> int:
    """Multiply-adds of a Conv, Gemm or MatMul node — over its whole output, or over `box` of it; 0 for other ops."""
    shapes = graph.shapes
    op = node.op_type
    out = shapes.get(node.output[0])
    if not out or 0 in out:
        return 0
    elems = math.prod(out) if box is None else _size(box)
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = shapes[node.input[1 if op != "QLinearConv" else 3]]
        return elems * math.prod(w[1:])  # per output element: (C_in / groups) · kernel
    if op in ("Gemm", "MatMul"):
        a = shapes[node.input[0]]
        trans = graph.attributes(node).get("transA", 0) if op == "Gemm" else 0
        inner = a[-2] if trans else a[-1]
        return elems * inner
    return 0


def positions(H: int, W: int, K: int, S: int) -> list[tuple[int, int]]:
    """The patch grid's top-left corners (methods.grid.patch_grid) as (row, column) pairs."""
    from ..methods.grid import patch_grid

    ys, xs = patch_grid(H, W, K, S)
    return list(zip(np.asarray(ys).tolist(), np.asarray(xs).tolist()))


def spatial_axes(classifier) -> tuple[int, int]:
    """The (height, width) axes of an OnnxClassifier's input, in the layout its card or its input shape gives."""
    return (2, 3) if classifier.nchw else (1, 2)


def report(classifier, K: int, S: int, threshold: float = THRESHOLD) -> list[str]:
    """`infolens perf --incremental-plan`: what an exact incremental pass would save on an OnnxClassifier's model
    at K and S — multiply-adds per perturbed copy against a full forward, over every position of the grid, and per
    layer."""
    import os

    from ..methods.grid import check_grid

    model_path = classifier.model_path
    graph = Graph(model_path, spatial_axes(classifier))
    shape = graph.shapes[graph.input]
    H, W = shape[graph.spatial[0]], shape[graph.spatial[1]]
    check_grid(K, S, 1, 0, H, W)
    grid = positions(H, W, K, S)
    plans = [graph.plan(y, x, K, threshold) for y, x in grid]
    full = plans[0].macs_full
    macs = np.array([p.macs for p in plans], np.float64)
    worst, best = grid[int(macs.argmax())], grid[int(macs.argmin())]
    lines = [f"incremental-inference plan of {os.path.basename(model_path)} ({H}×{W}), K={K}, S={S}: "
             f"{len(grid)} positions; a layer whose changed box covers ≥ {threshold:.0%} of its output runs in full "
             "from there on",
             f"multiply-adds per perturbed copy: full forward {full / 1e6:,.1f} M; incremental {macs.mean() / 1e6:,.1f} "
             f"M on average → {full / macs.mean():.2f}× fewer (best {full / macs.min():.2f}× at {best}, worst "
             f"{full / macs.max():.2f}× at {worst})"]
    uncut = np.mean([graph.plan(y, x, K, threshold=math.inf).macs for y, x in grid])
    lines.append(f"without the cut (every changed box recomputed, however large): {full / uncut:.2f}× fewer — the "
                 "bound for an exact incremental pass")
    executed = np.mean([graph.plan(y, x, K, threshold, clip=False).macs for y, x in grid])
    lines.append(f"as the executor (--incremental) runs it: {full / executed:.2f}× fewer (its boxes are not cut at the "
                 "border, so that every position's have the same shapes and positions run together)")
    unsupported = sorted({p.unsupported for p in plans if p.unsupported})
    if unsupported:
        lines.append(f"ops the plan does not know, run in full from there: {', '.join(unsupported)}")
    lines += ["", "| layer | op | output | changed (centre patch) | share, mean over positions | runs in full at | "
              "full M | incremental M, mean |", "|---|---|---|---|---:|---:|---:|---:|"]
    centre = plans[len(plans) // 2]
    for i, layer in enumerate(centre.layers):
        if not layer.macs_full:
            continue
        box = layer.box
        changed = "—" if box is None else "×".join(str(hi - lo) for lo, hi in box[-2:]) if len(box) == 4 else "all"
        shares = np.array([p.layers[i].share for p in plans])
        in_full = np.mean([not p.layers[i].incremental for p in plans])
        mean = np.mean([p.layers[i].macs for p in plans])
        lines.append(f"| {layer.name} | {layer.op} | {'×'.join(map(str, layer.shape[1:]))} | {changed} | "
                     f"{shares.mean():.1%} | {in_full:.0%} of positions | {layer.macs_full / 1e6:.2f} | "
                     f"{mean / 1e6:.2f} |")
    return lines
