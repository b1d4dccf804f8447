"""CAM (Zhou et al., CVPR 2016): for a classifier that ends in global average pooling and a linear layer, the class's
weights applied to the pooled activation at every location — one forward, any ONNX classifier of that shape."""
from __future__ import annotations

import time

import numpy as np

from ..classifier import OnnxClassifier, Tapped
from ..errors import InfolensError
from .base import Attribution, Plan
from .mipin import upsample

_TO_SCORES = {"Softmax", "LogSoftmax", "Sigmoid"}  # the class scores' own normalizer: CAM reads the layer before it


class CAM(Attribution):
    """map "cam" [k, H, W]: Σ_ch w[c, ch] · A[ch, y, x], A the activation the final global average pool reads and w
    the final linear layer's weights, resized bilinearly to the input.  Units: logits per cell — the mean of the
    map over A's cells plus the layer's bias is the class's logit.

    Raises InfolensError (parameter `method`) for a classifier that does not end in GlobalAveragePool (or
    ReduceMean over the spatial axes) followed by Gemm or MatMul with constant weights.
    """

    name, maps, default_sampler, costly_to_open = "cam", ("cam",), None, True

    def __init__(self, classifier: OnnxClassifier, batch_size: int = 64, progress: bool = False):
        super().__init__(classifier, batch_size, progress)
        from ..graphs import with_outputs

        model = classifier.graph()
        head = find_head(model, classifier.output.name)
        self.tapped = Tapped(classifier, [head["tensor"]], with_outputs(model, [head["tensor"]]))
        self.tensor, self.weight, self.bias, self.channels_last = (head["tensor"], head["weight"], head["bias"],
                                                                    head["channels_last"])

    def _predict(self, base):
        p, found = self.tapped.run(base)
        return p[0], found[self.tensor][0]

    def _attribute(self, plan: Plan, progress):
        t0, first = time.perf_counter(), plan.first
        maps = upsample(self.cells(first, plan.classes), *plan.img.shape[:2])
        cells = list(first.shape[:2] if self.channels_last else first.shape[1:])
        return {"cam": maps}, {}, {"layer": self.tensor, "cells": cells}, {"cam_s": time.perf_counter() - t0}

    def class_maps(self, base: np.ndarray, classes) -> np.ndarray:
        """float32 [k, H, W]: the maps of `classes` for one normalized image tensor `base` [1, ...] (one forward)."""
        _, activation = self._predict(base)
        return upsample(self.cells(activation, classes), *self.classifier.pre.size)

    def cells(self, activation: np.ndarray, classes) -> np.ndarray:
        """float32 [k, h, w]: the class maps on the pooled activation's own grid (activation [C, h, w], or [h, w, C]
        for a channels-last model)."""
        a = np.moveaxis(activation, -1, 0) if self.channels_last else activation
        return np.einsum("kc,chw->khw", self.weight[np.asarray(classes)], a.astype(np.float64)).astype(np.float32)


def find_head(model, output: str) -> dict:
    """{"tensor": the pooled activation's name, "weight": float64 [Y, C], "bias": float64 [Y], "channels_last"} of a
    model ending in global average pooling and a linear layer (InfolensError naming `method` otherwise)."""
    from onnx import numpy_helper

    from ..graphs import PASS_THROUGH, walk_back

    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    scores, node = walk_back(graph, output, PASS_THROUGH | _TO_SCORES)
    bias = None
    if node is not None and node.op_type == "Add":  # MatMul + Add: the bias is the constant operand
        const = [i for i in node.input if i in consts]
        other = [i for i in node.input if i not in consts]
        if len(const) == 1 and len(other) == 1:
            bias = consts[const[0]]
            scores, node = walk_back(graph, other[0])
    if node is None or node.op_type not in ("Gemm", "MatMul") or node.input[1] not in consts:
        raise InfolensError(f"CAM needs a classifier that ends in global average pooling and a linear layer with "
                            f"constant weights; this one's scores come from {node.op_type if node else 'an input'}",
                            "method")
    w = consts[node.input[1]].astype(np.float64)
    attrs = {a.name: a for a in node.attribute}
    transposed = node.op_type == "Gemm" and "transB" in attrs and attrs["transB"].i
    weight = w if transposed else w.T  # [Y, C]
    if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] in consts:
        bias = consts[node.input[2]]
    pooled, pool = walk_back(graph, node.input[0])
    channels_last = False
    if pool is not None and pool.op_type == "ReduceMean":
        axes = [a.ints for a in pool.attribute if a.name == "axes"]
        axes = list(axes[0]) if axes else (list(consts[pool.input[1]]) if len(pool.input) > 1 else [])
        if sorted(axes) not in ([2, 3], [1, 2]):
            pool = None
        else:
            channels_last = sorted(axes) == [1, 2]
    elif pool is not None and pool.op_type != "GlobalAveragePool":
        pool = None
    if pool is None:
        raise InfolensError("CAM needs a classifier that ends in global average pooling and a linear layer; this "
                            "one's linear layer does not read a global average pool", "method")
    Y = weight.shape[0]
    bias = np.zeros(Y) if bias is None else np.broadcast_to(np.asarray(bias, np.float64).ravel(), (Y,)).copy()
    return {"tensor": pool.input[0], "weight": weight, "bias": bias, "channels_last": channels_last}
