"""Taps: the classifier's graph with inner tensors as extra outputs, so that one forward gives p(Y|x) and them (what
CAM, MIP-IN and its evaluation read)."""
from __future__ import annotations

import numpy as np



class Tapped:
    """A session on `classifier`'s graph that also returns the tensors `names`.

    model: the ModelProto to run, already carrying `names` as outputs (e.g. MIP-IN's taps); default: the classifier's
    own graph (`OnnxClassifier.graph`) with `names` added.  graph: capture CUDA graphs where the placement has them.
    """

    def __init__(self, classifier, names, model=None, graph: bool = False):
        self.classifier, self.names = classifier, list(names)
        if model is None:
            from ..graphs import with_outputs

            model = with_outputs(classifier.graph(), self.names)
        self.session = classifier.open_graph(model, graph)

    def run(self, tensor: np.ndarray) -> tuple[np.ndarray, dict]:
        """One forward on a model tensor [B, ...]: float64 probabilities [B, Y] (as `OnnxClassifier.predict`) and
        the tapped tensors by name (counted in the classifier's `rows_run` like any forward)."""
        clf = self.classifier
        clf.rows_run += len(tensor)
        outs = self.session.run([clf.output.name, *self.names], {clf.feed_name: tensor})
        raw = outs[0].astype(np.float64).reshape(len(tensor), -1)
        return clf.to_probs(raw), dict(zip(self.names, outs[1:]))
