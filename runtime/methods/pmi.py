"""PMI: a patch-marginalization method (methods/marginalize.py)."""
from __future__ import annotations

from .marginalize import PatchMarginalization


class PMI(PatchMarginalization):
    """PMI and IG maps (Yi et al.), in bits: "pmi" [k, H, W] = log2 p(c|x) − log2 p(c|x without the region) (> 0
    where the region supports c), "ig" [H, W] = KL(p(Y|x) ‖ p(Y|x without the region)) (≥ 0), each with its
    Monte-Carlo standard error; one run gives both."""

    name, maps, default_sampler, reduction = "pmi", ("pmi", "ig"), "patchsampler", "pmi"
