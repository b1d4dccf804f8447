"""Exact incremental inference (DESIGN §11): the classifier's graph rewritten so that a perturbed copy costs only
what its patch changes (`--incremental`; `decide` says where it runs).

The photo runs once with the activations the rewritten graphs read kept (`tap`).  `Incremental` has ONNX graphs
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
gather from its map padded once per image, one per position, applied to its rows by broadcasting), the masks and the
one-hot matrices; offsets relative to the boxes are int64 inputs, equal for positions of one `Position.key` (the
same alignment to the network's strides), which run together in one batch. Positions whose plans cut at the same
layer share a graph. Positions a period apart (the strides' least common multiple) have one plan, moved: the
executor plans one position per class of the period (`Incremental._plan`), so its warm-up and memory do not grow
with the number of positions.

Quantized (QDQ) models: a QDQ unit (DequantizeLinear → op → QuantizeLinear, which ONNX Runtime runs as one integer
kernel) runs on its inputs' new values requantized, not on the change, so that it fuses into the same kernel and
gives the same integers (`Builder._unit`); integers pass on as new values over the box, not as a change.

Rooms: this package's `__init__` decides where it runs and is the perturbation batch (backends/cpu.py's
interface); executor.py plans a grid's positions and makes their inputs (`Incremental`); builder.py writes the
ONNX graphs (`Builder`); crops.py cuts what a batch reads of the photo's activations, on the host.
"""
from __future__ import annotations

import time
from collections import Counter, OrderedDict

import numpy as np

from ...perf.incremental import Graph, spatial_axes
from .executor import Incremental

__all__ = ["AUTO_GAIN", "KEPT", "Incremental", "IncrementalPerturbationBatch", "decide"]

_EXECUTORS: OrderedDict = OrderedDict()  # (model file, sha256, K, positions) → Incremental, its sessions by cut,
# the seconds they took to build
KEPT = 4  # the executors of this many grids stay (the last used): a server's jobs of a few K and strides take turns
_PREDICTIONS: dict = {}  # (sha256, K, grid) → predicted speed-up, the op that cut the plan early or None
AUTO_GAIN = 1.5  # --incremental auto: on where the plan predicts at least this many times fewer multiply-adds
SAMPLED = 7  # the prediction plans a SAMPLED × SAMPLED subgrid of the positions


def decide(classifier, K: int, ys, xs) -> bool:
    """Whether the patches at (ys, xs) run incrementally on `classifier`, by its `incremental`: "on" (one line
    naming what stops it, else yes), "auto" (where the model can and the plan predicts at least AUTO_GAIN× fewer
    multiply-adds at these positions, measured on a subgrid of them).  Records what it chose on the classifier
    (`incremental_used`: used, predicted speed-up, why not; the batch adds build_s, the seconds the grid's graphs
    and sessions took to build, once per process and grid, and kept_mb, the photo's activations kept for the
    image in MB), for the explanation's JSON."""
    from ...errors import InfolensError

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
        from ..cpu import CpuPerturbationBatch

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
        """float64 [m, Y]: p(Y | row) of rows 0..m−1, the rows of each `Position.key` in one run (positions
        whose rows a batch splits, a different number than the others', in one of their own: see `feed`)."""
        rows, where = self.host.rows, self._pos[:m]
        self.classifier.rows_run += m
        count = Counter(where)
        runs: dict = {}
        for i, w in enumerate(where):
            runs.setdefault((self.ex.key(*w), count[w]), {}).setdefault(w, []).append(i)
        out = None
        for (key, _), by in runs.items():
            idx = [i for at in by.values() for i in at]
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
