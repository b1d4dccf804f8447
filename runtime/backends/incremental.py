"""Exact incremental inference (DESIGN §11): the classifier's graph rewritten so that a perturbed copy costs only
what its patch changes.

The photo runs once with the activations the rewritten graphs read kept (`tap`).  `Incremental` writes ONNX graphs
for the patch positions of a grid: a graph's input is the patch alone, [B, …K×K box of the input…] (the in-fills,
normalized), it reads the photo's activations (graph inputs `<tensor>@photo`, batch 1), and every offset, size and
padding that depends on where the patch lies is a runtime int64 input (`feeds`).  Each layer the plan
(perf/incremental.py) marks incremental carries its *change* (new − photo) over its box, batch B: a linear layer
(convolution, average pooling) runs on the change alone — the change cut to the layer's receptive field and padded
with zeros, the op without padding or bias — and an element-wise layer or a max-pooling computes its new values (the
photo's plus the change; -inf beyond the map for max-pooling) less the photo's output.  Every other layer runs as in
the original graph on full maps (the photo's plus the change).  The output is the full forward's up to float
rounding (the linear split reorders the sums).

Positions whose plans cut at the same layer share a graph.  `IncrementalPerturbationBatch` is the batch backend
"incremental" (`--batch-backend incremental`): the copies are composited as on the host, and each position's rows
run through its graph.
"""
from __future__ import annotations

import math

import numpy as np

from ..perf.incremental import ELEMENTWISE, THRESHOLD, Graph, spatial_axes

WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool"})


_EXECUTORS: dict = {}  # (model file, sha256, K, positions) → Incremental, and its sessions by cut


class IncrementalPerturbationBatch:
    """The perturbation batch (backends/cpu.py's interface) of the "incremental" backend: `write` composites the
    in-fills into host rows as the host batch does, `run` takes each position's rows (they come n per position, in
    order) through the graph of its cut, fed the patch's box of those rows, and gives the classifier's
    probabilities.  ys, xs: the grid's positions (the graphs are grouped over them)."""

    def __init__(self, classifier, base: np.ndarray, capacity: int, K: int, ys, xs):
        from ..errors import InfolensError
        from .cpu import CpuPerturbationBatch

        clf = classifier
        if base.dtype != np.float32 or clf.pre.channels != 3 or clf.fp16 or ys is None:
            raise InfolensError("the incremental backend takes float32 RGB models run in float32: choose host or "
                                "composer", "batch_backend")
        self.classifier, self.host = clf, CpuPerturbationBatch(clf, base, capacity, K)
        grid = tuple(zip(np.asarray(ys).tolist(), np.asarray(xs).tolist()))
        key = (clf.model_path, clf.sha256, K, grid)
        if key not in _EXECUTORS:
            ex = Incremental(clf.model_path, K, grid, spatial_axes(clf))
            _EXECUTORS.clear()  # one grid at a time: the graphs of the last one are reused image after image
            _EXECUTORS[key] = ex, {cut: clf.placement.open(g[0].SerializeToString()) for cut, g in ex.graphs.items()}
        self.ex, self.sessions = _EXECUTORS[key]
        self.photo = self.ex.tap(base[None], clf.placement.open)
        self._feeds: dict = {}
        self._pos = np.empty((0, 2), np.int64)

    def write(self, patches: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
        self.host.write(patches, ys, xs)
        self._pos = np.stack([ys, xs], 1)

    def run(self, m: int) -> np.ndarray:
        """float64 [m, Y]: p(Y | row) of rows 0..m−1."""
        rows, pos = self.host.rows, self._pos[:m]
        self.classifier.rows_run += m
        starts = np.flatnonzero(np.r_[True, np.any(pos[1:] != pos[:-1], axis=1)])
        outs = []
        for a, b in zip(starts, np.r_[starts[1:], m]):
            y, x = map(int, pos[a])
            if (y, x) not in self._feeds:
                self._feeds = {(y, x): self.ex.feeds(y, x)}  # in-fills of one position may span two batches
            cut, box, runtime = self._feeds[(y, x)]
            where = (slice(a, b),) + tuple(slice(lo, hi) for lo, hi in box[1:])
            reads = {f"{t}@photo": self.photo[f"{t}@photo"] for t in self.ex.graphs[cut][1]}
            out = self.sessions[cut].run(["output"], {"patch": rows[where], **reads, **runtime})[0]
            outs.append(out.reshape(b - a, -1))
        return self.classifier.to_probs(np.concatenate(outs).astype(np.float64))

    def restore(self, ys: np.ndarray, xs: np.ndarray) -> None:
        self.host.restore(ys, xs)


class Incremental:
    """The executor of one classifier graph for K×K patches at `positions` (row, column of the top-left corner).
    Positions whose plans cut at the same layer share one ONNX graph (a handful of graphs per grid); every offset,
    size and padding that depends on the position is a runtime input (`feeds`).  model: path or onnx.ModelProto
    (batch axis 0 symbolic or 1); spatial: the input's (height, width) axes; threshold: the plan's cut."""

    def __init__(self, model, K: int, positions, spatial=(2, 3), threshold: float = THRESHOLD):
        import onnx

        self.proto = onnx.load(model) if not isinstance(model, onnx.ModelProto) else model
        self.graph = Graph(self.proto, spatial)
        self.K, self.threshold = K, threshold
        self.inits = {t.name: t for t in self.proto.graph.initializer}
        groups: dict[int, list] = {}
        for y, x in positions:
            plan = self.graph.plan(y, x, K, threshold)
            groups.setdefault(_cut(plan), []).append(plan)
        self.graphs = {}  # cut → (model, photo tensors it reads, the group's layers: see _layers)
        for cut, plans in groups.items():
            layers = self._layers(plans)
            builder = _Builder(self, plans[0], layers)
            self.graphs[cut] = (builder.model(), sorted(builder.photo), layers)
        self.reads = sorted({t for _, reads, _ in self.graphs.values() for t in reads})
        self._tap = None  # the tapped photo's session

    def _layers(self, plans) -> tuple:
        """What a group of positions shares: per layer, whether it changes somewhere and whether it runs on its box
        everywhere; and the (layer, input) pairs whose input's box is the layer's output box at every position."""
        n = len(self.graph.nodes)
        changed = [any(p.layers[i].box is not None for p in plans) for i in range(n)]
        incremental = [all(p.layers[i].incremental and p.layers[i].box is not None for p in plans) for i in range(n)]
        same = {(i, j) for i, node in enumerate(self.graph.nodes) if incremental[i] for j, name in enumerate(node.input)
                if name and all(p.boxes.get(name) is not None and p.boxes[name] == p.boxes[node.output[0]]
                                for p in plans)}
        return changed, incremental, same

    def tap(self, photo: np.ndarray, open_session=None) -> dict[str, np.ndarray]:
        """The photo's input and the activations the graphs read (batch 1, the classifier's input space) → the
        graphs' photo inputs: name → array.  open_session(model bytes) → a session (default: on the CPU, by
        sessions.py); the tapped graph's session is kept, image after image."""
        from ..graphs import with_outputs
        from .sessions import open_session as default

        names = [t for t in self.reads if t != self.graph.input]
        if self._tap is None:
            self._tap = (open_session or default)(with_outputs(self.proto, names).SerializeToString())
        acts = {self.graph.input: photo, **dict(zip(names, self._tap.run(names, {self.graph.input: photo})))}
        return {f"{t}@photo": acts[t] for t in self.reads}

    def feeds(self, y: int, x: int) -> tuple[int, tuple, dict]:
        """The graph of the position (a key of `graphs`), the patch's box in the input (index the perturbed copies
        with it to get the graph's "patch") and the position's runtime inputs: name → int64 array."""
        plan = self.graph.plan(y, x, self.K, self.threshold)
        cut = _cut(plan)
        builder = _Builder(self, plan, self.graphs[cut][2], emit=False)
        builder.walk()
        return cut, plan.boxes[self.graph.input], builder.runtime


def _cut(plan) -> int:
    """Index of the plan's first layer that runs in full (past the last when none does)."""
    return len(plan.layers) if plan.cut is None else plan.cut


class _Builder:
    """Walks the graph for one position's plan, emitting the shared graph's nodes (layers `changed` somewhere in
    the group, `incremental` everywhere in it) and recording the position's runtime inputs; the nodes are the same
    at every position of the group, only `runtime` differs."""

    def __init__(self, ex: Incremental, plan, layers, emit: bool = True):
        self.ex, self.g, self.plan, self.emit = ex, ex.graph, plan, emit
        self.changed, self.incremental, self.same = layers
        self.nodes, self.consts, self.photo, self.runtime = [], [], set(), {}
        self.box: dict[str, tuple] = {self.g.input: plan.boxes[self.g.input]}  # a change over a box, batch B
        self.name: dict[str, str] = {}  # changed tensor → its change over its box
        self.full: dict[str, str] = {}  # tensors computed on the whole map, batch B
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

    def _pad(self, name: str, lead, trail, value=None) -> str:
        pads = self._rt([0, *lead[1:], 0, *trail[1:]])
        return self._node("Pad", [name, pads] + ([self._const(np.array(value, np.float32))] if value is not None
                                                 else []))

    def _photo(self, t: str) -> str:
        self.photo.add(t)
        return f"{t}@photo"

    # -- a tensor over a box: its change, its values -------------------------------------------------------------
    def delta(self, t: str, box, same: bool = False) -> str:
        """The change of tensor `t` (new − photo) over `box`, which may leave its own box and the map (zero there),
        batch B.  same: `box` is t's own box wherever the patch lies (a graph shared by positions may only take
        such shortcuts when they hold at all of them)."""
        have = self.box[t]
        if same:
            return self.name[t]
        part = tuple((max(a, c), min(b, d)) for (a, b), (c, d) in zip(have, box))
        v = self._slice(self.name[t], (have[0],) + part[1:], have)
        lead = [p[0] - w[0] for p, w in zip(part, box)]
        trail = [w[1] - p[1] for p, w in zip(part, box)]
        return self._pad(v, lead, trail)

    def old(self, t: str, box, pad_value: float | None = None, whole: bool = False) -> str:
        """The photo's tensor `t` over `box`, batch 1.  pad_value None: the box lies in the map wherever the patch
        lies (a plan's box); else it may leave the map, padded with pad_value there (a receptive field).  whole:
        the box is the whole map at every position."""
        if whole:
            return self._photo(t)
        shape = self.g.shapes[t]
        whole = tuple((0, n) for n in shape)
        inside = ((0, shape[0]),) + tuple((max(0, lo), min(n, hi)) for (lo, hi), n in zip(box[1:], shape[1:]))
        base = self._slice(self._photo(t), inside, whole)
        if pad_value is None:
            return base
        lead = [lo_i - lo for (lo, _), (lo_i, _) in zip(box, inside)]
        trail = [hi - hi_i for (_, hi), (_, hi_i) in zip(box, inside)]
        return self._pad(base, lead, trail, pad_value)

    def values(self, t: str, box, pad_value: float | None = None, whole: bool = False, same: bool = False) -> str:
        """Tensor `t` over `box` as the perturbed copies have it: batch B if it changed, else 1 (whole, same: as
        for `old` and `delta`)."""
        if t in self.full:
            return self.full[t] if whole else self._slice(self.full[t], box, tuple((0, n) for n in self.g.shapes[t]))
        base = self.old(t, box, pad_value, whole)
        return self._node("Add", [base, self.delta(t, box, same)]) if t in self.box else base

    # -- layers ---------------------------------------------------------------------------------------------------
    def walk(self) -> None:
        box0 = self.box[self.g.input]
        self.name[self.g.input] = self._node("Sub", ["patch", self.old(self.g.input, box0)])
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
        if op in WINDOWED:
            in_shape = shapes[node.input[0]]
            kernel, strides, dil, pads = self.g.window(node)
            if op == "AveragePool" and any(pads) and not attrs.get("count_include_pad", 0):
                return False  # the divisor at the border counts only the map's pixels: not a crop's
            want = [(0, 1), (0, in_shape[1]) if op == "Conv" else out_box[1]]
            for i in range(len(kernel)):
                lo, hi = out_box[2 + i]
                want.append((lo * strides[i] - pads[i], (hi - 1) * strides[i] - pads[i] + dil[i] * (kernel[i] - 1) + 1))
            keep = {k: v for k, v in attrs.items() if k not in ("pads", "auto_pad")}
            if op == "MaxPool":  # not linear: the new values' maximum, less the photo's
                new = self._node(op, [self.values(node.input[0], tuple(want), -math.inf)], **keep)
                out = self._node("Sub", [new, self.old(node.output[0], out_box)])
            else:  # linear: the change of the output is the op on the change of the input (no bias)
                out = self._node(op, [self.delta(node.input[0], tuple(want)), *node.input[1:2]], **keep)
        elif op in ELEMENTWISE:
            per_channel = op in ("BatchNormalization", "QuantizeLinear", "DequantizeLinear")
            if per_channel and tuple(out_box[1]) != (0, shapes[node.output[0]][1]):
                return False  # their parameters follow axis 1, not numpy's broadcasting: whole channels only
            changed = [i for i in node.input if i in self.box]
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
                out = self._node("Sub", [self._node(op, ins, **attrs), self.old(node.output[0], out_box)])
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
        dims = list(self.ex.inits[name].dims)
        pad = len(out_shape) - len(dims)
        axes = [a for a, n in enumerate(dims) if n != 1 and a + pad > 0]
        if not axes:
            return name
        return self._node("Slice", [name, self._rt([out_box[a + pad][0] for a in axes]),
                                    self._rt([out_box[a + pad][1] for a in axes]),
                                    self._const(np.array(axes, np.int64))])

    def _full(self, node) -> None:
        ins = []
        for i in node.input:
            if not i or i in self.ex.inits:
                ins.append(i)
            elif i in self.full:
                ins.append(self.full[i])
            elif i in self.box:
                ins.append(self.values(i, tuple((0, n) for n in self.g.shapes[i]), whole=True))
            else:
                ins.append(self._photo(i))
        outs = [self._fresh(o) if o else "" for o in node.output]
        self._emit(node.op_type, ins, outs, name=node.name, domain=node.domain, **self.g.attributes(node))
        for o, new in zip(node.output, outs):
            if o:
                self.full[o] = new


def _operand_box(out_box, shape, out_shape):
    """The box of an element-wise op's operand of `shape` that its output's box reads (broadcasting)."""
    pad = len(out_shape) - len(shape)
    return tuple((0, 1) if n == 1 else out_box[a + pad] for a, n in enumerate(shape))
