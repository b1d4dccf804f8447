"""What removed pixels become in a removal metric (DESIGN §7): one class per fill, registered once in FILLS.

Every fill answers `images(image, removed) -> uint8 [D, M, H, W, 3]`: the image with each of M boolean masks'
pixels removed, in D independent draws (a curve point is the mean p(class) over the draws).  The fill is a confound
(a fill that differs from the image can score a map by the removed region's shape, and pushes the image off the
training distribution), so the benchmark measures every method under all of them:

  * `blur` — the pixels of cv2.GaussianBlur(image, (11, 11), 5): keeps the low frequencies;
  * `black` — 0;
  * `mean` — the dataset-mean colour: the pixel value that the model's normalization maps to 0 (RISE's convention;
    for a model that takes raw pixels, 0);
  * `road` — ROAD's noisy linear imputation (Rong et al., ICML 2022, their `road/imputations.py`): each removed
    pixel is the weighted mean of its 8 neighbours (1/6 for the 4 direct, 1/12 for the diagonals; weights of
    neighbours outside the image dropped), the kept pixels fixed, solved as one sparse linear system per mask, then
    Gaussian noise σ = `noise` on the [0, 1] pixel scale added to the removed pixels; the result is rounded to grey
    levels, since the classifier takes uint8 pixels (with every pixel removed nothing anchors the system: 0, black,
    plus the noise);
  * `patchsampler` — in-distribution removal: every K×K tile of the image (stride K, border-aligned last row and
    column) replaced by a PatchSampler in-fill conditioned on the original image around it; `draws` independent
    draws (in-fills 0..draws−1 of the (seed, tile) streams).

All but `road` are *static*: one replacement image per draw, whatever the mask (`replacements`).
"""
from __future__ import annotations

import functools
import hashlib
import os

import cv2
import numpy as np

from .. import params
from ..errors import InfolensError

# ROAD's neighbour weights (dy, dx, w): the authors' `neighbors_weights`
ROAD_WEIGHTS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6), (-1, -1, 1 / 12),
                (1, 0, 1 / 6), (-1, 0, 1 / 6))


class Fill:
    """Base of the fills.  `name`: registry key; `static`: one replacement image per draw (`replacements`);
    `draws`: D, the independent draws a curve point averages."""

    name, static, draws = "", True, 1

    def replacements(self, image: np.ndarray) -> np.ndarray:
        """uint8 [D, H, W, 3]: what every pixel of `image` (uint8 [H, W, 3]) becomes when removed, per draw."""
        raise NotImplementedError

    def images(self, image: np.ndarray, removed: np.ndarray) -> np.ndarray:
        """uint8 [D, M, H, W, 3]: `image` with the pixels of each mask of `removed` (bool [M, H, W]) removed."""
        rep = self.replacements(image)
        return np.where(removed[None, :, :, :, None], rep[:, None], image[None, None])

    def describe(self) -> dict:
        return {"fill": self.name, "draws": self.draws}


class Blur(Fill):
    name = "blur"

    def replacements(self, image):
        return cv2.GaussianBlur(image, (11, 11), 5)[None]


class Black(Fill):
    name = "black"

    def replacements(self, image):
        return np.zeros_like(image)[None]


class DatasetMean(Fill):
    """colour: uint8 [3] RGB, the value the classifier's normalization maps to 0 (`dataset_mean`)."""

    name = "mean"

    def __init__(self, colour):
        self.colour = np.asarray(colour, np.uint8)

    def replacements(self, image):
        return np.broadcast_to(self.colour, image.shape)[None].copy()

    def describe(self):
        return {**super().describe(), "colour": self.colour.tolist()}


def dataset_mean(pre) -> np.ndarray:
    """uint8 [3] RGB: the pixel whose normalized value is 0 in each channel, (mean / scale) rounded and clipped
    (a grey model: the same level in R, G and B; a uint8 model: 0).  pre: classifier.Preprocessing."""
    if pre.dtype == "uint8":
        return np.zeros(3, np.uint8)
    per_channel = np.clip(np.rint(np.asarray(pre.mean, float) / pre.scale), 0, 255)
    if pre.channels == 1:
        return np.full(3, per_channel[0], np.uint8)
    rgb = np.zeros(3)
    for value, ch in zip(per_channel, pre.channel_order):
        rgb["RGB".index(ch)] = value
    return rgb.astype(np.uint8)


class Road(Fill):
    """noise: σ of the Gaussian noise on the [0, 1] pixel scale (ROAD: 0.01); seed: the noise's stream, keyed by the
    mask itself (default_rng([seed, pixels removed, sum of their flat indices])), so a mask gets the same noise in
    any batch."""

    name, static = "road", False

    def __init__(self, noise: float = 0.01, seed: int = 0):
        self.noise, self.seed = noise, seed

    def images(self, image, removed):
        from concurrent.futures import ThreadPoolExecutor

        def one(mask):
            idx = np.flatnonzero(mask.ravel())
            rng = np.random.default_rng([self.seed, len(idx), int(idx.sum())])
            return np.clip(np.rint(road_impute(image, mask, self.noise, rng)), 0, 255)

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # SuperLU releases the GIL: the solves run in parallel
            return np.stack(list(pool.map(one, removed))).astype(np.uint8)[None]

    def replacements(self, image):
        raise InfolensError("the road fill depends on the removed pixels: it has no single replacement image", "fill")

    def describe(self):
        return {**super().describe(), "noise": self.noise}


def road_system(mask: np.ndarray, image: np.ndarray):
    """ROAD's linear system for the removed pixels of `mask` (bool [H, W]): (A scipy.sparse CSC [n, n], b float64
    [n, C], flat indices [n] of the removed pixels) with A x = b ⇔ each removed pixel is the weighted mean of its
    in-image neighbours (image float [H, W, C], any scale)."""
    from scipy import sparse

    H, W = mask.shape
    flat = image.reshape(H * W, -1).astype(np.float64)
    idx = np.flatnonzero(mask.ravel())
    var = np.full(H * W, -1, np.int64)
    var[idx] = np.arange(len(idx))
    y, x = np.divmod(idx, W)
    rows, cols, vals = [np.arange(len(idx))], [np.arange(len(idx))], []
    diag = np.zeros(len(idx))
    b = np.zeros((len(idx), flat.shape[1]))
    for dy, dx, w in ROAD_WEIGHTS:
        yy, xx = y + dy, x + dx
        inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        diag[inside] += w
        j = np.where(inside, yy * W + xx, 0)
        unknown = inside & (var[j] >= 0)
        known = inside & ~unknown
        rows.append(np.flatnonzero(unknown))
        cols.append(var[j[unknown]])
        vals.append(np.full(unknown.sum(), w))
        np.add.at(b, np.flatnonzero(known), -w * flat[j[known]])
    vals.insert(0, -diag)
    A = sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(len(idx), len(idx)))
    return A, b, idx


@functools.lru_cache(maxsize=8)
def dissection_rank(H: int, W: int, leaf: int = 4) -> np.ndarray:
    """int64 [H·W]: each pixel's place in a nested-dissection order of the H×W grid — the two halves of a rectangle
    (split across its longer side) first, each ordered the same way, then the line between them; rectangles of at
    most leaf²/2 pixels or 2 pixels wide in row-major order.  Eliminating pixels in this order keeps the fill of a
    grid system's factors near n·log n."""
    rank = np.empty(H * W, np.int64)
    stack, order = [(0, H, 0, W)], []
    while stack:  # depth first, the separator after both halves: pushed in reverse
        y0, y1, x0, x1 = stack.pop()
        h, w = y1 - y0, x1 - x0
        if h <= 0 or w <= 0:
            continue
        if h * w <= leaf * leaf // 2 or min(h, w) <= 2:
            order.append((np.arange(y0, y1)[:, None] * W + np.arange(x0, x1)).ravel())
        elif h >= w:
            m = (y0 + y1) // 2
            stack += [(m, m + 1, x0, x1), (m + 1, y1, x0, x1), (y0, m, x0, x1)]
        else:
            m = (x0 + x1) // 2
            stack += [(y0, y1, m, m + 1), (y0, y1, m + 1, x1), (y0, y1, x0, m)]
    rank[np.concatenate(order)] = np.arange(H * W)
    rank.flags.writeable = False  # cached: shared by every caller
    return rank


def road_impute(image: np.ndarray, mask: np.ndarray, noise: float = 0.01, rng=None) -> np.ndarray:
    """float64 [H, W, 3] on the 0..255 scale: uint8 `image` with the pixels of `mask` (bool [H, W]) replaced by
    ROAD's noisy linear imputation (module doc); noise σ in [0, 1] pixel units, drawn from `rng`."""
    from scipy.sparse.linalg import splu

    out = image.astype(np.float64)
    if not mask.any():
        return out
    A, b, idx = road_system(mask, image.astype(np.float64) / 255.0)
    x = np.zeros(b.shape)  # with no pixel kept nothing anchors the system (it is singular): its solution 0 stands
    if not mask.all():
        # −A is symmetric positive definite, so LU needs no pivoting and keeps the grid's nested-dissection order:
        # half the time of SuperLU's own COLAMD ordering on blocky and scattered masks alike (a minimum-degree
        # ordering is faster on blocky masks but takes minutes on scattered ones)
        p = np.argsort(dissection_rank(*mask.shape)[idx], kind="stable")
        lu = splu(A[p][:, p].tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        x[p] = lu.solve(b[p])
    if noise:
        x = x + noise * (rng or np.random.default_rng()).standard_normal(x.shape)
    flat = out.reshape(-1, 3)
    flat[idx] = 255.0 * x
    return out


class PatchSamplerFill(Fill):
    """sampler: an open PatchSampler (its K is the tile size: pass the explanation's K); draws: in-fills per tile
    (≥ 1; the benchmark uses 4); seed: the tiles' streams."""

    name = "patchsampler"

    def __init__(self, sampler, draws: int = 4, seed: int = 0):
        from .. import params

        params.check("fill_draws", draws)
        self.sampler, self.draws, self.seed = sampler, draws, seed
        self._last = (None, None)  # every map of a photo is scored on the same in-fills: drawn once per image

    def replacements(self, image):
        key = hashlib.sha1(image.tobytes()).digest() + bytes(str(image.shape), "ascii")
        if self._last[0] != key:
            self._last = (key, self._draw(image))
        return self._last[1]

    def _draw(self, image):
        from ..methods import patch_grid
        from ..samplers.rng import streams

        K = self.sampler.K
        ys, xs = patch_grid(*image.shape[:2], K, K)
        tiles = self.sampler.sample(image, ys, xs, self.draws, streams(self.seed, np.arange(len(ys))))
        out = np.repeat(image[None], self.draws, axis=0)
        for y, x, t in zip(ys, xs, tiles):
            out[:, y:y + K, x:x + K] = t
        return out

    def describe(self):
        return {**super().describe(), "K": self.sampler.K, **{k: v for k, v in self.sampler.describe().items()
                                                              if k in ("model", "sha256")}}


FILLS: dict[str, type[Fill]] = {"blur": Blur, "black": Black, "mean": DatasetMean, "road": Road,
                                "patchsampler": PatchSamplerFill}


def make_fill(name: str, classifier=None, K: int = 8, sampler=None, sampler_model: str | None = None,
              draws: int = 4, seed: int = 0) -> Fill:
    """The fill `name` (a FILLS key) for images explained by `classifier` (its preprocessing sets `mean`).
    patchsampler: `sampler` (an open PatchSampler) or one opened for K from `sampler_model` (default: the shipped
    one for K), `draws` in-fills per tile; road: its noise seeded by `seed`."""
    if params.check("fill", name) == "mean":
        return DatasetMean(dataset_mean(classifier.pre) if classifier is not None else (0, 0, 0))
    if name == "road":
        return Road(seed=seed)
    if name == "patchsampler":
        if sampler is None:
            from ..samplers import load_sampler

            sampler = load_sampler("patchsampler", K=K, model=sampler_model,
                                   device=getattr(classifier, "placement", "cpu"))
        return PatchSamplerFill(sampler, draws, seed)
    return FILLS[name]()
