"""The ONNX graph of a group of positions (see the package's docstring): each layer before the cut on its box, as
its change or its new values, the rest of the classifier in full (`Builder`)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ...perf.incremental import ELEMENTWISE, Graph

if TYPE_CHECKING:
    from .executor import Incremental

WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool"})
# element-wise ops that keep finite values finite: beyond the map a change through them is zeroed by multiplying by a
# 0/1 mask (3-5× faster than Where on ONNX Runtime's CPU); after any other op it takes Where, as inf × 0 is NaN
BOUNDED = frozenset("""Abs Add And BatchNormalization Cast Ceil Celu Clip Cos DequantizeLinear Dropout Elu Equal Erf
Floor Gelu Greater GreaterOrEqual HardSigmoid HardSwish Identity LeakyRelu Less LessOrEqual Max Mean Min Mish Mul Neg Not
Or PRelu QuantizeLinear Relu Round Selu Sigmoid Sign Sin Softsign Sub Sum Tanh ThresholdedRelu Where Xor""".split())


class Builder:
    """Walks the graph for one position's plan, emitting the shared graph's nodes (layers `changed` somewhere in
    the group, `incremental` everywhere in it) and recording the position's runtime inputs; the nodes are the same
    at every position of the group, only `runtime` differs."""

    def __init__(self, ex: Incremental, plan, layers, emit: bool = True):
        self.ex, self.g, self.plan, self.emit = ex, ex.graph, plan, emit
        self.changed, self.incremental, self.same, self.partial, self.reach, self.laps = layers
        self.nodes, self.consts, self.photo, self.runtime = [], [], set(), {}
        self.crops, self.places, self.masks = [], [], []  # see Position
        self.absolute = False  # see Position
        self.masked: dict[str, str] = {}  # changed tensor → its change, zero beyond the map
        self.unbounded: set[str] = set()  # changed tensors whose change may not be finite beyond the map
        self.box: dict[str, tuple] = {self.g.input: plan.boxes[self.g.input]}  # a change over a box, batch B
        self.name: dict[str, str] = {}  # changed tensor → its change over its box
        self.full: dict[str, str] = {}  # tensors computed on the whole map, batch B
        self.ints: dict[str, tuple] = {}  # a QuantizeLinear's output → its new integers over its box, the node
        self.n = 0

    # -- small emitters -------------------------------------------------------------------------------------------
    def _fresh(self, stem: str) -> str:
        self.n += 1
        return f"{stem}#{self.n}"

    def _const(self, array) -> str:
        from onnx import numpy_helper

        name = self._fresh("c")
        if self.emit:
            self.consts.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def _rt(self, values) -> str:
        """A runtime int64 input holding `values` at this position."""
        name = self._fresh("r")
        self.runtime[name] = np.asarray(values, np.int64)
        return name

    def _node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self._fresh(op.lower())
        self._emit(op, inputs, [out], **attrs)
        return out

    def _emit(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        """A node of the shared graph; nothing when only the position's runtime inputs are wanted."""
        from onnx import helper

        if self.emit:
            self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def _slice(self, name: str, box, origin) -> str:
        """`name` (values over box `origin`) cut to `box` ⊆ origin, on every axis but the batch."""
        axes = list(range(1, len(box)))
        return self._node("Slice", [name, self._rt([box[a][0] - origin[a][0] for a in axes]),
                                    self._rt([box[a][1] - origin[a][0] for a in axes]),
                                    self._const(np.array(axes, np.int64))])

    def _pad(self, name: str, lead, trail) -> str:
        """Zeros around `name`: lead and trail elements on every axis but the batch."""
        return self._node("Pad", [name, self._rt([0, *lead[1:], 0, *trail[1:]])])

    def _photo(self, t: str) -> str:
        self.photo.add(t)
        return f"{t}@photo"

    # -- a tensor over a box: its change, its values -------------------------------------------------------------
    def delta(self, t: str, box, same: bool = False, masked: bool = False) -> str:
        """The change of tensor `t` (new − photo) over `box`, which may leave its own box and the map (zero there),
        batch B.  same: `box` is t's own box wherever the patch lies (a graph shared by positions may only take
        such shortcuts when they hold at all of them)."""
        have, change = self.box[t], self._masked(t) if masked else self.name[t]
        if same:
            return change
        part = tuple((max(a, c), min(b, d)) for (a, b), (c, d) in zip(have, box))
        v = self._slice(change, (have[0],) + part[1:], have)
        lead = [p[0] - w[0] for p, w in zip(part, box)]
        trail = [w[1] - p[1] for p, w in zip(part, box)]
        return self._pad(v, lead, trail)

    def old(self, t: str, box, pad_value: float | None = None, whole: bool = False) -> str:
        """The photo's tensor `t` over `box`: an input cut on the host, [U, 1, …box…] (a crop per position, padded
        with pad_value where the box leaves the map: a receptive field; `_rows` applies it to each of the position's
        rows).  whole: the box is the whole map at every position, batch 1."""
        if whole:
            return self._photo(t)
        name = self._fresh("crop")
        self.crops.append((name, t, tuple(box), 0.0 if pad_value is None else pad_value))
        return name

    def _rows(self, op: str, x: str, old: str) -> str:
        """op(x, old): x batch B, old from `old`.  A crop applies to its position's rows, consecutive and B / U of
        them (`Incremental.feed`): x is seen as [U, B / U, …] for the op, broadcasting the crop over its rows, with
        no copy of it per row."""
        if old not in {c[0] for c in self.crops}:
            return self._node(op, [x, old])
        y = self._node(op, [self._node("Reshape", [x, self._split(old)]), old])
        return self._node("Reshape", [y, self._node("Shape", [x])])

    def _split(self, crop: str) -> str:
        """[U, -1, …box…]: the shape of a batch-B tensor over crop's box seen by position (see _rows)."""
        return self._node("Concat", [self._dims(crop, 0, 1), self._const(np.array([-1], np.int64)),
                                     self._dims(crop, 2)], axis=0)

    def _dims(self, name: str, lo: int, hi: int = 2 ** 62) -> str:
        """The runtime sizes of tensor `name`'s axes lo…hi−1."""
        return self._node("Slice", [self._node("Shape", [name]), self._const(np.array([lo], np.int64)),
                                    self._const(np.array([hi], np.int64))])

    def _outside(self, t: str) -> bool:
        """Whether t's box leaves its map at some position of the group."""
        return any(lo < 0 or hi > n for (lo, hi), n in zip(self.reach[t], self.g.shapes[t]))

    def _masked(self, t: str) -> str:
        """The change of t, zero where its box leaves the map.  What a layer computes beyond the map is not the
        map's; it stays there through element-wise ops and 1×1 windows, and is cut off where a wider window or the
        placement in the whole map would read it: multiplied by a 0/1 mask, or by Where where it may not be finite
        (`unbounded`)."""
        if not self._outside(t):
            return self.name[t]
        if t not in self.masked:
            name, where = self._fresh("inside"), t in self.unbounded
            self.masks.append((name, t, self.box[t], self.partial[t], where))
            self.masked[t] = self._node("Where", [name, self.name[t], self._const(np.array(0, np.float32))]) \
                if where else self._node("Mul", [self.name[t], name])
        return self.masked[t]

    def _place(self, t: str) -> str:
        """The new values of the changed tensor `t` over its whole map, batch B: its change placed into the map by
        a one-hot matrix per axis its box may cut (an input, per row, as the positions of a batch differ; a box's
        part beyond the map meets no row of it) and added to the photo's map.  Exact: each element is one change
        times 1 plus zeros."""
        rank = len(self.g.shapes[t])
        x = self._masked(t)
        for a in self.partial[t]:
            at = self._fresh("onto")
            self.places.append((at, t, a))
            if a == rank - 2:  # [n, h] @ change
                x = self._node("MatMul", [at, x])
            else:  # the axis last, change @ [h, n], back
                perm = [*(i for i in range(rank) if i != a), a] if a != rank - 1 else None
                if perm:
                    x = self._node("Transpose", [x], perm=perm)
                x = self._node("MatMul", [x, at])
                if perm:
                    x = self._node("Transpose", [x], perm=[int(i) for i in np.argsort(perm)])
        return self._node("Add", [self._photo(t), x])

    def values(self, t: str, box, pad_value: float | None = None, whole: bool = False, same: bool = False,
               masked: bool = False) -> str:
        """Tensor `t` over `box` as the perturbed copies have it: batch B if it changed, else 1 (whole, same: as
        for `old` and `delta`)."""
        if t in self.full:
            return self.full[t] if whole else self._slice(self.full[t], box, tuple((0, n) for n in self.g.shapes[t]))
        if whole and t in self.box and self.partial[t]:
            return self._place(t)
        base = self.old(t, box, pad_value, whole)
        if t in self.box:
            return self._rows("Add", self.delta(t, box, same, masked), base)
        if whole:
            return base
        rows = self._node("Concat", [self._dims("patch", 0, 1), self._dims(base, 2)], axis=0)  # [B, …box…]
        zeros = self._node("Expand", [self._const(np.zeros((1,) * len(box), np.float32)), rows])
        return self._rows("Add", zeros, base)  # an unchanged operand: each row its position's crop

    # -- layers ---------------------------------------------------------------------------------------------------
    def walk(self) -> None:
        box0 = self.box[self.g.input]
        self.name[self.g.input] = self._rows("Sub", "patch", self.old(self.g.input, box0))
        for i, (layer, node) in enumerate(zip(self.plan.layers, self.g.nodes)):
            if not self.changed[i]:
                continue  # unchanged wherever the patch lies: read from the photo where needed
            if not (self.incremental[i] and self._incremental(i, node, layer.box)):
                self._full(node)
        out = self.g.output
        self.result = self.full.get(out) or self.values(out, tuple((0, n) for n in self.g.shapes[out]), whole=True)

    def model(self):
        import onnx
        from onnx import TensorProto, helper

        self.walk()
        self.nodes.append(helper.make_node("Identity", [self.result], ["output"]))
        used = {i for n in self.nodes for i in n.input}
        inits = [self.ex.inits[n] for n in used if n in self.ex.inits]
        box0 = self.plan.boxes[self.g.input]
        dtype = TensorProto.FLOAT
        inputs = [helper.make_tensor_value_info("patch", dtype, ["B"] + [hi - lo for lo, hi in box0[1:]])]
        inputs += [helper.make_tensor_value_info(f"{t}@photo", dtype, list(self.g.shapes[t])) for t in sorted(self.photo)]
        inputs += [helper.make_tensor_value_info(name, dtype, ["U", 1, *(f"{name}:{a}" for a in range(1, len(box)))])
                   for name, _, box, _ in self.crops]
        inputs += [helper.make_tensor_value_info(name, dtype, ["B", *[1] * (len(self.g.shapes[t]) - 3),
                                                                 f"{name}:0", f"{name}:1"])
                   for name, t, _ in self.places]
        inputs += [helper.make_tensor_value_info(name, TensorProto.BOOL if where else dtype, [
            "B", *(f"{name}:{a}" if a in axes else 1 for a in range(1, len(box)))]) for name, _, box, axes, where in self.masks]
        inputs += [helper.make_tensor_value_info(r, TensorProto.INT64, [len(v)]) for r, v in self.runtime.items()]
        out_shape = ["B", *self.g.shapes[self.g.output][1:]]
        graph = helper.make_graph(self.nodes, "incremental", inputs,
                                  [helper.make_tensor_value_info("output", dtype, out_shape)], inits + self.consts)
        model = helper.make_model(graph, opset_imports=self.ex.proto.opset_import, ir_version=self.ex.proto.ir_version)
        onnx.checker.check_model(model)
        return model

    def _incremental(self, index: int, node, out_box) -> bool:
        """Emit `node` on its box; False when this executor cannot (it then runs in full).  The answer may not
        depend on the position: the graph is shared."""
        op, attrs, shapes = node.op_type, self.g.attributes(node), self.g.shapes
        if any(i in self.full for i in node.input if i):
            return False
        if op == "QuantizeLinear" and node.output[0] in self.ints:
            return True  # its unit's (_unit)
        q = self._unit_of(node)
        if q is not None:
            return self._unit(node, q, out_box)
        if op in WINDOWED:
            want = read_box(self.g, node, out_box)
            if want is None:
                return False
            keep = {k: v for k, v in attrs.items() if k not in ("pads", "auto_pad")}
            kernel, _, dil, _ = self.g.window(node)
            wide = any(d * (k - 1) for d, k in zip(dil, kernel))  # reads its input beyond the output's own place
            if op == "MaxPool":  # not linear: the new values' maximum, less the photo's
                new = self._node(op, [self.values(node.input[0], want, -math.inf, masked=True)], **keep)
                out = self._rows("Sub", new, self.old(node.output[0], out_box))
            else:  # linear: the change of the output is the op on the change of the input (no bias)
                weights = [w if w in self.ex.inits else self._photo(w) for w in node.input[1:2]]  # QDQ: dequantized
                lap = self.laps.get(index)
                if lap is None:
                    out = self._node(op, [self.delta(node.input[0], want, masked=wide), *weights], **keep)
                else:  # the zeros around the change are the convolution's own padding: no copy to pad it
                    change = self._masked(node.input[0]) if wide else self.name[node.input[0]]
                    out = self._node(op, [change, *weights], **keep, pads=[*lap[2::2], *lap[3::2]])
        elif op == "QuantizeLinear" or (op == "DequantizeLinear" and node.input[0] in self.ints):
            # integers: a change does not subtract (uint8 wraps, and Sub has no uint8 kernel); carried as the new
            # integers over the box, to the DequantizeLinear nodes that alone read them
            if tuple(out_box[1]) != (0, shapes[node.output[0]][1]) or (op == "QuantizeLinear" and any(
                    c.op_type != "DequantizeLinear" for c in self.g.consumers.get(node.output[0], []))):
                return False
            if op == "QuantizeLinear":
                self.ints[node.output[0]] = (self._node(op, [self.values(node.input[0], out_box), *node.input[1:]],
                                                        **attrs), node)
                return True
            new = self._node(op, [self.ints[node.input[0]][0], *node.input[1:]], **attrs)
            out = self._rows("Sub", new, self.old(node.output[0], out_box))
        elif op in ELEMENTWISE:
            per_channel = op in ("BatchNormalization", "QuantizeLinear", "DequantizeLinear")
            if per_channel and tuple(out_box[1]) != (0, shapes[node.output[0]][1]):
                return False  # their parameters follow axis 1, not numpy's broadcasting: whole channels only
            changed = [i for i in node.input if i in self.box]
            out_t = node.output[0]
            if self._outside(out_t) and any(i in self.ex.inits and not per_channel and any(
                    n != 1 for n in self.ex.inits[i].dims[-len(shapes[out_t]) + 1:]) for i in node.input if i):
                return False  # an operand that varies over the map: cut to a box that leaves it, it would not fit
            if op in ("Add", "Sub") and len(changed) == len(node.input):  # linear in the changes
                out = self._node(op, [self.delta(i, out_box, (index, j) in self.same)
                                      for j, i in enumerate(node.input)])
            else:  # the op on the new values, less the photo's output
                ins = []
                for j, i in enumerate(node.input):
                    if not i or (per_channel and i in self.ex.inits):
                        ins.append(i)
                    elif i in self.ex.inits:
                        ins.append(self._const_box(i, out_box, shapes[node.output[0]]))
                    else:
                        ins.append(self.values(i, _operand_box(out_box, shapes[i], shapes[node.output[0]]),
                                               same=(index, j) in self.same))
                out = self._rows("Sub", self._node(op, ins, **attrs), self.old(node.output[0], out_box))
        elif op == "Transpose" and node.input[0] in self.box:
            perm = attrs.get("perm") or list(reversed(range(len(shapes[node.input[0]]))))
            have = self.box[node.input[0]]
            out = self._node("Transpose", [self.name[node.input[0]]], perm=perm)
            out_box = tuple(have[p] for p in perm)
        else:
            return False
        t = node.output[0]
        self.name[t], self.box[t] = out, tuple(out_box)
        if op == "MaxPool":  # -inf beyond the map: zeroed at once, so that what reads it may multiply by a mask
            self.unbounded.add(t)
            self.name[t] = self._masked(t)
            self.unbounded.discard(t)
        elif op not in WINDOWED | BOUNDED | {"Transpose"} or any(i in self.unbounded for i in node.input) and not (
                op in WINDOWED and wide):  # a wide window read its input masked
            self.unbounded.add(t)
        return True

    def _unit_of(self, node):
        """The QuantizeLinear that alone reads `node`'s output, where every input of `node` the patch can change is
        a DequantizeLinear's output (a QDQ unit: ONNX Runtime runs it as one integer kernel, a QLinearConv,
        QLinearAdd…); else None."""
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or len(node.output) != 1:
            return None
        readers = self.g.consumers.get(node.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or node.output[0] == self.g.output:
            return None
        for i in node.input:
            if i and i not in self.ex.inits and getattr(self.g.producers.get(i), "op_type", None) != "DequantizeLinear":
                return None
        return readers[0]

    def _unit(self, node, q, out_box) -> bool:
        """A QDQ unit on its box, as the full model has it: each changed input's new values over the box it reads,
        quantized again with its DequantizeLinear's parameters (exact: they are dequantized integers) and
        dequantized; the op on them; q.  Its integers are those of the kernel ONNX Runtime fuses the unit into,
        here and in the full model alike (integer sums do not depend on their order), where the op on the change
        would round differently.  Constant inputs (weights and biases dequantized in the graph) are copied, so that
        the unit fuses the same way."""
        op, attrs, shapes = node.op_type, self.g.attributes(node), self.g.shapes
        if tuple(out_box[1]) != (0, shapes[node.output[0]][1]):
            return False  # per-channel parameters follow axis 1: whole channels only
        if op in WINDOWED:
            want = read_box(self.g, node, out_box)
            if want is None:
                return False
            boxes = [want] + [None] * (len(node.input) - 1)
            pad = -math.inf if op == "MaxPool" else 0.0  # what the kernel pads with: the lowest integer, zero
            attrs = {k: v for k, v in attrs.items() if k not in ("pads", "auto_pad")}
        elif op in ELEMENTWISE and op not in ("BatchNormalization",):
            boxes = [_operand_box(out_box, shapes[i], shapes[node.output[0]]) if i else None for i in node.input]
            pad = None
        else:
            return False
        const = {i: i in self.ex.inits or self._constant(self.g.producers[i]) for i in node.input if i}
        if any(box is None and not const[i] for i, box in zip(node.input, boxes) if i) or op in ELEMENTWISE and any(
                i in self.ex.inits and any(n != 1 for n in shapes[i][-len(shapes[node.output[0]]) + 1:])
                for i in node.input if i):
            return False  # a weight that changes, or a constant that varies over the map
        ins = []
        for i, box in zip(node.input, boxes):
            if not i or i in self.ex.inits:
                ins.append(i)
            else:
                values = None if const[i] else self.values(i, box, pad, masked=pad is not None)
                ins.append(self._dequantized(self.g.producers[i], values))
        new = self._node(op, ins, **attrs)
        self.ints[q.output[0]] = (self._node("QuantizeLinear", [new, *q.input[1:]], **self.g.attributes(q)), q)
        return True

    def _constant(self, node) -> bool:
        """Whether `node` reads initializers alone (a DequantizeLinear of weights)."""
        return all(j in self.ex.inits for j in node.input if j)

    def _dequantized(self, dq, values: str | None = None) -> str:
        """DequantizeLinear `dq` in the generated graph: on its own integers (a constant's: the node itself) or on
        `values` quantized again with its parameters (exact where they hold dequantized integers), so that an op
        reading it fuses as in the full model (see _unit)."""
        attrs = self.g.attributes(dq)
        ints = dq.input[0] if values is None else self._node("QuantizeLinear", [values, *dq.input[1:]], **attrs)
        return self._node("DequantizeLinear", [ints, *dq.input[1:]], **attrs)

    def _const_box(self, name: str, out_box, out_shape) -> str:
        """An initializer operand of an element-wise op, cut to the output's box where it is not broadcast."""
        dims = list(self.ex.inits[name].dims)
        pad = len(out_shape) - len(dims)
        axes = [a for a, n in enumerate(dims) if n != 1 and a + pad > 0]
        if not axes:
            return name
        self.absolute = True
        return self._node("Slice", [name, self._rt([out_box[a + pad][0] for a in axes]),
                                    self._rt([out_box[a + pad][1] for a in axes]),
                                    self._const(np.array(axes, np.int64))])

    def _full(self, node) -> None:
        ins = []
        for i in node.input:
            dq = self.g.producers.get(i) if i else None
            if dq is not None and dq.op_type != "DequantizeLinear":
                dq = None
            if not i or i in self.ex.inits:
                ins.append(i)
            elif i in self.full:
                ins.append(self.full[i])
            elif dq is not None and self._constant(dq):
                ins.append(self._dequantized(dq))
            elif i in self.box or dq is not None:
                v = self.values(i, tuple((0, n) for n in self.g.shapes[i]), whole=True)
                ins.append(v if dq is None else self._dequantized(dq, v))  # the reader may be a QDQ unit
            elif i in self.ints:  # quantized over a box (not by a _unit: its reader runs on the box too)
                q = self.ints[i][1]
                whole = self.values(q.input[0], tuple((0, n) for n in self.g.shapes[q.input[0]]), whole=True)
                ins.append(self._node("QuantizeLinear", [whole, *q.input[1:]], **self.g.attributes(q)))
            else:
                ins.append(self._photo(i))
        outs = [self._fresh(o) if o else "" for o in node.output]
        self._emit(node.op_type, ins, outs, name=node.name, domain=node.domain, **self.g.attributes(node))
        for o, new in zip(node.output, outs):
            if o:
                self.full[o] = new


def read_box(graph: Graph, node, out_box) -> tuple | None:
    """The box of a window op's data input that its output's box reads (its pads beyond the map), batch 1;
    None for an average pooling whose divisor at the border counts only the map's pixels (not a crop's)."""
    kernel, strides, dil, pads = graph.window(node)
    if node.op_type == "AveragePool" and any(pads) and not graph.attributes(node).get("count_include_pad", 0):
        return None
    want = [(0, 1), (0, graph.shapes[node.input[0]][1]) if node.op_type == "Conv" else out_box[1]]
    for i in range(len(kernel)):
        lo, hi = out_box[2 + i]
        want.append((lo * strides[i] - pads[i], (hi - 1) * strides[i] - pads[i] + dil[i] * (kernel[i] - 1) + 1))
    return tuple(want)


def lap(want, have) -> tuple:
    """How far box `want` reaches beyond box `have`, axis by axis from the channels: (before, after, …)."""
    return tuple(d for (w0, w1), (h0, h1) in zip(want[1:], have[1:]) for d in (h0 - w0, w1 - h1))


def _operand_box(out_box, shape, out_shape):
    """The box of an element-wise op's operand of `shape` that its output's box reads (broadcasting)."""
    pad = len(out_shape) - len(shape)
    return tuple((0, 1) if n == 1 else out_box[a + pad] for a, n in enumerate(shape))
