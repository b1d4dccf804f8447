"""The one call every attribution method shares: `attribute(image, classes=…) -> Explanation` (Captum's pattern).
The base class loads the image into the classifier's input space, runs p(Y|x) once, picks the classes and wraps
the result; a method implements `_attribute`, the part that differs."""
from __future__ import annotations

import os
import time

import numpy as np

from .. import params
from ..classifier import OnnxClassifier
from ..errors import InfolensError
from ..explanation import Explanation
from ..progress import Progress


class Attribution:
    """Base of the methods.  `name`: registry key; `maps`: the maps it writes (MAPS names); `default_sampler`: the
    sampler it uses when given none (None: it uses no sampler).

    classifier : OnnxClassifier.  batch_size : classifier images per ONNX Runtime call.  progress : progress on
    stderr in forwards (progress.Progress: a bar on a terminal, a line every 10 s in a log).
    """

    name: str = ""
    maps: tuple[str, ...] = ()
    default_sampler: str | None = None

    def __init__(self, classifier: OnnxClassifier, batch_size: int = 64, progress: bool = False):
        params.check("batch_size", batch_size)
        self.classifier = classifier
        self.batch_size = batch_size
        self.progress = progress

    def attribute(self, image, classes="top3", stride: int | None = None, samples: int = 8, seed: int = 0,
                  source: str | None = None, notes: list[str] | None = None) -> Explanation:
        """Explain one image.

        image : path, or uint8 RGB [h, w, 3] (resized into the input space per the classifier's `resize`).
        classes : "top3", "topK", "285,281" or ints — classes that get a class map.
        stride : S in pixels (default K).  samples : N in-fills per patch (RISE: N masks).  seed : RNG key (≥ 0).
        source : the file the image came from (recorded).  notes : what reading the file changed (images.read_image),
        recorded with the notes of the resize.
        Returns an Explanation with this method's maps (and their standard errors); probs float64 [Y].
        """
        t_start = time.perf_counter()
        clf = self.classifier
        if isinstance(image, (str, os.PathLike)):
            source = source or os.fspath(image)
        notes = list(notes or [])
        img = clf.load_image(image, notes)
        rows_before = clf.rows_run
        progress = Progress(os.path.basename(source) if source else self.name, self.progress)
        progress.add(1)
        base = clf.normalize(img[None])
        p0, first = self._predict(base)
        progress.update(1)
        cls = resolve_classes(classes, p0)
        checked = {"fp16_drift": clf.check_fp16(img[None], cls)} if clf.fp16 else {}
        try:
            maps, stderr, run_params, timing = self._attribute(img, base[0], p0, cls, stride, samples, seed, source,
                                                               progress, first)
        finally:
            progress.close()
        timing["total_s"] = time.perf_counter() - t_start
        forwards = clf.rows_run - rows_before  # images the classifier actually ran, p(Y|x) included
        return Explanation(image=img, probs=p0, classes=cls, labels=[clf.labels[c] for c in cls], maps=maps,
                           stderr=stderr, params={"method": self.name, **run_params, **checked}, model=clf.describe(),
                           timing=timing, forwards=forwards, source=source, notes=notes)

    def _predict(self, base: np.ndarray):
        """The first forward, p(Y|x) of the normalized image `base` [1, ...] → (p0 float64 [Y], what else the method
        keeps of that forward for `_attribute`: MIP-IN its activations; None here)."""
        return self.classifier.predict(base)[0], None

    def _attribute(self, img, base, p0, cls, stride, samples, seed, source, progress, first=None):
        """Counts its forwards on `progress` (progress.Progress: add, then update) → maps {name: float32 [k, H, W] or [H, W]}, their standard errors (same keys, may be empty), the run's
        parameters, timings (s)."""
        raise NotImplementedError


def resolve_classes(classes, probs: np.ndarray) -> np.ndarray:
    """"top3" / "topK" / "285,281" / an int / a list of ints → int64 [k] class indices, checked against [0, Y)."""
    Y = len(probs)
    if isinstance(classes, str) and classes.lower().startswith("top"):
        k = classes[3:] or "1"
        if not k.isdigit() or int(k) < 1:
            raise InfolensError(f"bad class selection {classes!r}: use topK (e.g. top3) or indices like 285,281",
                                "classes")
        return np.argsort(-probs, kind="stable")[: min(int(k), Y)].astype(np.int64)
    if isinstance(classes, str):
        try:
            classes = [int(c) for c in classes.split(",") if c.strip()]
        except ValueError:
            raise InfolensError(f"bad class selection {classes!r}: use topK or comma-separated indices",
                                "classes") from None
    idx = np.atleast_1d(np.asarray(classes, dtype=np.int64))
    if idx.size == 0:
        raise InfolensError("no classes selected", "classes")
    bad = idx[(idx < 0) | (idx >= Y)]
    if bad.size:
        raise InfolensError(f"class {bad[0]} out of range: the model has {Y} classes, 0..{Y - 1}", "classes")
    return idx
