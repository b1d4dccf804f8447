"""The part of a classifier graph that MIP-IN inverts (DESIGN §8): from the logits back over supported ops to the map
layer, and the taps (extra graph outputs) that its inverse needs.

Walking back from the logits (the input of a final Softmax/LogSoftmax/Sigmoid, through reshapes and Q/DQ), the
candidates are the tensors that lie on every path from the image to the logits (a single live activation in the
graph's topological order: between residual blocks, never inside one).  The walk stops at the first candidate that
keeps at least 1/16 of the input's height and width — the map layer — or earlier, at the deepest candidate reached,
when the next segment holds an unsupported op or the inverse would exceed a budget of ops.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from .. import graphs
from ..errors import InfolensError

# ops the inverse has a layer for (DESIGN §8); Clip only with min 0 (ReLU6), BatchNormalization folded
SUPPORTED = {"Gemm", "MatMul", "Conv", "Relu", "Clip", "Add", "GlobalAveragePool", "ReduceMean", "AveragePool",
             "MaxPool", "Reshape", "Flatten", "Transpose", "Concat", "QuantizeLinear", "DequantizeLinear",
             "BatchNormalization", "Identity", "Squeeze", "Unsqueeze", "Dropout"}
FREE = {"QuantizeLinear", "DequantizeLinear", "Identity", "Dropout"}  # no inverse layer of their own
_NORMALIZERS = {"Softmax", "LogSoftmax", "Sigmoid"}
MIN_RESOLUTION = 1 / 16
MAX_INVERSE_OPS = 80


@dataclass
class Candidate:
    """A tensor on every path to the logits; `ops` the op types between it and the next candidate towards the
    logits; `cost` the inverse layers from it up to the logits."""

    tensor: str
    shape: list
    ops: list[str] = field(default_factory=list)
    cost: int = 0


@dataclass
class InvertedPart:
    """logits: the tensor the inverse starts from.  map_tensor: the map layer.  nodes: the graph's nodes between
    them, in order.  chain: the candidates from the logits back as far as the walk went.  stop: why it stopped.
    input_shape: the image input's shape the shapes were inferred for."""

    logits: str
    map_tensor: str
    nodes: list
    chain: list[Candidate]
    stop: str
    input_shape: list[int]

    @property
    def map_shape(self) -> list:
        return next(c.shape for c in self.chain if c.tensor == self.map_tensor)

    def lines(self) -> list[str]:
        """The chain as `infolens mipin layers` prints it."""
        out = []
        for c in self.chain:
            mark = "   ← map layer" if c.tensor == self.map_tensor else ""
            via = f"   via {' ← '.join(c.ops)}" if c.ops else ""
            out.append(f"{c.tensor}  {c.shape}  ({c.cost} inverse ops to the logits){via}{mark}")
        return out + [f"stop: {self.stop}"]


def for_classifier(classifier, map_layer: str | None = None, max_ops: int = MAX_INVERSE_OPS):
    """(the graph a classifier runs — its grey front included —, its inverted part)."""
    pre = classifier.pre
    H, W = pre.size
    shape = [1, 3, H, W] if pre.layout == "NCHW" else [1, H, W, 3]  # RGB: a grey model's front takes RGB too
    model = classifier.graph()
    return model, inverted_part(model, classifier.feed_name, classifier.output.name, shape, map_layer, max_ops)


def inverted_part(model: onnx.ModelProto, input_name: str, output_name: str, input_shape: list[int],
                  map_layer: str | None = None, max_ops: int = MAX_INVERSE_OPS) -> InvertedPart:
    """The inverted part of `model` for its image input `input_name` of static shape `input_shape` ([1, C, H, W]
    or [1, H, W, C]) and its class-score output `output_name`.  map_layer: a candidate tensor to stop at instead of
    the automatic choice (InfolensError naming `map_layer` when it is not one)."""
    graph = model.graph
    shapes = _shapes(model, input_name, input_shape)
    made_by = {o: i for i, n in enumerate(graph.node) for o in n.output}
    logits = graphs.walk_back(graph, output_name, graphs.PASS_THROUGH | _NORMALIZERS)[0]
    order = _relevant(graph, input_name, logits)
    cands = _candidates(graph, order, input_name, logits)  # from the input up to the logits
    H, W = (input_shape[2], input_shape[3]) if input_shape[1] in (1, 3) else (input_shape[1], input_shape[2])
    chain = [Candidate(logits, shapes.get(logits, []))]
    stop, chosen = "", None
    at = {i: k for k, i in enumerate(order)}  # node index → position in `order`

    def position(tensor):  # of the node that makes `tensor` (−1: the graph input)
        return -1 if tensor == input_name else at[made_by[tensor]]

    for deeper, upper in zip(reversed(cands[:-1]), reversed(cands[1:])):
        seg = [graph.node[i] for i in order if position(deeper) < at[i] <= position(upper)]
        bad = [n for n in seg if not _supported(n, graph)]
        if bad:
            stop = f"unsupported op {bad[0].op_type} ({bad[0].name or bad[0].output[0]}) below {upper}"
            break
        cost = chain[-1].cost + sum(n.op_type not in FREE for n in seg)
        if cost > max_ops:
            stop = f"budget of {max_ops} inverse ops reached below {upper}"
            break
        chain[-1].ops = [n.op_type for n in reversed(seg)]
        chain.append(Candidate(deeper, shapes.get(deeper, []), cost=cost))
        if deeper == input_name:
            stop = "reached the image input"
            break
        if map_layer is None and _spatial(shapes.get(deeper, []), H, W) >= MIN_RESOLUTION:
            chosen = deeper
            stop = f"{deeper} keeps ≥ 1/16 of the input resolution"
            break
        if map_layer == deeper:
            chosen = deeper
            stop = "map layer given"
            break
    if map_layer is not None and chosen is None:
        names = [c.tensor for c in chain[1:]]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "") or "none"
        raise InfolensError(f"{map_layer!r} is not a tensor the walk back from the logits reaches on every path "
                            f"(candidates, from the logits down: {shown}; the walk stopped: {stop or 'at the end'})",
                            "map_layer")
    if chosen is None:  # stopped early: the deepest spatial candidate reached
        spatial = [c for c in chain[1:] if _spatial(c.shape, H, W) > 0 and max(c.shape[2:]) > 1]  # a map, not 1×1
        if not spatial:
            raise InfolensError(f"MIP-IN cannot invert this model: {stop or 'no spatial tensor on every path'}",
                                "model")
        chosen = spatial[-1].tensor
        chain = chain[:chain.index(spatial[-1]) + 1]
    nodes = [graph.node[i] for i in order if position(chosen) < at[i] <= position(logits)]
    return InvertedPart(logits, chosen, nodes, chain, stop, list(input_shape))


def taps(model: onnx.ModelProto, part: InvertedPart) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of `model` whose inverted part's tensors (every input and output of its nodes that carries an
    activation) are extra graph outputs, typed by shape inference; each MaxPool in it also outputs its argmax
    `Indices` (for unpooling).  Returns the model and {MaxPool output: its indices tensor}."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    wanted = [part.map_tensor]
    indices = {}
    names = {n.name or n.output[0] for n in part.nodes}
    for node in out.graph.node:
        if (node.name or node.output[0]) not in names:
            continue
        if node.op_type == "MaxPool":
            if len(node.output) < 2:
                node.output.append(node.output[0] + "_infolens_indices")
            indices[node.output[0]] = node.output[1]
        wanted += list(node.input) + list(node.output)
    made = {o for node in out.graph.node for o in node.output}
    return graphs.with_outputs(out, [t for t in wanted if t in made]), indices


def _shapes(model, input_name, input_shape) -> dict[str, list]:
    """Static shapes of every tensor with the input fixed to `input_shape`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name == input_name:
            dims = vi.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shape):
                d.Clear()
                d.dim_value = int(v)
    del m.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return out


def _relevant(graph, input_name, logits) -> list[int]:
    """Indices of the nodes that depend on the image and feed the logits, in graph (topological) order."""
    from_input, needed = {input_name}, set()
    for node in graph.node:
        if any(t in from_input for t in node.input):
            from_input.update(node.output)
    made_by = {o: i for i, n in enumerate(graph.node) for o in n.output}
    todo = [logits]
    while todo:
        t = todo.pop()
        i = made_by.get(t)
        if i is None or i in needed:
            continue
        needed.add(i)
        todo += [x for x in graph.node[i].input if x in from_input]
    return [i for i in range(len(graph.node)) if i in needed and any(o in from_input for o in graph.node[i].output)]


def _candidates(graph, order, input_name, logits) -> list[str]:
    """Tensors on every path from the input to the logits, input first: after a node runs, its output is the only
    activation still waiting for a consumer."""
    consumers: dict[str, int] = {}
    for i in order:
        for t in set(graph.node[i].input):
            consumers[t] = consumers.get(t, 0) + 1
    live = {input_name: consumers.get(input_name, 0)}
    out = [input_name]
    for i in order:
        node = graph.node[i]
        for t in set(node.input):
            if t in live:
                live[t] -= 1
                if live[t] == 0:
                    del live[t]
        for t in node.output:
            if consumers.get(t) or t == logits:
                live[t] = consumers.get(t, 0)
        if len(live) == 1 and node.output[0] in live:
            out.append(node.output[0])
    return out


def _spatial(shape, H, W) -> float:
    """The tensor's share of the input's resolution (its smaller side ratio); 0 for a tensor without two spatial
    dims.  Activations inside the graph are NCHW (ONNX's Conv layout)."""
    if len(shape) != 4 or None in shape[2:]:
        return 0.0
    return min(shape[2] / H, shape[3] / W)


def _supported(node, graph) -> bool:
    if node.op_type not in SUPPORTED:
        return False
    if node.op_type == "Clip":  # ReLU6 and ReLU written as Clip: the lower bound must be 0
        low = _constant(graph, node.input[1]) if len(node.input) > 1 and node.input[1] else None
        if low is None:
            low = next((a.f for a in node.attribute if a.name == "min"), None)
        return low is not None and float(np.asarray(low).reshape(-1)[0]) == 0.0
    return True


def _constant(graph, name):
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    return None
