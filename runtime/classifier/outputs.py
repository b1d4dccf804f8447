"""What a classifier's output holds (probabilities, logits, independent sigmoids) and how it becomes probabilities."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import InfolensError

# ops whose outputs are unbounded scores even when a probe happens to land in [0, 1]
_SCORE_OPS = {"Gemm", "MatMul", "Conv", "Add", "Sub", "GlobalAveragePool", "ReduceMean", "AveragePool", "MatMulInteger",
              "QLinearMatMul", "QLinearConv", "Einsum", "BatchNormalization"}
_LABEL_KEYS = ("labels", "classes", "class_names", "names")


@dataclass
class Output:
    """The graph output explained: its `name`, its `kind` (one of params.PARAMS["output_kind"].choices but "auto"),
    how many classes it scores and their labels."""

    name: str
    kind: str
    n_classes: int = 0
    labels: list[str] = field(default_factory=list)

    @property
    def bernoulli(self) -> bool:
        """Multi-label: each class is its own Bernoulli variable (the probabilities need not sum to 1)."""
        return self.kind in ("sigmoid", "sigmoid-logits")


def to_probs(raw: np.ndarray, kind: str) -> np.ndarray:
    """Raw outputs float64 [B, Y] of an output of `kind` → probabilities [B, Y]: softmax rows for "logits", rows
    rescaled to sum to 1 for "probs", each class's own probability for "sigmoid" (clipped to [0, 1]) and
    "sigmoid-logits" (the sigmoid applied)."""
    if kind == "logits":
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == "probs":
        return raw / raw.sum(axis=1, keepdims=True)
    if kind == "sigmoid":
        return np.clip(raw, 0.0, 1.0)
    return np.exp(-np.logaddexp(0.0, -raw))  # sigmoid without overflow


def last_op(model_path: str, output: str) -> str | None:
    """The op that computes graph output `output`, looking through ops that only reshape, cast or (de)quantize it."""
    import onnx

    from .. import graphs

    try:
        graph = onnx.load(model_path, load_external_data=False).graph
    except Exception:  # the session loaded it; an unreadable graph only means no evidence from it
        return None
    node = graphs.walk_back(graph, output)[1]
    return None if node is None else node.op_type


def detect_kind(raw: np.ndarray, op: str | None, name: str) -> str:
    """The output kind from the op that makes the scores (Sigmoid, Softmax, LogSoftmax decide) and else from their
    values on the probes `raw` [B, Y]: outside [0, 1] → logits; rows summing to 1 → probs; in [0, 1] but not summing
    to 1 → sigmoid, unless a linear op made them (unbounded scores that happen to fall in [0, 1]): then it cannot
    decide and asks."""
    if op in ("Sigmoid", "Softmax", "LogSoftmax"):
        return {"Sigmoid": "sigmoid", "Softmax": "probs", "LogSoftmax": "logits"}[op]
    if raw.min() < 0 or raw.max() > 1:
        return "logits"
    if np.allclose(raw.sum(axis=1), 1.0, atol=1e-3):
        return "probs"
    if op in _SCORE_OPS or op is None:
        raise InfolensError(f"cannot tell what output {name!r} holds: its values lie in [0, 1] without summing to 1, "
                            f"but it comes from {op or 'an unknown op'}, not a Sigmoid: give the output kind (sigmoid "
                            f"for independent per-class probabilities, logits for scores to softmax)", "output_kind")
    return "sigmoid"


def metadata_labels(session) -> list | None:
    """Class names a session's model metadata carries (a JSON or Python list or {index: name}, or a comma list)."""
    meta = session.get_modelmeta().custom_metadata_map
    for key in _LABEL_KEYS:
        if key in meta:
            text = meta[key]
            for parse in (json.loads, ast.literal_eval):
                try:
                    v = parse(text)
                    break
                except (ValueError, SyntaxError):
                    v = None
            if isinstance(v, dict):
                return [v[k] for k in sorted(v, key=int)]
            if isinstance(v, list):
                return v
            return [s.strip() for s in text.split(",")]
    return None
