"""Where the shipped models live (package data `infolens.models`), their cards (`infolens models`), and model files
found again by content (sha256) when a saved explanation moves to another machine."""
from __future__ import annotations

import functools
import glob
import hashlib
import json
import os

from .errors import InfolensError

DEFAULT_CLASSIFIER = "efficientnet_lite0.onnx"


def models_dir() -> str:
    """The shipped models folder: $INFOLENS_MODELS if set, else the installed `infolens.models` package data."""
    env = os.environ.get("INFOLENS_MODELS")
    if env:
        return env
    from importlib.resources import files

    return str(files("infolens.models"))


def shipped(filename: str, param: str) -> str:
    """Path of a shipped model file; a one-line error naming the parameter that passes another when it is missing."""
    path = os.path.join(models_dir(), filename)
    if not os.path.isfile(path):
        raise InfolensError(f"shipped model {filename} not found in {models_dir()} (pass your own)", param)
    return path


def model_file(name_or_path) -> str:
    """A classifier file: an existing path as it is, else the shipped model of that name ("efficientnet_lite0",
    with or without ".onnx"); anything else is returned unchanged, for the caller's not-found error."""
    path = os.fspath(name_or_path)
    if os.path.exists(path) or os.path.dirname(path):
        return path
    candidate = os.path.join(models_dir(), path if path.endswith(".onnx") else path + ".onnx")
    return candidate if os.path.isfile(candidate) else path


def cache_dir(*parts: str) -> str:
    """A folder under infolens's cache ($XDG_CACHE_HOME/infolens, default ~/.cache/infolens): what can be made again
    from the models (TensorRT engines, cut PatchSampler graphs, the perf benchmark's ResNet-50)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "infolens", *parts)


def card_path(model_path: str) -> str:
    """Where the card of an ONNX file lives: beside it, the same stem with .json (model.onnx → model.json,
    x.mipin.onnx → x.mipin.json; a file named otherwise, e.g. model.bin, → model.json)."""
    return os.path.splitext(model_path)[0] + ".json"


def shipped_names() -> list[str]:
    """Names of the shipped classifiers (model files with a card that has an "input" section)."""
    return [os.path.splitext(os.path.basename(p))[0] for p, card in list_cards() if "input" in card]


def list_cards(folder: str | None = None) -> list[tuple[str, dict]]:
    """(onnx path, card dict — {} without one) of every model in `folder` (default: the shipped models), sorted by
    file name."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder or models_dir(), "*.onnx"))):
        card, where = {}, card_path(path)
        if os.path.exists(where):
            with open(where) as f:
                card = json.load(f)
        out.append((path, card))
    return out


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes (cached while its size and modification time stay the same)."""
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_model(recorded: str, sha256: str | None, what: str, param: str, near: str | None = None) -> str:
    """The model file a saved explanation names: the first of its recorded path, a file of the same name in the
    folder `near` (the explanation's), and the shipped models whose sha256 is `sha256`.  An explanation without a
    sha256 (schema 1) accepts its recorded path only.  `what` and `param` name the model and the parameter that
    passes it directly, for the error when none matches.
    """
    name = os.path.basename(recorded)
    candidates = [recorded] + ([os.path.join(near, name)] if near else [])
    if sha256 is None:
        if os.path.isfile(recorded):
            return recorded
        raise InfolensError(f"{what} {recorded} not found, and the explanation records no sha256 to find it by "
                            f"(pass it directly)", param)
    candidates += sorted(glob.glob(os.path.join(models_dir(), "*" + os.path.splitext(name)[1])))
    for path in candidates:
        if os.path.isfile(path) and file_sha256(path) == sha256:
            return path
    places = f"{recorded}, {os.path.join(near, name)} and the shipped models" if near else \
        f"{recorded} and the shipped models"
    raise InfolensError(f"{what} {name} with sha256 {sha256[:12]}… is not at {places} (pass it directly)", param)
