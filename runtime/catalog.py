"""Where the shipped models live (package data `infolens.models`), and their cards (`infolens models`)."""
from __future__ import annotations

import glob
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


def shipped(filename: str, flag: str) -> str:
    """Path of a shipped model file; a one-line error naming the flag to use instead when it is missing."""
    path = os.path.join(models_dir(), filename)
    if not os.path.isfile(path):
        raise InfolensError(f"shipped model {filename} not found in {models_dir()} (pass your own with {flag})")
    return path


def list_cards() -> list[tuple[str, dict]]:
    """(onnx path, card dict) of every shipped model that has a card, sorted by file name."""
    out = []
    for path in sorted(glob.glob(os.path.join(models_dir(), "*.onnx"))):
        card_path = os.path.splitext(path)[0] + ".json"
        card = {}
        if os.path.exists(card_path):
            with open(card_path) as f:
                card = json.load(f)
        out.append((path, card))
    return out
