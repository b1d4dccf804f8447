"""Exact incremental inference (DESIGN §11): the classifier's graph rewritten for one patch position so that a
perturbed copy costs only what its patch changes.

The photo runs once with every activation kept (`tap`).  For a patch at (y, x), `build` writes an ONNX graph whose
input is the patch alone, [B, …the input's box…] (the in-fills, normalized), and which reads the photo's activations
(graph inputs named `<tensor>@photo`, batch 1): each layer the plan (perf/incremental.py) marks incremental runs on
its changed box only — a convolution or a pooling on the box's receptive field, cut from the photo's activation with
the changed part pasted in (Slice, Pad, Where) and the map's own padding added where the field leaves the map, then
the op without padding; element-wise ops on the box.  Every other layer runs as in the original graph on full maps
(the photo's with the box pasted in).  The maps are the full forward's up to float rounding.

This is the executor's first, exact form: one graph per position, built and checked in the tests; batching by box
shape with runtime offsets, so that one graph serves many positions, is its next step.
"""
from __future__ import annotations

import math

import numpy as np

from ..perf.incremental import ELEMENTWISE, THRESHOLD, Graph

WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool"})


class Incremental:
    """The executor of one classifier graph.  model: path or onnx.ModelProto (batch axis 0 symbolic or 1);
    spatial: the input's (height, width) axes; threshold: the plan's cut."""

    def __init__(self, model, spatial=(2, 3), threshold: float = THRESHOLD):
        import onnx

        self.proto = onnx.load(model) if not isinstance(model, onnx.ModelProto) else model
        self.graph = Graph(self.proto, spatial)
        self.threshold = threshold
        self.inits = {t.name: t for t in self.proto.graph.initializer}

    def activations(self) -> list[str]:
        """The tensors `tap` keeps: every node output."""
        return [o for n in self.graph.nodes for o in n.output if o]

    def tap(self, photo: np.ndarray, providers=("CPUExecutionProvider",)) -> dict[str, np.ndarray]:
        """The photo's input and every activation (batch 1, the classifier's input space): name → array."""
        import onnxruntime as ort

        from ..graphs import with_outputs

        names = self.activations()
        session = ort.InferenceSession(with_outputs(self.proto, names).SerializeToString(), providers=list(providers))
        out = session.run(names, {self.graph.input: photo})
        return {self.graph.input: photo, **dict(zip(names, out))}

    def build(self, y: int, x: int, K: int):
        """The graph for a K×K patch at (y, x) → (onnx.ModelProto, the input's box, the photo activations it reads,
        the plan).  Its input "patch" is [B, …box…] of the classifier's input; its output the classifier's."""
        return _Builder(self, y, x, K).model()


class _Builder:
    def __init__(self, ex: Incremental, y: int, x: int, K: int):
        self.ex, self.g = ex, ex.graph
        self.plan = self.g.plan(y, x, K, ex.threshold)
        self.nodes, self.consts, self.photo = [], [], set()
        self.box: dict[str, tuple] = {self.g.input: self.plan.boxes[self.g.input]}  # values over a box, batch B
        self.name: dict[str, str] = {self.g.input: "patch"}
        self.full: dict[str, str] = {}  # tensors computed on the whole map, batch B
        self.n = 0

    # -- small emitters -------------------------------------------------------------------------------------------
    def _fresh(self, stem: str) -> str:
        self.n += 1
        return f"{stem}#{self.n}"

    def _const(self, array) -> str:
        from onnx import numpy_helper

        name = self._fresh("c")
        self.consts.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def _node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = self._fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def _slice(self, name: str, box, origin) -> str:
        """`name` (values over box `origin`) cut to `box` ⊆ origin."""
        if tuple(box) == tuple(origin):
            return name
        axes = [a for a, (b, o) in enumerate(zip(box, origin)) if b != o]
        starts = [box[a][0] - origin[a][0] for a in axes]
        ends = [box[a][1] - origin[a][0] for a in axes]
        return self._node("Slice", [name, self._const(np.array(starts, np.int64)),
                                    self._const(np.array(ends, np.int64)), self._const(np.array(axes, np.int64))])

    def _photo(self, t: str) -> str:
        self.photo.add(t)
        return f"{t}@photo"

    # -- values of a tensor over a box ----------------------------------------------------------------------------
    def values(self, t: str, want, pad_value: float = 0.0) -> str:
        """Tensor `t` over box `want` (which may leave the map: padded with pad_value there), batch B if it changed,
        else 1."""
        shape = self.g.shapes[t]
        inside = tuple((max(0, lo), min(n, hi)) for (lo, hi), n in zip(want, shape))
        inside = ((0, shape[0]),) + inside[1:]
        if t in self.full:
            base = self._slice(self.full[t], inside, tuple((0, n) for n in shape))
        else:
            base = self._slice(self._photo(t), inside, tuple((0, n) for n in shape))
            if t in self.box:
                base = self._paste(t, base, inside)
        lead = [lo_i - lo for (lo, _), (lo_i, _) in zip(want, inside)]
        trail = [hi - hi_i for (_, hi), (_, hi_i) in zip(want, inside)]
        lead[0] = trail[0] = 0
        if any(lead) or any(trail):
            base = self._node("Pad", [base, self._const(np.array(lead + trail, np.int64)),
                                      self._const(np.array(pad_value, np.float32))])
        return base

    def _paste(self, t: str, base: str, where) -> str:
        """The changed values of `t` pasted into `base` (photo values over box `where`)."""
        have = self.box[t]
        part = tuple((max(a, c), min(b, d)) for (a, b), (c, d) in zip(have, where))
        if any(hi <= lo for lo, hi in part[1:]):
            return base
        v = self._slice(self.name[t], (have[0],) + part[1:], have)
        lead = [p[0] - w[0] for p, w in zip(part, where)]
        trail = [w[1] - p[1] for p, w in zip(part, where)]
        lead[0] = trail[0] = 0
        padded = self._node("Pad", [v, self._const(np.array(lead + trail, np.int64))]) if any(lead + trail) else v
        mask = np.zeros([1] + [hi - lo for lo, hi in where[1:]], bool)
        mask[(slice(None),) + tuple(slice(p[0] - w[0], p[1] - w[0]) for p, w in zip(part[1:], where[1:]))] = True
        return self._node("Where", [self._const(mask), padded, base])

    # -- layers ---------------------------------------------------------------------------------------------------
    def model(self):
        import onnx
        from onnx import TensorProto, helper

        for layer, node in zip(self.plan.layers, self.g.nodes):
            if layer.box is None:
                continue  # unchanged: read from the photo where needed
            if not (layer.incremental and self._incremental(node, layer.box)):
                self._full(node)
        out = self.g.output
        result = self.full.get(out) or self.values(out, tuple((0, n) for n in self.g.shapes[out]))
        self.nodes.append(helper.make_node("Identity", [result], ["output"]))
        used = {i for n in self.nodes for i in n.input}
        inits = [self.ex.inits[n] for n in used if n in self.ex.inits]
        box0 = self.plan.boxes[self.g.input]
        dtype = TensorProto.FLOAT
        inputs = [helper.make_tensor_value_info("patch", dtype, ["B"] + [hi - lo for lo, hi in box0[1:]])]
        inputs += [helper.make_tensor_value_info(f"{t}@photo", dtype, list(self.g.shapes[t])) for t in sorted(self.photo)]
        graph = helper.make_graph(self.nodes, "incremental", inputs,
                                  [helper.make_tensor_value_info("output", dtype, ["B", *self.g.shapes[out][1:]])],
                                  inits + self.consts)
        model = helper.make_model(graph, opset_imports=self.ex.proto.opset_import, ir_version=self.ex.proto.ir_version)
        onnx.checker.check_model(model)
        return model, box0, sorted(self.photo), self.plan

    def _incremental(self, node, out_box) -> bool:
        """Emit `node` on its box; False when this executor cannot (it then runs in full)."""
        from onnx import helper

        from ..perf.incremental import attributes, leading_pads

        op, attrs, shapes = node.op_type, attributes(node), self.g.shapes
        if any(i in self.full for i in node.input if i):
            return False
        if op in WINDOWED:
            in_shape, out_shape = shapes[node.input[0]], shapes[node.output[0]]
            nsp = len(in_shape) - 2
            kernel = attrs.get("kernel_shape") or list(shapes[node.input[1]][2:])
            strides = attrs.get("strides") or [1] * nsp
            dil = attrs.get("dilations") or [1] * nsp
            pads = leading_pads(node, attrs, in_shape[2:], out_shape[2:], kernel, strides, dil)
            want = [(0, 1), (0, in_shape[1]) if op == "Conv" else out_box[1]]
            for i in range(nsp):
                lo, hi = out_box[2 + i]
                want.append((lo * strides[i] - pads[i], (hi - 1) * strides[i] - pads[i] + dil[i] * (kernel[i] - 1) + 1))
            leaves = any(lo < 0 or hi > n for (lo, hi), n in zip(want[2:], in_shape[2:]))
            if op == "AveragePool" and leaves and not attrs.get("count_include_pad", 0):
                return False  # the divisor at the border counts only the map's pixels: not a crop's
            fill = -math.inf if op == "MaxPool" else 0.0
            crop = self.values(node.input[0], tuple(want), fill)
            keep = {k: v for k, v in attrs.items() if k not in ("pads", "auto_pad")}
            out = self._fresh(node.output[0])
            self.nodes.append(helper.make_node(op, [crop, *node.input[1:]], [out], **keep))
        elif op in ELEMENTWISE:
            per_channel = op in ("BatchNormalization", "QuantizeLinear", "DequantizeLinear")
            if per_channel and tuple(out_box[1]) != (0, shapes[node.output[0]][1]):
                return False  # their parameters follow axis 1, not numpy's broadcasting: whole channels only
            ins = []
            for i in node.input:
                if not i or (per_channel and i in self.ex.inits):
                    ins.append(i)
                elif i in self.ex.inits:
                    ins.append(self._const_box(i, out_box, shapes[node.output[0]]))
                else:
                    ins.append(self.values(i, _operand_box(out_box, shapes[i], shapes[node.output[0]])))
            out = self._fresh(node.output[0])
            self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        elif op == "Transpose" and node.input[0] in self.box:
            perm = attrs.get("perm") or list(reversed(range(len(shapes[node.input[0]]))))
            have = self.box[node.input[0]]
            out = self._node("Transpose", [self.name[node.input[0]]], perm=perm)
            out_box = tuple(have[p] for p in perm)
        else:
            return False
        self.name[node.output[0]], self.box[node.output[0]] = out, tuple(out_box)
        return True

    def _const_box(self, name: str, out_box, out_shape) -> str:
        """An initializer operand of an element-wise op, cut to the output's box where it is not broadcast."""
        from onnx import numpy_helper

        array = numpy_helper.to_array(self.ex.inits[name])
        pad = len(out_shape) - array.ndim
        index = tuple(slice(None) if n == 1 else slice(*out_box[a + pad]) for a, n in enumerate(array.shape))
        return name if all(s == slice(None) for s in index) else self._const(array[index])

    def _full(self, node) -> None:
        from onnx import helper

        ins = []
        for i in node.input:
            if not i or i in self.ex.inits:
                ins.append(i)
            elif i in self.full:
                ins.append(self.full[i])
            elif i in self.box:
                ins.append(self.values(i, tuple((0, n) for n in self.g.shapes[i])))
            else:
                ins.append(self._photo(i))
        outs = [self._fresh(o) if o else "" for o in node.output]
        self.nodes.append(helper.make_node(node.op_type, ins, outs, name=node.name, domain=node.domain,
                                           **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
        for o, new in zip(node.output, outs):
            if o:
                self.full[o] = new


def _operand_box(out_box, shape, out_shape):
    """The box of an element-wise op's operand of `shape` that its output's box reads (broadcasting)."""
    pad = len(out_shape) - len(shape)
    return tuple((0, 1) if n == 1 else out_box[a + pad] for a, n in enumerate(shape))
