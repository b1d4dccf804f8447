"""The executor of incremental inference for one classifier and grid (see the package's docstring): plans the
positions a class of the period at a time, shares a graph between the positions that cut at one layer, and makes
each run's inputs."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ...perf.incremental import ELEMENTWISE, THRESHOLD, Graph, Plan
from .builder import WINDOWED, Builder, lap, read_box
from .crops import cut_crops, inside, onto

RECENT = 512  # Incremental keeps this many positions' needs (a batch's, in `position`'s order)


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
            builder = Builder(self, group.plan, layers)
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
        from ...graphs import with_outputs
        from ..sessions import open_session as default

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
        b = Builder(self, plan, self.graphs[cut][2], emit=False)
        b.walk()
        box = plan.boxes[self.graph.input]
        places = [(name, t, a, b.box[t][a]) for name, t, a in b.places]
        key = (cut, tuple((k, tuple(v.tolist())) for k, v in b.runtime.items()), _sizes(box),
               tuple(_sizes(c[2]) for c in b.crops), tuple(p[3][1] - p[3][0] for p in places))
        runtime = self._runtime.setdefault(key, b.runtime)  # the same for the key: kept once
        return Position(cut, key, box, runtime, b.crops, places, b.masks, b.absolute)

    def feed(self, acts: dict, where: list, patch: np.ndarray) -> dict[str, np.ndarray]:
        """The inputs of one run of a group's graph: acts from `tap`; where: each row's position (y, x), all of
        one `Position.key`, each position's rows together and as many of each (its crops are fed once and apply to
        them all); patch: each row's patch box of its perturbed copy, [B, …box…]."""
        uniq = list(dict.fromkeys(where))
        at = [self.position(*w) for w in uniq]
        first = at[0]
        if any(p.key != first.key for p in at):
            raise ValueError("one run takes positions of one key")
        R = len(where) // len(uniq)
        if where != [w for w in uniq for _ in range(R)]:
            raise ValueError("one run takes each position's rows together, as many of each")
        row = np.repeat(np.arange(len(uniq)), R)
        feed = {"patch": patch, **first.runtime, **{f"{t}@photo": acts[t] for t in self.graphs[first.cut][1]}}
        for j, (name, t, _, pad) in enumerate(first.crops):
            feed[name] = cut_crops(acts, t, pad, np.array([p.crops[j][2] for p in at]), t in self.whole)[:, None]
        shapes = self.graph.shapes
        for j, (name, t, a, _) in enumerate(first.places):
            feed[name] = onto(np.array([p.places[j][3] for p in at]), shapes[t], a)[row]
        for j, (name, t, _, axes, boolean) in enumerate(first.masks):
            mask = inside(np.array([p.masks[j][2] for p in at]), shapes[t], axes)[row]
            feed[name] = mask if boolean else mask.astype(np.float32)
        return feed


class _Group:
    """What the positions of one graph share, folded in plan by plan (a grid's plans are not all held at once):
    per layer, whether it changes somewhere and whether it runs on its box everywhere; the (layer, input) pairs whose
    input's box is the layer's output box at every position; per tensor, the axes its box may cut, and how far its
    box reaches; per convolution, how far the box it reads reaches beyond its input's change (`lap`), while that
    is the same at every position.  plan: one of the group's, for its graph's nodes."""

    def __init__(self, graph: Graph, plan):
        self.g, self.plan = graph, plan
        n = len(graph.nodes)
        self.changed, self.incremental, self.same = [False] * n, [True] * n, None
        self.partial: dict[str, set] = {}
        self.reach: dict[str, tuple] = {}  # per axis, the lowest start and the highest end of the tensor's box
        self.laps: dict[int, tuple | None] = {}  # convolution → `lap` at every position so far, None once they differ

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
                margin = lap(read_box(self.g, node, boxes[node.output[0]]), boxes[node.input[0]])
                self.laps[i] = margin if self.laps.get(i, margin) == margin else None
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
    places: list  # (input, tensor, axis, (lo, hi)): the one-hot matrix placing the box along one axis (see onto)
    masks: list  # (input, tensor, box, axes the box may cut, bool for Where or else float32 to multiply): the box's
    # elements inside the map (see inside)
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
                       masks=[(n, t, _shifted(box, steps[t], a, b), *rest) for n, t, box, *rest in self.masks])


def _shifted(box, steps, a: int, b: int) -> tuple:
    """`box` moved a periods down and b right: per axis, by its (rows, columns) steps (`_steps`)."""
    return tuple((lo + a * sy + b * sx, hi + a * sy + b * sx) for (lo, hi), (sy, sx) in zip(box, steps))


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
            known = reached | follow.keys() | graph.initializers.keys()
            for i in node.input:  # an operand the patch never changes, cut to the output's box: moves with it
                if got and i and i not in known and i in graph.shapes:
                    lead = len(out) - len(graph.shapes[i])
                    follow[i] = tuple(got[a + lead] if n != 1 else (None, 1) for a, n in enumerate(graph.shapes[i]))
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


def _sizes(box) -> tuple:
    return tuple(hi - lo for lo, hi in box[1:])
