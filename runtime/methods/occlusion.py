"""Occlusion: a patch-marginalization method (methods/marginalize.py)."""
from __future__ import annotations

from .marginalize import PatchMarginalization


class Occlusion(PatchMarginalization):
    """Occlusion (Zeiler and Fergus): "occlusion" [k, H, W] = p(c|x) − p(c|x with the region grey), in
    probability units (with the deterministic gray fill by default)."""

    name, maps, default_sampler, reduction = "occlusion", ("occlusion",), "gray", "occlusion"
