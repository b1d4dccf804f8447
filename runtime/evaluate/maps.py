"""The maps a faithfulness study scores on one image: PMI and IG with each sampler, each comparison method, and the
controls every protocol needs (DESIGN §7):

  * `random` — uniform noise, seeded by the image's key: what a map without information scores;
  * `edge` — the photo's own gradient energy per patch (edge_map): classifier-free, so a protocol that ranks it near
    the top measures image structure, not the classifier;
  * every map again after the same Gaussian smoothing (σ = `smooth` pixels; sampler label suffixed "~smooth"), so a
    win that comes from blurriness shows (Song et al. 2023).

A patch-marginalization method whose own sampler is one of the PMI samplers (PDA and `gaussian`) gets its map from
that PMI run's forwards (`shared_runs`): the same map as its own run, for no forward more.

And two candidates for a map that holds under every protocol:

  * `shrink`: a map's own uncertainty — every map with a Monte-Carlo standard error again, each pixel multiplied by
    v² / (v² + se²) (sampler label suffixed "+se"): a value within its noise is pulled toward 0, a clear one kept; a
    deterministic sampler's maps (se = 0) are unchanged, so they get no copy;
  * `scales`: evidence at several scales — PMI and IG with the first sampler at each extra patch size K' (S = K'),
    averaged pixel by pixel with the maps at K (sampler label "<label>@K+K'…"), since the maps change with K (paper
    Fig. 22) and no single K sees both a small part and a whole object.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InfolensError
from ..measures import patches_to_pixels
from ..methods import METHODS, patch_grid
from ..samplers import SAMPLERS, windows

CONTROLS = ("random", "edge")
SHRUNK = "+se"
ONE_PASS = ("mipin", "cam")  # no patch grid: they take no stride
SMOOTHED = "~smooth"


@dataclass
class Scored:
    """One map to score: name (pmi, ig, occlusion, …, random, edge), sampler label ("-" for none), per_class {class:
    float [H, W]} or {None: float [H, W]} for a class-independent map, and what making it cost."""

    name: str
    sampler: str
    per_class: dict
    forwards: int
    seconds: float
    stderr: dict | None = None  # like per_class: the map's Monte-Carlo standard error, where it has one
    incremental: bool = False  # its perturbed copies ran by exact incremental inference (--incremental)


def edge_map(image: np.ndarray, K: int, stride: int) -> np.ndarray:
    """The image's own structure per patch: the mean Sobel gradient magnitude of its grey levels over each patch,
    averaged onto pixels like the maps — float32 [H, W]."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    magnitude = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    ys, xs = patch_grid(*grey.shape, K, stride)
    per_patch = windows(magnitude[..., None], ys, xs, K).mean(axis=(1, 2, 3))
    return patches_to_pixels(per_patch, ys, xs, K, grey.shape)


def smoothed(m: np.ndarray, sigma: float) -> np.ndarray:
    """float32 [H, W]: cv2.GaussianBlur with σ = sigma pixels (kernel ±3σ, reflected border)."""
    return cv2.GaussianBlur(np.asarray(m, np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def shrunk(v: np.ndarray, se: np.ndarray) -> np.ndarray:
    """float32 [H, W]: v · v² / (v² + se²), 0 where both are 0."""
    v, se = np.asarray(v, np.float64), np.asarray(se, np.float64)
    d = v * v + se * se
    return np.where(d > 0, v * v * v / np.where(d > 0, d, 1), 0).astype(np.float32)


def parse_sampler(spec: str) -> tuple[str, str, str | None]:
    """A --samplers entry, `NAME` or `NAME=MODEL` (a model file for that sampler, e.g. another PatchSampler), as
    (label, sampler name, model path or None); the label of `NAME=MODEL` is the model file's stem."""
    name, _, model = spec.partition("=")
    if name not in SAMPLERS:
        raise InfolensError(f"unknown sampler {name!r}: choose from {', '.join(SAMPLERS)} "
                            "(optionally NAME=MODEL_FILE)", "samplers")
    if model and not os.path.isfile(model):
        raise InfolensError(f"sampler model not found: {model} (in {spec})", "samplers")
    return (os.path.splitext(os.path.basename(model))[0] if model else name), name, model or None


def plain_label(sampler: str) -> str:
    """The sampler label of the plain map a smoothed copy or a candidate was made from ("patchsampler~smooth",
    "patchsampler+se", "patchsampler@16+8" → "patchsampler"); a plain map's own label."""
    return sampler.removesuffix(SMOOTHED).removesuffix(SHRUNK).split("@")[0]


def check_methods(methods) -> None:
    for m in methods:
        if m not in METHODS and m not in CONTROLS:
            raise InfolensError(f"unknown method {m!r}: choose from {', '.join(list(METHODS) + list(CONTROLS))}",
                                "methods")


@dataclass(frozen=True)
class MapSet:
    """Which maps a study scores and how they are made.  samplers: (label, sampler name, model or None) per PMI/IG
    run; methods: METHODS names and CONTROLS; K, stride, samples (N), rise_masks, seed: the explanations; smooth: σ in
    pixels of the smoothed copies (0: none); shrink, scales: the candidates (module doc)."""

    samplers: tuple
    methods: tuple
    K: int = 16
    stride: int = 16
    samples: int = 4
    rise_masks: int = 1000
    seed: int = 0
    smooth: float = 0.0
    shrink: bool = False
    scales: tuple = ()

    def settings(self) -> dict:
        """The JSON-ready values a study's records depend on."""
        return {"K": self.K, "S": self.stride, "N": self.samples, "rise_masks": self.rise_masks, "seed": self.seed,
                "smooth": self.smooth, "shrink": self.shrink, "scales": list(self.scales),
                "samplers": [label for label, *_ in self.samplers], "methods": list(self.methods)}


def make_maps(study, image: np.ndarray, classes: list[int], key: int, ms: MapSet) -> list[Scored]:
    """Every map `study` (a benchmark Study: its explainers are opened once) scores on `image` (uint8 [H, W, 3]) for
    `classes` under the MapSet `ms`: PMI and IG per sampler, then each method and control, then the multi-scale
    candidate, then the shrunk copies of the maps with a standard error, then each of those smoothed; key seeds the
    random map."""
    K, stride, samples, seed = ms.K, ms.stride, ms.samples, ms.seed
    out = []
    sharing = shared_runs(ms)
    for label, name, model in ms.samplers:
        out += _explained(study, study.explainer(name, K, model), image, classes, "pmi", label, stride, samples, seed,
                          sharing.get(label, ()))
    for m in ms.methods:
        if any(m in methods for methods in sharing.values()):
            continue
        if m == "random":
            out.append(Scored("random", "-", {None: np.random.default_rng([seed, key]).random(image.shape[:2])}, 0, 0.0))
        elif m == "edge":
            out.append(Scored("edge", "-", {None: edge_map(image, K, stride)}, 0, 0.0))
        else:
            n = ms.rise_masks if m == "rise" else samples
            out += _explained(study, study.explainer(METHODS[m].default_sampler, K), image, classes, m, "-",
                              None if m in ONE_PASS else stride, n, seed)
    if ms.scales:
        label, name, model = ms.samplers[0]
        at_k = {s.name: s for s in out if s.sampler == label}
        runs = [_explained(study, study.explainer(name, k, model), image, classes, "pmi", label, k, samples, seed)
                for k in ms.scales]
        for s in at_k.values():
            others = [next(r for r in run if r.name == s.name) for run in runs]
            parts = [s] + others
            # the mean of independent runs: its standard error is √(Σ se²) / n
            se = ({c: (np.sqrt(sum(p.stderr[c].astype(np.float64) ** 2 for p in parts)) / len(parts)).astype(np.float32)
                   for c in s.per_class} if all(p.stderr for p in parts) else None)
            out.append(Scored(s.name, f"{label}@{K}+" + "+".join(map(str, ms.scales)),
                              {c: np.mean([p.per_class[c] for p in parts], axis=0).astype(np.float32)
                               for c in s.per_class},
                              sum(p.forwards for p in parts), round(sum(p.seconds for p in parts), 3), se,
                              all(p.incremental for p in parts)))
    if ms.shrink:
        out += [Scored(s.name, s.sampler + SHRUNK, {c: shrunk(v, s.stderr[c]) for c, v in s.per_class.items()},
                       s.forwards, s.seconds, incremental=s.incremental) for s in list(out)
                if s.stderr and all(np.isfinite(e).all() and e.any() for e in s.stderr.values())]
    if ms.smooth > 0:
        out += [Scored(s.name, s.sampler + SMOOTHED, {c: smoothed(v, ms.smooth) for c, v in s.per_class.items()},
                       s.forwards, s.seconds, incremental=s.incremental) for s in list(out)]
    return out


def shared_runs(ms: MapSet) -> dict[str, tuple[str, ...]]:
    """{sampler label: the methods of `ms` whose maps come from that sampler's PMI run}: a patch-marginalization
    method whose own sampler (`default_sampler`, the shipped one) is one of the PMI samplers reduces the same
    in-fills — the same map as its own run, for no forward more (PDA's woe from PMI/gaussian)."""
    from ..methods import PatchMarginalization

    out: dict[str, tuple[str, ...]] = {}
    for m in ms.methods:
        cls = METHODS.get(m)
        if cls is None or not issubclass(cls, PatchMarginalization):
            continue
        label = next((label for label, name, model in ms.samplers if name == cls.default_sampler and model is None),
                     None)
        if label is not None:
            out[label] = out.get(label, ()) + (m,)
    return out


def _explained(study, explainer, image, classes, method, label, stride, samples, seed, also=()) -> list[Scored]:
    """The Scored maps of one explanation (explainer: the study's, which may read it from the benchmark's
    explanations); the maps of the methods `also` (from the same forwards) are labelled as their own runs would be
    (sampler "-")."""
    e = explainer.explain(image, classes=classes, stride=stride, samples=samples, seed=seed, method=method,
                          also=also)
    # what making it cost, from the explanation itself: an explanation an earlier study made is read back
    forwards, seconds = e.forwards, round(e.timing["total_s"], 3)
    used = bool(e.model.get("incremental", {}).get("used"))

    def per_class(a):
        return {None: a} if a.ndim == 2 else {c: a[np.flatnonzero(e.classes == c)[0]] for c in classes}

    own = METHODS[method].maps
    return [Scored(name, label if name in own else "-", per_class(e.maps[name]), forwards, seconds,
                   per_class(e.stderr[name]) if name in e.stderr else None, used) for name in e.maps]
