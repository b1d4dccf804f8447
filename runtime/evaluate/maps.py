"""The maps a faithfulness study scores on one image: PMI and IG with each sampler, each comparison method, and the
controls every protocol needs (DESIGN §7):

  * `random` — uniform noise, seeded by the image's key: what a map without information scores;
  * `edge` — the photo's own gradient energy per patch (edge_map): classifier-free, so a protocol that ranks it near
    the top measures image structure, not the classifier;
  * every map again after the same Gaussian smoothing (σ = `smooth` pixels; sampler label suffixed "~smooth"), so a
    win that comes from blurriness shows (Song et al. 2023).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InfolensError
from ..measures import patches_to_pixels
from ..methods import METHODS, patch_grid
from ..samplers import windows

CONTROLS = ("random", "edge")
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


def check_methods(methods) -> None:
    for m in methods:
        if m not in METHODS and m not in CONTROLS:
            raise InfolensError(f"unknown method {m!r}: choose from {', '.join(list(METHODS) + list(CONTROLS))}",
                                "methods")


def make_maps(study, image: np.ndarray, classes: list[int], key: int, samplers, methods, K: int, stride: int,
              samples: int, rise_masks: int, seed: int, smooth: float = 0.0) -> list[Scored]:
    """Every map `study` (a benchmark Study: its explainers are opened once) scores on `image` (uint8 [H, W, 3]) for
    `classes`: PMI and IG per sampler spec (label, name, model), then each of `methods` (METHODS names and CONTROLS),
    then — when smooth > 0 — each of those smoothed; key seeds the random map."""
    out = []
    for label, name, model in samplers:
        out += _explained(study, study.explainer(name, K, model), image, classes, "pmi", label, stride, samples, seed)
    for m in methods:
        if m == "random":
            out.append(Scored("random", "-", {None: np.random.default_rng([seed, key]).random(image.shape[:2])}, 0, 0.0))
        elif m == "edge":
            out.append(Scored("edge", "-", {None: edge_map(image, K, stride)}, 0, 0.0))
        else:
            n = rise_masks if m == "rise" else samples
            out += _explained(study, study.explainer(METHODS[m].default_sampler, K), image, classes, m, "-",
                              None if m in ONE_PASS else stride, n, seed)
    if smooth > 0:
        out += [Scored(s.name, s.sampler + SMOOTHED, {c: smoothed(v, smooth) for c, v in s.per_class.items()},
                       s.forwards, s.seconds) for s in list(out)]
    return out


def _explained(study, explainer, image, classes, method, label, stride, samples, seed) -> list[Scored]:
    clf = study.classifier
    t0, before = time.perf_counter(), clf.rows_run
    e = explainer.explain(image, classes=classes, stride=stride, samples=samples, seed=seed, method=method)
    forwards, seconds = clf.rows_run - before, round(time.perf_counter() - t0, 3)
    return [Scored(name, label, {None: e.maps[name]} if e.maps[name].ndim == 2 else
                   {c: e.map_for(name, c) for c in classes}, forwards, seconds) for name in e.maps]
