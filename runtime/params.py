"""The parameters users set, declared once: their constraints (type, range, choices) and their command-line flags.

The library validates with `check` and raises `InfolensError(reason, param)` with the parameter's API name; only a
front end names its own spelling of it: the CLI appends `flag(param)`, a server would name the request field.  The
same constraint gives the same message from every front end.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from .errors import InfolensError


@dataclass(frozen=True)
class Param:
    """One parameter: `flag` is its command-line spelling; `kind` int, float or str; `low`/`high` inclusive bounds;
    `choices` the allowed values, or `registry` ("module:name"): the registry whose keys they are (samplers, methods,
    fills), read when first needed so that the registry stays the one place a name is declared.  Parameters with
    only a flag (files, free-form text) are checked where they are read, but still name their flag through this
    table."""

    flag: str
    kind: type | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    meaning: str = ""
    low_open: bool = False  # low itself is excluded
    registry: str | None = None

    def allowed(self) -> tuple | None:
        """The allowed values (None: any value of `kind` within the bounds)."""
        if self.registry is None:
            return self.choices
        module, name = self.registry.split(":")
        return tuple(getattr(importlib.import_module(module), name))

    def constraint(self) -> str:
        if self.allowed() is not None:
            return "one of " + ", ".join(map(str, self.allowed()))
        what = {int: "an integer", float: "a number"}.get(self.kind, "a value")
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}]"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '≥'} {_num(self.low)}"
        return what


def _num(v: float) -> str:
    return "2^64 − 1" if v == 2**64 - 1 else f"{v:g}" if isinstance(v, float) else str(v)


# Decoded image pixels at most, read from the file's header before any decoder allocates (a decompression bomb is a
# few MB on disk).  50 MP takes every phone and DSLR photo in its default mode; decoding one costs about 150 MB as
# 8-bit RGB and a few times that at its peak (16-bit, alpha, the RGB copy), which a 1–2 GB edge box still has.
MAX_PIXELS = 50_000_000

PARAMS: dict[str, Param] = {
    # the explanation
    "method": Param("--method", str, meaning="attribution method", registry="infolens.methods:METHODS"),
    "K": Param("-K", int, low=1, meaning="patch size in pixels"),
    "stride": Param("-S", int, low=1, meaning="patch stride in pixels"),
    "samples": Param("-N", int, low=1, meaning="in-fills per patch (RISE: masks)"),
    "classes": Param("--classes", meaning="classes that get a map: topK or indices"),
    "seed": Param("--seed", int, low=0, high=2**64 - 1, meaning="random seed"),
    "batch_size": Param("--batch-size", int, low=1, meaning="classifier images per call"),
    "sampler": Param("--sampler", str, meaning="how a patch is marginalized", registry="infolens.samplers:SAMPLERS"),
    "sampler_model": Param("--sampler-model", meaning="PatchSampler .onnx or Gaussian .npz file"),
    "coupling": Param("--coupling", str, choices=("pixel", "none"), meaning="categorical head: channel coupling"),
    "rise_grid": Param("--rise-grid", int, low=1, meaning="RISE mask grid s×s"),
    "rise_p": Param("--rise-p", float, low=0.0, high=1.0, low_open=True, meaning="RISE probability of keeping a cell"),
    "target_se": Param("--target-se", float, low=0.0, low_open=True, meaning="adaptive N: standard error to reach"),
    "max_samples": Param("--max-samples", int, low=1, meaning="adaptive N: in-fills per patch at most"),
    "device": Param("--device", str, choices=("cpu", "cuda"), meaning="ONNX Runtime device"),
    "batch_backend": Param("--batch-backend", str, choices=("auto", "host", "composer"),
                           meaning="how perturbation batches are built"),
    "incremental": Param("--incremental", str, choices=("auto", "on", "off"),
                         meaning="exact incremental inference (a perturbed copy recomputes only what its patch changes)"),
    "provider": Param("--provider", str, choices=("default", "tensorrt"), meaning="ONNX Runtime execution provider"),
    "fp16": Param("--fp16", meaning="run the classifier in float16"),
    "fp16_tolerance": Param("--fp16-tolerance", float, low=0.0, low_open=True,
                            meaning="--fp16: largest change of a log2 probability accepted, in bits"),
    "cuda_graph": Param("--cuda-graph", meaning="replay the classifier as a CUDA graph"),
    "cpu_fallback": Param("--allow-cpu-fallback", meaning="on CUDA, let ops without a CUDA kernel run on the CPU"),
    # the classifier and its preprocessing
    "model": Param("--model", meaning="classifier .onnx file"),
    "card": Param("--card", meaning="model card .json file"),
    "layout": Param("--layout", str, choices=("NCHW", "NHWC"), meaning="input layout"),
    "size": Param("--size", meaning="input height and width"),
    "channel_order": Param("--channel-order", str, choices=("RGB", "BGR"), meaning="input channel order"),
    "scale": Param("--scale", float, meaning="pixel multiplier before mean/std"),
    "mean": Param("--mean", meaning="per-channel mean after scaling"),
    "std": Param("--std", meaning="per-channel std after scaling"),
    "resize": Param("--resize", str, choices=("shorter-side-crop", "stretch", "letterbox", "none"),
                    meaning="how images reach the input size"),
    "interpolation": Param("--interpolation", str, choices=("auto", "area", "linear", "cubic", "nearest", "lanczos"),
                           meaning="resampling filter of the resize"),
    "pad_value": Param("--pad-value", meaning="letterbox: colour of the padding, one value or R,G,B in 0..255"),
    "crop_fraction": Param("--crop-fraction", float, low=0.0, high=1.0, low_open=True,
                           meaning="shorter-side-crop: the crop's share of the resized image"),
    "grayscale": Param("--grayscale", str, choices=("bt601", "pil", "bt709", "average"),
                       meaning="single-channel models: how RGB becomes one channel"),
    "output_kind": Param("--output-kind", str, choices=("auto", "probs", "logits", "sigmoid", "sigmoid-logits"),
                         meaning="what the class scores are"),
    "input_name": Param("--input-name", meaning="graph input"),
    "output_name": Param("--output-name", meaning="graph output with the class scores"),
    "background": Param("--background", meaning="colour transparent pixels are composited on, one value or R,G,B"),
    "frame": Param("--frame", int, low=0, meaning="frame of a multi-frame image (0-based)"),
    # MIP-IN
    "map_layer": Param("--map-layer", meaning="MIP-IN: the tensor the inverse stops at"),
    "max_ops": Param("--max-ops", int, low=1, meaning="MIP-IN: budget of inverse ops"),
    "inverse": Param("--inverse", meaning="MIP-IN: a fitted inverse .onnx"),
    "crops": Param("--crops", int, low=2, meaning="MIP-IN: random-resized crops to fit on"),
    "data": Param("--data", meaning="folders of photos"),
    "ray": Param("--ray", meaning="Ray cluster address"),
    # the server
    "host": Param("--host", meaning="address the server listens on"),
    "port": Param("--port", int, low=1, high=65535, meaning="TCP port"),
    "state_dir": Param("--state-dir", meaning="jobs database and job folders"),
    "models": Param("--models", meaning="folder of the served classifiers"),
    "token_file": Param("--token-file", meaning="bearer tokens, one per line"),
    "queue_size": Param("--queue-size", int, low=1, meaning="active jobs at most"),
    "max_body_mb": Param("--max-body-mb", float, low=0.0, low_open=True, meaning="request body limit in MB"),
    "max_pixels": Param("--max-pixels", int, low=1, meaning="decoded image pixels at most"),
    "max_forwards": Param("--max-forwards", int, low=1, meaning="forwards one job may need at most"),
    "sync_forwards": Param("--sync-forwards", int, low=0, meaning="the synchronous route's forwards budget"),
    "retention_hours": Param("--retention-hours", float, low=0.0, low_open=True,
                             meaning="hours an ended job's files are kept"),
    "examples": Param("--examples", meaning="photos the web viewer offers"),
    "chunk_forwards": Param("--chunk-forwards", int, low=1, meaning="forwards per chunk before the next job's turn"),
    # files and evaluation
    "out": Param("--out", meaning="output folder"),
    "overwrite": Param("--overwrite", meaning="replace files infolens did not write"),
    "map": Param("--map", meaning="which map orders the pixels"),
    "cls": Param("--class", meaning="class whose probability is tracked"),
    "fill": Param("--fill", str, meaning="what replaces removed pixels", registry="infolens.evaluate.fills:FILLS"),
    "steps": Param("--steps", int, low=1, meaning="deletion/insertion steps"),
    "steps_every": Param("--steps-every", int, low=1, meaning="layers randomized per sanity step"),
    "samplers": Param("--samplers", meaning="PMI/IG samplers of a study"),
    "methods": Param("--methods", meaning="comparison methods and controls of a study"),
    "json": Param("--json", meaning="where the evaluation record goes"),
    "images": Param("--images", meaning="folder of labelled photos"),
    "labels": Param("--labels", meaning="CSV of file and class_index"),
    "limit": Param("--limit", int, low=1, meaning="photos to use, evenly spaced over the labels"),
    "fills": Param("--fills", meaning="deletion/insertion fills"),
    "report": Param("--report", meaning="where the benchmark's report goes"),
    "studies": Param("--studies", meaning="which benchmark studies"),
    "study_photos": Param("--study-photos", int, low=1, meaning="photos of the sanity, cause, N and K studies"),
    "sanity_every": Param("--sanity-every", int, low=1, meaning="layers randomized per benchmark sanity step"),
    "sample_counts": Param("--sample-counts", meaning="the N values of the benchmark's N study"),
    "patch_sizes": Param("--patch-sizes", meaning="the K values of the benchmark's K study"),
    "negative_steps": Param("--negative-steps", int, low=1, meaning="negative-evidence removal steps"),
    "fill_draws": Param("--fill-draws", int, low=1, meaning="PatchSampler fill: in-fill draws a curve point averages"),
    "mosaics": Param("--mosaics", int, low=1, meaning="pointing game: 2×2 mosaics"),
    "min_p": Param("--min-p", float, low=0.0, high=1.0, meaning="pointing game: the qualifying probability"),
    "scales": Param("--scales", meaning="the multi-scale candidate's extra patch sizes"),
    "targets": Param("--targets", meaning="the benchmark's explained classes: pred, true"),
    "smooth": Param("--smooth", float, low=0.0, meaning="control: σ in pixels of the Gaussian smoothing of every map"),
    "extra_photos": Param("--extra-photos", int, low=1, meaning="removal: photos that also score the smoothed "
                          "copies and the candidates"),
    "fit_data": Param("--fit-data", meaning="the MIP-IN study's photos to refit on"),
    "sanity_crops": Param("--sanity-crops", int, low=1, meaning="crops per refitted inverse"),
    "grids": Param("--grids", meaning="the grids study's K:S:N triples"),
    "grid_photos": Param("--grid-photos", int, low=1, meaning="photos of the removal study at the other grids"),
    "indist_photos": Param("--indist-photos", int, low=1, meaning="photos of the in-distribution study"),
    "cell": Param("--cell", int, low=2, meaning="in-distribution study: the removed cells' side in pixels"),
    "evaluator": Param("--evaluator", meaning="the in-distribution study's fine-tuned evaluator (ONNX file)"),
}


@dataclass(frozen=True)
class ExplainConfig:
    """One explanation's settings and their defaults, declared once: `infolens explain`'s flags, the server's
    request params and the web viewer's form all start from these (names as in PARAMS)."""

    method: str = "pmi"
    sampler: str | None = None  # None: the method's own (methods.METHODS[method].default_sampler)
    K: int = 8
    stride: int | None = None  # None: K, non-overlapping patches
    samples: int | None = None  # None: `default_samples(method)`
    classes: str = "top3"
    seed: int = 0
    target_se: float | None = None
    max_samples: int | None = None
    rise_grid: int = 7
    rise_p: float = 0.5

    @staticmethod
    def default_samples(method: str) -> int:
        """N when none is given: 8 in-fills per patch, or RISE's 1000 masks."""
        return 1000 if method == "rise" else 8


def check(name: str, value):
    """`value` if it meets `name`'s constraint, else InfolensError(f"{name} must be …, got …", name).  Integers
    accept numpy integers (not bool), numbers accept ints."""
    p = PARAMS[name]
    ok = True
    allowed = p.allowed()
    if allowed is not None:
        ok = value in allowed
    elif p.kind is int:
        ok = _is_int(value)
    elif p.kind is float:
        ok = _is_int(value) or isinstance(value, (float, np.floating))
    if ok and allowed is None and p.low is not None:
        ok = (value > p.low if p.low_open else value >= p.low) and (p.high is None or value <= p.high)
    if not ok:
        raise InfolensError(f"{name} must be {p.constraint()}, got {value!r}", name)
    return value


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def flag(name: str | None) -> str | None:
    """The command-line flag of a parameter (None when there is none)."""
    p = PARAMS.get(name) if name else None
    return p.flag if p else None


def with_flag(err: InfolensError) -> str:
    """The CLI's one line for an error: the reason, then the flag that fixes it in parentheses."""
    f = flag(err.param)
    return f"{err} ({f})" if f else str(err)
