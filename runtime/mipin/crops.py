"""The photos MIP-IN's inverse is fitted on: every image file under the --data folders, and seeded random-resized
crops of them in the classifier's input space (mipin/fit.py fits on those crops)."""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from ..errors import InfolensError
from ..images import IMAGE_SUFFIXES


def photo_files(folders: list[str]) -> list[str]:
    """Every image file under the folders (recursively), sorted: the same list on every machine."""
    files = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise InfolensError(f"no folder {folder}", "data")
        for root, _, names in os.walk(folder):
            files += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if not files:
        raise InfolensError(f"no image files under {', '.join(folders)}", "data")
    return sorted(files)


def random_crops(classifier, files: list[str], n: int, seed: int = 0, progress: bool = True) -> np.ndarray:
    """n random-resized crops of the photos, in the classifier's input space, uint8 [n, H, W, 3]: a photo drawn at
    random, a crop of 25–100 % of its area with aspect ratio 3:4 to 4:3 (log-uniform), then the classifier's own
    resize.  Seeded: the same crops for the same files, n and seed."""
    from ..images import read_image

    rng = np.random.default_rng(seed)
    out = []
    cache: dict[str, np.ndarray] = {}
    for _ in tqdm(range(n), unit="crop", desc="mipin: crops", disable=not progress, leave=False):
        path = files[rng.integers(len(files))]
        if path not in cache:
            cache = {path: read_image(path)}  # one photo held at a time
        img = cache[path]
        h, w = img.shape[:2]
        area = rng.uniform(0.25, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = min(h, int(round(np.sqrt(area / aspect)))), min(w, int(round(np.sqrt(area * aspect))))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        out.append(classifier.load_image(np.ascontiguousarray(img[y:y + ch, x:x + cw])))
    return np.stack(out)
