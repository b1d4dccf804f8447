"""What one run of a generated graph reads of the photo, made on the host for a batch's positions at once: the
photo's activations over each position's boxes (`cut_crops`), the one-hot matrices that place a change into its map
(`onto`) and the masks of a box's elements inside the map (`inside`)."""
from __future__ import annotations

import numpy as np


def onto(spans: np.ndarray, shape, a: int) -> np.ndarray:
    """float32 [U, 1…, n, h] (axis a second to last) or [U, 1…, h, n]: per row of spans (int [U, 2], lo and hi of
    a box along axis a, h long), 1 where its element j lies at i of the map (n long); rows or columns beyond the
    map are zero."""
    along = spans[:, :1] + np.arange(spans[0, 1] - spans[0, 0])  # [U, h]
    hit = (along[:, None, :] == np.arange(shape[a])[None, :, None]).astype(np.float32)  # [U, n, h]
    m = hit if a == len(shape) - 2 else hit.transpose(0, 2, 1)
    return m.reshape((len(spans),) + (1,) * (len(shape) - 3) + m.shape[1:])


def inside(boxes: np.ndarray, shape, axes) -> np.ndarray:
    """bool [U, …box…] (1 along the axes the box cannot cut): per box of boxes (int [U, rank, 2]), its elements
    inside a map of `shape`."""
    inside = np.ones((len(boxes),) + (1,) * (len(shape) - 1), bool)
    for a in axes:
        along = boxes[:, a, :1] + np.arange(boxes[0, a, 1] - boxes[0, a, 0])  # [U, h]
        inside = inside & ((along >= 0) & (along < shape[a])).reshape(
            [len(boxes)] + [-1 if i == a else 1 for i in range(1, len(shape))])
    return inside


def cut_crops(acts: dict, t: str, pad: float, boxes: np.ndarray, whole: bool) -> np.ndarray:
    """[U, …box…]: the photo's tensor t (acts from `Incremental.tap`, batch 1) over each box of boxes (int [U, rank,
    2] of one size, the batch axis ignored), `pad` where a box leaves the map.  The map padded far enough is kept
    in acts for the image (grown when a box reaches further), so that all the crops are one gather; the map itself
    only where it is also fed `whole`."""
    kept = acts.get((t, pad))
    shape = _map(acts, t).shape if kept is None else np.subtract(kept[0].shape, kept[1] + kept[2])
    lo, hi = np.maximum(0, -boxes[:, 1:, 0].min(0)), np.maximum(0, boxes[:, 1:, 1].max(0) - shape)
    if kept is None or (lo > kept[1]).any() or (hi > kept[2]).any():
        if kept is not None:
            lo, hi = np.maximum(lo, kept[1]), np.maximum(hi, kept[2])
        kept = acts[(t, pad)] = np.pad(_map(acts, t), list(zip(lo, hi)), constant_values=pad), lo, hi
        if not whole:
            acts.pop(t, None)
    windows = np.lib.stride_tricks.sliding_window_view(kept[0], boxes[0, 1:, 1] - boxes[0, 1:, 0])
    return windows[tuple((boxes[:, 1:, 0] + kept[1]).T)]


def _map(acts: dict, t: str) -> np.ndarray:
    """The photo's tensor t without its batch axis: from acts, or from within a padded copy (`cut_crops`)."""
    if t in acts:
        return acts[t][0]
    padded, lo, hi = next(v for k, v in acts.items() if isinstance(k, tuple) and k[0] == t)
    return padded[tuple(slice(a, n - b) for a, b, n in zip(lo, hi, padded.shape))]
