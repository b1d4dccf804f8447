"""Exact incremental inference (DESIGN §11): the classifier's graph rewritten so that a perturbed copy costs only
what its patch changes (`--incremental`; `decide` says where it runs).

The photo runs once with the activations the rewritten graphs read kept (`tap`).  `Incremental` writes ONNX graphs
for the patch positions of a grid, from plans (perf/incremental.py) whose boxes are not cut at the map's border, so
that every position's boxes have the same shapes: a graph's input is the patch alone, [B, …K×K box of the input…]
(the in-fills, normalized). Each layer before the plan's cut carries its *change* (new − photo) over its box: a
linear layer (convolution, average pooling) runs on the change alone — cut to the layer's receptive field and padded
with zeros, the op without bias (a convolution whose zeros around the change are the same at every position of the
graph takes them as its own padding, no copy) — and an element-wise layer or a max-pooling computes its new values
(the photo's crop plus the change; -inf beyond the map for max-pooling) less the photo's output. What a layer
computes beyond the map is masked to zero before a window wider than one element reads it. At the cut the change is
placed into the photo's map by one-hot matrices and the rest runs as in the original graph. The output is the full
forward's up to float rounding (the linear split reorders the sums).

What differs between positions is an input: the photo's crops (cut on the host, a batch's crops of a tensor in one
gather from its map padded once per image; gathered per row by "row"), the masks and the one-hot matrices; offsets
relative to the boxes are int64 inputs, equal for positions of one `Position.key` (the same alignment to the
network's strides), which run together in one batch. Positions whose plans cut at the same layer share a graph.
Positions a period apart (the strides' least common multiple) have one plan, moved: the executor plans one position
per class of the period (`Incremental._plan`), so its warm-up and memory do not grow with the number of positions.

Quantized (QDQ) models: a QDQ unit (DequantizeLinear → op → QuantizeLinear, which ONNX Runtime runs as one integer
kernel) runs on its inputs' new values requantized, not on the change, so that it fuses into the same kernel and
gives the same integers (`_Builder._unit`); integers pass on as new values over the box, not as a change.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from ..perf.incremental import ELEMENTWISE, THRESHOLD, Graph, Plan, spatial_axes

WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool"})


_EXECUTORS: OrderedDict = OrderedDict()  # (model file, sha256, K, positions) → Incremental, its sessions by cut,
# the seconds they took to build
KEPT = 4  # the executors of this many grids stay (the last used): a server's jobs of a few K and strides take turns
_PREDICTIONS: dict = {}  # (sha256, K, grid) → predicted speed-up, the op that cut the plan early or None
AUTO_GAIN = 1.5  # --incremental auto: on where the plan predicts at least this many times fewer multiply-adds
SAMPLED = 7  # the prediction plans a SAMPLED × SAMPLED subgrid of the positions
RECENT = 512  # Incremental keeps this many positions' needs (a batch's, in `position`'s order)


def decide(classifier, K: int, ys, xs) -> bool:
    """Whether the patches at (ys, xs) run incrementally on `classifier`, by its `incremental`: "on" (one line
    naming what stops it, else yes), "auto" (where the model can and the plan predicts at least AUTO_GAIN× fewer
    multiply-adds at these positions, measured on a subgrid of them).  Records what it chose on the classifier
    (`incremental_used`: used, predicted speed-up, why not; the batch adds build_s, the seconds the grid's graphs
    and sessions took to build, once per process and grid, and kept_mb, the photo's activations kept for the
    image in MB), for the explanation's JSON."""
    from ..errors import InfolensError

    clf, on = classifier, classifier.incremental == "on"
    why = None
    if clf.pre.dtype != "float32" or clf.pre.channels != 3 or clf.fp16:
        why = "it takes float32 RGB models run in float32"
    predicted = op = None
    if why is None:
        predicted, op = _prediction(clf, K, ys, xs)
        if op is not None:
            why = (f"the model's op {op} is not supported, and it comes before the patch's change covers most of "
                   "its map")
    if why and on:
        raise InfolensError(f"incremental inference cannot run this model: {why}; auto falls back to full forwards",
                            "incremental")
    used = on or (why is None and predicted >= AUTO_GAIN)
    clf.incremental_used = {"used": used, **({"predicted_speedup": round(predicted, 2)} if predicted else {}),
                            **({"why_not": why} if why and not used else {})}
    return used


def _prediction(clf, K: int, ys, xs) -> tuple[float, str | None]:
    """A full forward's multiply-adds over the executor's (its plans' boxes not cut at the border), mean over a
    SAMPLED × SAMPLED subgrid of (ys, xs); the op that cut some of those plans short of the threshold (unsupported),
    if any."""
    uy, ux = np.unique(ys), np.unique(xs)
    key = (clf.sha256, K, tuple(uy.tolist()), tuple(ux.tolist()))
    if key not in _PREDICTIONS:
        import onnx

        graph = Graph(onnx.load(clf.model_path), spatial_axes(clf))
        pick = lambda u: u[np.linspace(0, len(u) - 1, min(SAMPLED, len(u))).round().astype(int)]  # noqa: E731
        plans = [graph.plan(int(y), int(x), K, clip=False) for y in pick(uy) for x in pick(ux)]
        early = [p.unsupported for p in plans if p.unsupported and p.cut is not None and
                 p.layers[p.cut].op == p.unsupported]
        _PREDICTIONS[key] = (plans[0].macs_full / max(1.0, float(np.mean([p.macs for p in plans]))),
                             early[0] if early else None)
    return _PREDICTIONS[key]


class IncrementalPerturbationBatch:
    """The perturbation batch (backends/cpu.py's interface) of incremental inference: `write` composites the
    in-fills into host rows as the host batch does, `run` takes the rows of each `Position.key` through its graph in
    one run, fed the patch's box of those rows, and gives the classifier's probabilities; `order` groups the
    positions so that batches hold one key.  ys, xs: the grid's positions (the graphs are built for them)."""

    def __init__(self, classifier, base: np.ndarray, capacity: int, K: int, ys, xs):
        from .cpu import CpuPerturbationBatch

        clf = classifier
        self.classifier, self.host = clf, CpuPerturbationBatch(clf, base, capacity, K)
        grid = tuple(zip(np.asarray(ys).tolist(), np.asarray(xs).tolist()))
        key = (clf.model_path, clf.sha256, K, grid)
        if key not in _EXECUTORS:
            while len(_EXECUTORS) >= KEPT:
                _EXECUTORS.popitem(last=False)
            t0 = time.perf_counter()
            ex = Incremental(clf.model_path, K, grid, spatial_axes(clf))
            sessions = {cut: clf.placement.open(g[0].SerializeToString()) for cut, g in ex.graphs.items()}
            _EXECUTORS[key] = ex, sessions, round(time.perf_counter() - t0, 2)
        _EXECUTORS.move_to_end(key)
        self.ex, self.sessions, clf.incremental_used["build_s"] = _EXECUTORS[key]
        self.photo = self.ex.tap(base[None], clf.placement.open)
        self._pos: list = []

    def order(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The order to visit positions (ys, xs) in: those that run in one batch (`Position.key`) together."""
        keys: dict = {}
        rank = [keys.setdefault(self.ex.key(y, x), len(keys)) for y, x in zip(ys.tolist(), xs.tolist())]
        return np.argsort(rank, kind="stable")

    def write(self, patches: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
        self.host.write(patches, ys, xs)
        self._pos = list(zip(ys.tolist(), xs.tolist()))

    def run(self, m: int) -> np.ndarray:
        """float64 [m, Y]: p(Y | row) of rows 0..m−1, the rows of each `Position.key` in one run."""
        rows, where = self.host.rows, self._pos[:m]
        self.classifier.rows_run += m
        keys = [self.ex.key(*w) for w in where]
        out = None
        for key in dict.fromkeys(keys):
            idx = [i for i, k in enumerate(keys) if k == key]
            patch = np.stack([rows[i][tuple(slice(lo, hi) for lo, hi in self.ex.position(*where[i]).box[1:])]
                              for i in idx])
            res = self.sessions[key[0]].run(["output"], self.ex.feed(self.photo, [where[i] for i in idx], patch))[0]
            if out is None:
                out = np.empty((m, res[0].size), res.dtype)
            out[idx] = res.reshape(len(idx), -1)
        kept = sum(v.nbytes if isinstance(k, str) else v[0].nbytes for k, v in self.photo.items())
        self.classifier.incremental_used["kept_mb"] = round(kept / 1e6, 3)  # grows as crops pad the photo's maps
        return self.classifier.to_probs(out.astype(np.float64))

    def restore(self, ys: np.ndarray, xs: np.ndarray) -> None:
        self.host.restore(ys, xs)


class Incremental:
    """The executor of one classifier graph for K×K patches at `positions` (row, column of the top-left corner).
    Positions whose plans cut at the same layer share one ONNX graph (a handful of graphs per grid); what depends on
    the position is an input (`position`, `feed`).  model: path or onnx.ModelProto
    (batch axis 0 symbolic or 1); spatial: the input's (height, width) axes; threshold: the plan's cut."""

    def __init__(self, model, K: int, positions, spatial=(2, 3), threshold: float = THRESHOLD):
        import onnx

        self.proto = onnx.load(model) if not isinstance(model, onnx.ModelProto) else model
        self.graph = Graph(self.proto, spatial)
        self.K, self.threshold = K, threshold
        self.inits = {t.name: t for t in self.proto.graph.initializer}
        self.period, self.steps = _steps(self.graph)
        self._runtime: dict[tuple, dict] = {}
        self._classes: dict[tuple, list] = {}  # (y, x) mod period → [first position, its plan, its Position]
        self._direct: dict[tuple, object] = {}  # position → its plan, then its Position: planned one by one
        self._recent: dict[tuple, Position] = {}  # the last positions moved (`position`)
        groups: dict[int, _Group] = {}
        for plan in self._plan(positions):
            groups.setdefault(_cut(plan), _Group(self.graph, plan)).add(plan)
        self.graphs = {}  # cut → (model, photo tensors it reads whole, the group's layers: see _Group)
        reads: set[str] = set()
        for cut, group in groups.items():
            layers = group.layers()
            builder = _Builder(self, group.plan, layers)
            self.graphs[cut] = (builder.model(), sorted(builder.photo), layers)
            reads |= builder.photo | {c[1] for c in builder.crops}
        self.reads = sorted(reads)
        self.whole = {self.graph.input}.union(*(g[1] for g in self.graphs.values()))  # tensors fed whole, not cut
        self._tap = None  # the tapped photo's session

    def _plan(self, positions):
        """Plans for the positions, by class: positions a whole number of periods apart in both axes (the network's
        strides' least common multiple) have the same plan moved by so many boxes' steps (`_steps`), as long as no
        box of the incremental part empties at the map's border on the way (checked at the class's extreme
        translations) — planned once per class, which keeps the executor's memory and its warm-up bounded by the
        period, not by the number of positions.  Where moving does not give the plan (checked on the class's farthest
        position, planned for real), or a position's patch leaves the input, its positions are planned one by one.
        Yields plans that bound every position's boxes (for `_Group`), a class's at a time."""
        P, (H, W) = self.period, (self.graph.shapes[self.graph.input][a] for a in self.graph.spatial)
        members: dict[tuple, list] = {}
        for y, x in dict.fromkeys(map(tuple, positions)):
            if y + self.K <= H and x + self.K <= W:
                members.setdefault((y % P, x % P), []).append((y, x))
            else:
                self._direct[(y, x)] = None
        for cls, at in members.items():
            (y0, x0), (y1, x1) = at[0], at[-1]
            first = self.graph.plan(y0, x0, self.K, self.threshold, clip=False)
            ay = [(y - y0) // P for y, _ in at]
            bx = [(x - x0) // P for _, x in at]
            corners = [self._moved(first, a, b) for a in {min(ay), max(ay)} for b in {min(bx), max(bx)}]
            alike = len(at) == 1 or _alike(self._moved(first, (y1 - y0) // P, (x1 - x0) // P), self.graph.plan(
                y1, x1, self.K, self.threshold, clip=False), self.graph.input)
            if None not in corners and alike:
                self._classes[cls] = [(y0, x0), first, None]
                yield from corners  # the class's first position lies between them
            else:
                self._direct.update(dict.fromkeys(at))
        for y, x in [p for p, v in self._direct.items() if v is None]:
            self._direct[(y, x)] = plan = self.graph.plan(y, x, self.K, self.threshold, clip=False)
            yield plan

    def _moved(self, plan, a: int, b: int):
        """`plan` for the patch a periods lower and b to the right: every changed box moved by its steps; None where
        a box of the incremental part would leave its map entirely there (the plan would find it unchanged)."""
        def move(t, box):
            return box if box is None or t not in self.steps else _shifted(box, self.steps[t], a, b)

        layers = []
        for layer, node in zip(plan.layers, self.graph.nodes):
            box = move(node.output[0], layer.box)
            if layer.incremental and box is not None:
                if node.output[0] not in self.steps or any(hi <= 0 or lo >= n for (lo, hi), n in zip(
                        box, self.graph.shapes[node.output[0]])):
                    return None
            layers.append(replace(layer, box=box))
        return Plan(layers, {t: move(t, box) for t, box in plan.boxes.items()}, plan.unsupported, plan.cut)

    def tap(self, photo: np.ndarray, open_session=None) -> dict[str, np.ndarray]:
        """The photo's input and the activations the graphs read (batch 1, the classifier's input space): tensor
        name → array (as `feed` cuts crops, (name, pad value) → the map padded and its margins, in place of the
        map where it is only cut).  open_session(model bytes) → a session (default: on the CPU, by sessions.py);
        the tapped graph's session is kept, image after image."""
        from ..graphs import with_outputs
        from .sessions import open_session as default

        names = [t for t in self.reads if t != self.graph.input]
        if self._tap is None:
            self._tap = (open_session or default)(with_outputs(self.proto, names).SerializeToString())
        return {self.graph.input: photo, **dict(zip(names, self._tap.run(names, {self.graph.input: photo})))}

    def key(self, y: int, x: int) -> tuple:
        """`Position.key` of the patch at (y, x), one of `positions`, without moving its class's needs there."""
        entry = self._classes.get((y % self.period, x % self.period))
        if (y, x) in self._direct or entry is None or self._first(entry).absolute:
            return self.position(y, x).key
        return entry[2].key

    def position(self, y: int, x: int) -> Position:
        """What the patch at (y, x), one of `positions`, needs beyond its group's graph: its class's first
        position's, worked out once, moved (`Position.moved`); the last few are kept."""
        if (y, x) in self._direct:
            if not isinstance(self._direct[(y, x)], Position):
                self._direct[(y, x)] = self._walk(self._direct[(y, x)])
            return self._direct[(y, x)]
        if (y, x) not in self._recent:
            P = self.period
            entry = self._classes[(y % P, x % P)]
            (y0, x0), plan, first = entry[0], entry[1], self._first(entry)
            if first.absolute and (y, x) != (y0, x0):  # offsets into a constant: its own runtime inputs
                self._direct[(y, x)] = self._moved(plan, (y - y0) // P, (x - x0) // P)
                return self.position(y, x)
            if len(self._recent) >= RECENT:
                self._recent.clear()
            self._recent[(y, x)] = first.moved((y - y0) // P, (x - x0) // P, self.steps, self.graph.input)
        return self._recent[(y, x)]

    def _first(self, entry: list) -> Position:
        """The Position of a class's first position, worked out on first use."""
        if entry[2] is None:
            entry[2] = self._walk(entry[1])
            if not entry[2].absolute:
                entry[1] = None  # moved Positions need no plan
        return entry[2]

    def _walk(self, plan) -> Position:
        cut = _cut(plan)
        b = _Builder(self, plan, self.graphs[cut][2], emit=False)
        b.walk()
        box = plan.boxes[self.graph.input]
        places = [(name, t, a, b.box[t][a]) for name, t, a in b.places]
        key = (cut, tuple((k, tuple(v.tolist())) for k, v in b.runtime.items()), _sizes(box),
               tuple(_sizes(c[2]) for c in b.crops), tuple(p[3][1] - p[3][0] for p in places))
        runtime = self._runtime.setdefault(key, b.runtime)  # the same for the key: kept once
        return Position(cut, key, box, runtime, b.crops, places, b.masks, b.absolute)

    def feed(self, acts: dict, where: list, patch: np.ndarray) -> dict[str, np.ndarray]:
        """The inputs of one run of a group's graph: acts from `tap`; where: each row's position (y, x), all of
        one `Position.key`; patch: each row's patch box of its perturbed copy, [B, …box…]."""
        uniq = list(dict.fromkeys(where))
        at = [self.position(*w) for w in uniq]
        first = at[0]
        if any(p.key != first.key for p in at):
            raise ValueError("one run takes positions of one key")
        index = {w: i for i, w in enumerate(uniq)}
        row = np.array([index[w] for w in where])
        feed = {"patch": patch, "row": row.astype(np.int64), **first.runtime,
                **{f"{t}@photo": acts[t] for t in self.graphs[first.cut][1]}}
        for j, (name, t, _, pad) in enumerate(first.crops):
            feed[name] = _crops(acts, t, pad, np.array([p.crops[j][2] for p in at]), t in self.whole)
        shapes = self.graph.shapes
        for j, (name, t, a, _) in enumerate(first.places):
            feed[name] = _onto(np.array([p.places[j][3] for p in at]), shapes[t], a)[row]
        for j, (name, t, _, axes) in enumerate(first.masks):
            feed[name] = _inside(np.array([p.masks[j][2] for p in at]), shapes[t], axes)[row]
        return feed


class _Group:
    """What the positions of one graph share, folded in plan by plan (a grid's plans are not all held at once):
    per layer, whether it changes somewhere and whether it runs on its box everywhere; the (layer, input) pairs whose
    input's box is the layer's output box at every position; per tensor, the axes its box may cut, and how far its
    box reaches; per convolution, how far the box it reads reaches beyond its input's change (`_lap`), while that
    is the same at every position.  plan: one of the group's, for its graph's nodes."""

    def __init__(self, graph: Graph, plan):
        self.g, self.plan = graph, plan
        n = len(graph.nodes)
        self.changed, self.incremental, self.same = [False] * n, [True] * n, None
        self.partial: dict[str, set] = {}
        self.reach: dict[str, tuple] = {}  # per axis, the lowest start and the highest end of the tensor's box
        self.laps: dict[int, tuple | None] = {}  # convolution → `_lap` at every position so far, None once they differ

    def add(self, plan) -> None:
        boxes = plan.boxes
        for i, layer in enumerate(plan.layers):
            self.changed[i] = self.changed[i] or layer.box is not None
            self.incremental[i] = self.incremental[i] and layer.incremental and layer.box is not None
        alike = {(i, j) for i, node in enumerate(self.g.nodes) if boxes.get(node.output[0]) is not None
                 for j, name in enumerate(node.input) if name and boxes.get(name) == boxes[node.output[0]]}
        self.same = alike if self.same is None else self.same & alike
        for i, node in enumerate(self.g.nodes):
            if node.op_type == "Conv" and boxes.get(node.output[0]) is not None and boxes.get(node.input[0]):
                lap = _lap(_reads(self.g, node, boxes[node.output[0]]), boxes[node.input[0]])
                self.laps[i] = lap if self.laps.get(i, lap) == lap else None
        for t, box in boxes.items():
            if box is None or t not in self.g.shapes:
                continue
            self.partial.setdefault(t, set()).update(a for a, n in enumerate(self.g.shapes[t])
                                                     if a and tuple(box[a]) != (0, n))
            r = self.reach.get(t)
            self.reach[t] = tuple(box) if r is None else tuple((min(a[0], b[0]), max(a[1], b[1]))
                                                               for a, b in zip(r, box))

    def layers(self) -> tuple:
        """(changed, incremental, same, partial, reach, laps): see the class; laps only where the box read covers
        the change (zeros around it)."""
        same = {(i, j) for i, j in self.same or () if self.incremental[i]}
        partial = {t: tuple(sorted(self.partial.get(t, ()))) for t in self.g.shapes}
        laps = {i: lap for i, lap in self.laps.items() if lap and min(lap) >= 0 and lap[0] == lap[1] == 0}
        return self.changed, self.incremental, same, partial, self.reach, laps


@dataclass(frozen=True)
class Position:
    """What one patch position needs beyond its group's graph (`Incremental.position`).  Positions of equal `key`
    run in one batch: the same graph, runtime inputs and shapes, only the photo's crops and where the changed maps
    land differ by row."""
    cut: int  # the group's graph
    key: tuple
    box: tuple  # the patch's box in the input
    runtime: dict  # name → int64 array, the same for the key
    crops: list  # (input, tensor, box, pad value): the photo's tensor over box, padded with the value beyond the map
    places: list  # (input, tensor, axis, (lo, hi)): the one-hot matrix placing the box along one axis (see _onto)
    masks: list  # (input, tensor, box, axes the box may cut): the box's elements inside the map (see _inside)
    absolute: bool  # some runtime input is an offset into a map-sized constant: not the same for a moved position

    def moved(self, a: int, b: int, steps: dict, input: str) -> Position:
        """This position's needs for the patch a periods lower and b to the right (steps: see `_steps`; input:
        the graph's input tensor)."""
        if a == b == 0:
            return self

        return replace(self, box=_shifted(self.box, steps[input], a, b),
                       crops=[(n, t, _shifted(box, steps[t], a, b), pad) for n, t, box, pad in self.crops],
                       places=[(n, t, ax, _shifted((lohi,), steps[t][ax:ax + 1], a, b)[0])
                               for n, t, ax, lohi in self.places],
                       masks=[(n, t, _shifted(box, steps[t], a, b), axes) for n, t, box, axes in self.masks])


def _shifted(box, steps, a: int, b: int) -> tuple:
    """`box` moved a periods down and b right: per axis, by its (rows, columns) steps (`_steps`)."""
    return tuple((lo + a * sy + b * sx, hi + a * sy + b * sx) for (lo, hi), (sy, sx) in zip(box, steps))


def _onto(spans: np.ndarray, shape, a: int) -> np.ndarray:
    """float32 [U, 1…, n, h] (axis a second to last) or [U, 1…, h, n]: per row of spans (int [U, 2], lo and hi of
    a box along axis a, h long), 1 where its element j lies at i of the map (n long); rows or columns beyond the
    map are zero."""
    along = spans[:, :1] + np.arange(spans[0, 1] - spans[0, 0])  # [U, h]
    hit = (along[:, None, :] == np.arange(shape[a])[None, :, None]).astype(np.float32)  # [U, n, h]
    m = hit if a == len(shape) - 2 else hit.transpose(0, 2, 1)
    return m.reshape((len(spans),) + (1,) * (len(shape) - 3) + m.shape[1:])


def _inside(boxes: np.ndarray, shape, axes) -> np.ndarray:
    """bool [U, …box…] (1 along the axes the box cannot cut): per box of boxes (int [U, rank, 2]), its elements
    inside a map of `shape`."""
    inside = np.ones((len(boxes),) + (1,) * (len(shape) - 1), bool)
    for a in axes:
        along = boxes[:, a, :1] + np.arange(boxes[0, a, 1] - boxes[0, a, 0])  # [U, h]
        inside = inside & ((along >= 0) & (along < shape[a])).reshape(
            [len(boxes)] + [-1 if i == a else 1 for i in range(1, len(shape))])
    return inside


def _sizes(box) -> tuple:
    return tuple(hi - lo for lo, hi in box[1:])


def _crops(acts: dict, t: str, pad: float, boxes: np.ndarray, whole: bool) -> np.ndarray:
    """[U, …box…]: the photo's tensor t (acts from `Incremental.tap`, batch 1) over each box of boxes (int [U, rank,
    2] of one size, the batch axis ignored), `pad` where a box leaves the map.  The map padded far enough is kept
    in acts for the image (grown when a box reaches further), so that all the crops are one gather; the map itself
    only where it is also fed `whole`."""
    kept = acts.get((t, pad))
    shape = _map(acts, t).shape if kept is None else np.subtract(kept[0].shape, kept[1] + kept[2])
    lo, hi = np.maximum(0, -boxes[:, 1:, 0].min(0)), np.maximum(0, boxes[:, 1:, 1].max(0) - shape)
    if kept is None or (lo > kept[1]).any() or (hi > kept[2]).any():
        if kept is not None:
            lo, hi = np.maximum(lo, kept[1]), np.maximum(hi, kept[2])
        kept = acts[(t, pad)] = np.pad(_map(acts, t), list(zip(lo, hi)), constant_values=pad), lo, hi
        if not whole:
            acts.pop(t, None)
    windows = np.lib.stride_tricks.sliding_window_view(kept[0], boxes[0, 1:, 1] - boxes[0, 1:, 0])
    return windows[tuple((boxes[:, 1:, 0] + kept[1]).T)]


def _map(acts: dict, t: str) -> np.ndarray:
    """The photo's tensor t without its batch axis: from acts, or from within a padded copy (`_crops`)."""
    if t in acts:
        return acts[t][0]
    padded, lo, hi = next(v for k, v in acts.items() if isinstance(k, tuple) and k[0] == t)
    return padded[tuple(slice(a, n - b) for a, b, n in zip(lo, hi, padded.shape))]


def _steps(graph: Graph) -> tuple[int, dict]:
    """The period P (the least common multiple of the strides from the input to every tensor) and, per tensor whose
    box moves with the patch: per axis, (rows, columns) its box moves when the patch moves P rows down, P columns
    right.  A box moves by P / (its stride from the input) along an axis that follows the input's rows or columns,
    through windows (the window's first and last outputs move by the input's move over the stride), element-wise
    ops (when every operand the patch reaches moves alike along the axis), Transpose; not through an op that
    broadcasts such an operand over the map (its box becomes the whole map), nor one with an operand that has no
    steps, nor any other op: their outputs have no steps."""
    hy, wx = graph.spatial
    rank = len(graph.shapes[graph.input])
    follow = {graph.input: tuple((0, 1) if a == hy else (1, 1) if a == wx else (None, 1) for a in range(rank))}
    reached = {graph.input}  # what the patch can change
    for node in graph.nodes:
        ins = [follow.get(i) for i in node.input if i in follow]
        out = graph.shapes.get(node.output[0])
        if not any(i in reached for i in node.input):
            continue
        reached.update(node.output)
        if not ins or not out or any(i in reached and i not in follow for i in node.input):
            continue
        op, got = node.op_type, None
        if op in WINDOWED and node.input[0] in follow:
            _, strides, _, _ = graph.window(node)
            data = follow[node.input[0]]
            got = ((None, 1), (None, 1) if op == "Conv" else data[1], *(
                (o, c * s) for (o, c), s in zip(data[2:], strides)))
        elif op in ELEMENTWISE:  # the operands the patch reaches, right-aligned to the output as numpy broadcasts
            aligned = [(None,) * (len(out) - len(follow[i])) + tuple(zip(graph.shapes[i], follow[i]))
                       for i in node.input if i in follow]
            axes = []
            for a, n in enumerate(out):
                at = [o[a] for o in aligned if o[a] is not None]
                kinds = {f for _, f in at}
                axes.append(kinds.pop() if len(kinds) == 1 and all(m == n for m, _ in at) else None)
            got = tuple(axes) if None not in axes else None
        elif op == "Transpose":
            perm = graph.attributes(node).get("perm") or list(reversed(range(len(out))))
            got = tuple(ins[0][p] for p in perm)
        if got is not None and len(got) == len(out):
            follow[node.output[0]] = got
    P = math.lcm(*(c for f in follow.values() for _, c in f))
    return P, {t: tuple((P // c, 0) if o == 0 else (0, P // c) if o == 1 else (0, 0) for o, c in f)
               for t, f in follow.items()}


def _alike(moved, plan, input: str) -> bool:
    """Whether a moved plan is the plan: the same cut, patch box, layers that change and run on their box, and the
    same boxes in the incremental part (what the graph and the positions' inputs are made from)."""
    if moved is None or moved.cut != plan.cut or moved.boxes[input] != plan.boxes[input]:
        return False
    return all(m.incremental == p.incremental and (m.box is None) == (p.box is None) and
               (not p.incremental or m.box == p.box) for m, p in zip(moved.layers, plan.layers))


def _cut(plan) -> int:
    """Index of the plan's first layer that runs in full (past the last when none does)."""
    return len(plan.layers) if plan.cut is None else plan.cut


class _Builder:
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
        """The photo's tensor `t` over `box`: an input cut on the host, batch B (each row its position's crop,
        padded with pad_value where the box leaves the map: a receptive field).  whole: the box is the whole map
        at every position, batch 1."""
        if whole:
            return self._photo(t)
        name = self._fresh("crop")
        self.crops.append((name, t, tuple(box), 0.0 if pad_value is None else pad_value))
        return self._node("Gather", [name, "row"], axis=0)

    def _outside(self, t: str) -> bool:
        """Whether t's box leaves its map at some position of the group."""
        return any(lo < 0 or hi > n for (lo, hi), n in zip(self.reach[t], self.g.shapes[t]))

    def _masked(self, t: str) -> str:
        """The change of t, zero where its box leaves the map.  What a layer computes beyond the map is not the
        map's; it stays there through element-wise ops and 1×1 windows, and is cut off where a wider window or the
        placement in the whole map would read it."""
        if not self._outside(t):
            return self.name[t]
        if t not in self.masked:
            name = self._fresh("inside")
            self.masks.append((name, t, self.box[t], self.partial[t]))
            self.masked[t] = self._node("Where", [name, self.name[t], self._const(np.array(0, np.float32))])
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
        return self._node("Add", [base, self.delta(t, box, same, masked)]) if t in self.box else base

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
        inputs += [helper.make_tensor_value_info("row", TensorProto.INT64, ["B"])]
        inputs += [helper.make_tensor_value_info(name, dtype, ["U", *(f"{name}:{a}" for a in range(1, len(box)))])
                   for name, _, box, _ in self.crops]
        inputs += [helper.make_tensor_value_info(name, dtype, ["B", *[1] * (len(self.g.shapes[t]) - 3),
                                                                 f"{name}:0", f"{name}:1"])
                   for name, t, _ in self.places]
        inputs += [helper.make_tensor_value_info(name, TensorProto.BOOL, ["B", *(f"{name}:{a}" if a in axes else 1
                                                                               for a in range(1, len(box)))])
                   for name, _, box, axes in self.masks]
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
            want = _reads(self.g, node, out_box)
            if want is None:
                return False
            keep = {k: v for k, v in attrs.items() if k not in ("pads", "auto_pad")}
            kernel, _, dil, _ = self.g.window(node)
            wide = any(d * (k - 1) for d, k in zip(dil, kernel))  # reads its input beyond the output's own place
            if op == "MaxPool":  # not linear: the new values' maximum, less the photo's
                new = self._node(op, [self.values(node.input[0], want, -math.inf, masked=True)], **keep)
                out = self._node("Sub", [new, self.old(node.output[0], out_box)])
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
            out = self._node("Sub", [new, self.old(node.output[0], out_box)])
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
            want = _reads(self.g, node, out_box)
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


def _reads(graph: Graph, node, out_box) -> tuple | None:
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


def _lap(want, have) -> tuple:
    """How far box `want` reaches beyond box `have`, axis by axis from the channels: (before, after, …)."""
    return tuple(d for (w0, w1), (h0, h1) in zip(want[1:], have[1:]) for d in (h0 - w0, w1 - h1))


def _operand_box(out_box, shape, out_shape):
    """The box of an element-wise op's operand of `shape` that its output's box reads (broadcasting)."""
    pad = len(out_shape) - len(shape)
    return tuple((0, 1) if n == 1 else out_box[a + pad] for a, n in enumerate(shape))
