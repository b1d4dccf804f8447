"""Counter-based random streams: one Philox generator per (seed, patch position or mask index)."""
from __future__ import annotations

import numpy as np


def streams(seed: int, positions: np.ndarray) -> list[np.random.Generator]:
    """The random stream of each position: Philox keyed by (seed, position index).

    Sample n of a position always consumes the n-th block of its stream, so results depend only on
    (seed, position, sample) — never on batch size, thread count or backend.
    """
    return [np.random.Generator(np.random.Philox(key=np.array([seed, p], np.uint64))) for p in positions]
