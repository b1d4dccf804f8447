"""PMI: a patch-marginalization method (methods/marginalize.py)."""
from __future__ import annotations

from .marginalize import PatchMarginalization


class PMI(PatchMarginalization):
    """PMI and IG maps (Yi et al.), in bits: "pmi" [k, H, W] = log2 p(c|x) − log2 p(c|x without the region) (> 0
    where the region supports c), "ig" [H, W] = KL(p(Y|x) ‖ p(Y|x without the region)) (≥ 0), each with its
    Monte-Carlo standard error; one run gives both.

    The default sampler is `ring-mean` (the context's mean colour: nothing of the patch itself), the map the
    benchmark's protocols rank first or second among PMI maps (docs/benchmark, "Which map to trust"); pass a
    `patchsampler` sampler for the paper's "true to the data" map."""

    name, maps, default_sampler, reduction = "pmi", ("pmi", "ig"), "ring-mean", "pmi"
