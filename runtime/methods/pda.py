"""PDA: a patch-marginalization method (methods/marginalize.py)."""
from __future__ import annotations

from .marginalize import PatchMarginalization


class PDA(PatchMarginalization):
    """Prediction difference analysis (Zintgraf et al.): "woe" [k, H, W], weight of evidence in bits, log2 odds
    p(c|x) − log2 odds p(c|x without the region), the patch marginalized with the conditional Gaussian."""

    name, maps, default_sampler, reduction = "pda", ("woe",), "gaussian", "pda"
