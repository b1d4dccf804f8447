"""The one call every attribution method shares: `attribute(image, classes=…) -> Explanation` (Captum's pattern).
The base class loads the image into the classifier's input space, runs p(Y|x) once, picks the classes and wraps
the result; a method implements `_attribute`, the part that differs."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from .. import params
from ..classifier import OnnxClassifier
from ..errors import InfolensError
from ..explanation import Explanation
from ..progress import Progress


@dataclass
class Plan:
    """What `Attribution.plan` computed once per image: img uint8 [H, W, 3] in input space, base its normalized
    tensor, p0 float64 [Y] = p(Y|x), classes int64 [k], first (what the method keeps of that forward), the
    requested stride/samples/seed, source, notes, checked (fp16 drift), forwards and seconds so far."""

    img: np.ndarray
    base: np.ndarray
    p0: np.ndarray
    classes: np.ndarray
    first: object
    stride: int | None
    samples: int
    seed: int
    source: str | None
    notes: list
    checked: dict
    forwards: int
    seconds: float


class Attribution:
    """Base of the methods.  `name`: registry key; `maps`: the maps it writes (MAPS names); `default_sampler`: the
    sampler it uses when given none (None: it uses no sampler).

    classifier : OnnxClassifier.  batch_size : classifier images per ONNX Runtime call.  progress : progress on
    stderr in forwards (progress.Progress: a bar on a terminal, a line every 10 s in a log).
    """

    name: str = ""
    maps: tuple[str, ...] = ()
    default_sampler: str | None = None
    costly_to_open: bool = False  # an Explainer keeps one instance (MIP-IN, CAM: opening their sessions is the cost)
    # the keywords `attribute` takes besides `target`, with their defaults; `plan_names` maps one onto the shared
    # grid a plan records (stride, samples, seed) where its name differs (RISE: masks → samples)
    settings: dict = {}
    plan_names: dict = {}

    def __init__(self, classifier: OnnxClassifier, batch_size: int = 64, progress: bool = False):
        params.check("batch_size", batch_size)
        self.classifier = classifier
        self.batch_size = batch_size
        self.progress = progress

    @classmethod
    def from_explainer(cls, explainer) -> "Attribution":
        """This method with an Explainer's classifier and settings (methods/__init__.Explainer): each method takes
        the settings it has, so the Explainer itself knows no method."""
        return cls(explainer.classifier, explainer.batch_size, explainer.progress)

    def attribute(self, images, target="top3", **settings):
        """Explain one image, or each of a list of them (Captum's call).

        images : a path or a uint8 RGB [h, w, 3] array (resized into the input space per the classifier's
        `resize`), or a list of them.  target : the classes that get a class map — "top3", "topK", "285,281", an
        int or a list of ints.  settings : this method's own keywords (`settings`: e.g. stride, samples and seed
        for the patch methods, masks and seed for RISE, none for MIP-IN and CAM); another keyword is an
        InfolensError naming it.
        Returns an Explanation (a list of them for a list) with this method's maps (and their standard errors);
        probs float64 [Y].
        """
        unknown = [k for k in settings if k not in self.settings]
        if unknown:
            raise InfolensError(f"{self.name or type(self).__name__} takes "
                                f"{', '.join(self.settings) or 'no setting'} besides target, not {unknown[0]!r}",
                                unknown[0])
        grid = self.shared_grid({**self.settings, **settings})
        several = isinstance(images, (list, tuple))
        out = [self._explain(image, target, grid) for image in (images if several else [images])]
        return out if several else out[0]

    def shared_grid(self, settings: dict) -> dict:
        """This method's settings as the shared grid a plan records: stride, samples, seed."""
        grid = {"stride": None, "samples": 1, "seed": 0}
        grid.update({self.plan_names.get(k, k): v for k, v in settings.items()})
        return grid

    def explain(self, image, classes="top3", stride: int | None = None, samples: int = 8, seed: int = 0,
                source: str | None = None, notes: list[str] | None = None) -> Explanation:
        """One image on the shared grid — the CLI's -S, -N and --seed, the server's stride, samples and seed, which a
        method without a setting of that name ignores (RISE reads samples as its masks).  `source` is the file the
        image came from and `notes` what reading it changed (images.read_image), both recorded: the CLI's
        bookkeeping."""
        return self._explain(image, classes, {"stride": stride, "samples": samples, "seed": seed}, source, notes)

    def _explain(self, image, classes, grid: dict, source: str | None = None,
                 notes: list[str] | None = None) -> Explanation:
        stride, samples, seed = grid["stride"], grid["samples"], grid["seed"]
        plan = self.plan(image, classes, stride, samples, seed, source, notes)
        progress = Progress(os.path.basename(plan.source) if plan.source else self.name, self.progress)
        progress.add(1)
        progress.update(1)
        t0, rows = time.perf_counter(), self.classifier.rows_run
        try:
            maps, stderr, run_params, timing = self._attribute(plan, progress)
        finally:
            progress.close()
        return self.finish(plan, maps, stderr, run_params, timing, self.classifier.rows_run - rows,
                           time.perf_counter() - t0)

    def plan(self, image, classes="top3", stride: int | None = None, samples: int = 8, seed: int = 0,
             source: str | None = None, notes: list[str] | None = None) -> "Plan":
        """The part of an explanation every method shares: the image in input space, p(Y|x) (one forward), the
        classes (and the fp16 check); arguments as `attribute`."""
        t_start = time.perf_counter()
        clf = self.classifier
        if isinstance(image, (str, os.PathLike)):
            source = source or os.fspath(image)
        notes = list(notes or [])
        clf.incremental_used = None  # what this explanation runs: set where it makes a perturbation batch
        img = clf.load_image(image, notes)
        rows_before = clf.rows_run
        base = clf.normalize(img[None])
        p0, first = self._predict(base)
        cls = resolve_classes(classes, p0)
        checked = {"fp16_drift": clf.check_fp16(img[None], cls)} if clf.fp16 else {}
        return Plan(img=img, base=base[0], p0=p0, classes=cls, first=first, stride=stride, samples=samples,
                    seed=seed, source=source, notes=notes, checked=checked, forwards=clf.rows_run - rows_before,
                    seconds=time.perf_counter() - t_start)

    def finish(self, plan: "Plan", maps: dict, stderr: dict, run_params: dict, timing: dict, forwards: int,
               seconds: float) -> Explanation:
        """The Explanation of `plan` with the method's maps, run parameters and timings; forwards and seconds: the
        method's own, after the plan's."""
        clf = self.classifier
        timing = {**timing, "total_s": plan.seconds + seconds}
        return Explanation(image=plan.img, probs=plan.p0, classes=plan.classes,
                           labels=[clf.labels[c] for c in plan.classes], maps=maps, stderr=stderr,
                           params={"method": self.name, **run_params, **plan.checked}, model=clf.describe(),
                           timing=timing, forwards=plan.forwards + (forwards or 0), source=plan.source,
                           notes=plan.notes)

    def _predict(self, base: np.ndarray):
        """The first forward, p(Y|x) of the normalized image `base` [1, ...] → (p0 float64 [Y], what else the method
        keeps of that forward for `_attribute`: MIP-IN its activations; None here)."""
        return self.classifier.predict(base)[0], None

    def _attribute(self, plan: Plan, progress: Progress) -> tuple[dict, dict, dict, dict]:
        """The method's own part for the image `plan` describes (its input-space image, p(Y|x), classes, what
        `_predict` kept, the grid), counting its forwards on `progress` (add, then update) → maps {name: float32
        [k, H, W] or [H, W]}, their standard errors (same keys, may be empty), the run's parameters, timings (s)."""
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
