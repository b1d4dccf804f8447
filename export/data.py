"""Photos for the patch samplers, brought to a classifier's input space, and their 3K×3K context windows
(numpy + OpenCV only: the conditional-Gaussian fit reuses this module, so it must not import torch).

A window is what the runtime cuts around a K×K patch at (y, x): rows y..y+3K and columns x..x+3K of the image
zero-padded by K (uint8 [3K, 3K, C]); the patch itself is the centre K×K.

Photo sets are folders (`--data DIR`, repeatable), read recursively. Each photo is named `<folder name>/<path in
the folder>` and goes to the validation side when the SHA-1 of that name is 0 mod 10 (`split`): a split by photo
that never changes when photos are added, and that any other tool can recompute from the names alone.
"""
from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np

from infolens.errors import InfolensError
from infolens.images import IMAGE_SUFFIXES, read_image, to_input_space

VALIDATION_MODULUS = 10  # one photo in ten, by name hash, is held out
# Shorter side of the training photos: the input space (224) and up to twice it, never enlarged beyond the
# photo's own size, so every scale holds real detail rather than interpolation.
TRAIN_SIDES = (224, 288, 352, 448)
INPUT_SIZE = (224, 224)


def load_photos(folders: list[str]) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 RGB [H, W, 3]) for every decodable photo under the folders, in sorted name order.

    Files with other extensions (labels, licences) are not opened; ValueError when a folder is missing or
    holds no photo.
    """
    photos = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise ValueError(f"photo folder not found: {folder!r} (--data)")
        tag = os.path.basename(os.path.normpath(folder))
        found = 0
        for root, _, files in os.walk(folder):
            for file in files:
                if not file.lower().endswith(IMAGE_SUFFIXES):
                    continue
                path = os.path.join(root, file)
                try:
                    image = read_image(path)
                except InfolensError:  # a corrupt file is skipped, not fatal: the card records the count
                    continue
                photos.append((f"{tag}/{os.path.relpath(path, folder)}", image))
                found += 1
        if not found:
            raise ValueError(f"no photos ({', '.join(IMAGE_SUFFIXES)}) found in {folder!r} (--data)")
    photos.sort(key=lambda item: item[0])
    return photos


def is_validation(name: str) -> bool:
    """True for the photos held out of training: SHA-1 of the photo's name ≡ 0 (mod 10)."""
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % VALIDATION_MODULUS == 0


def split(photos: list[tuple[str, np.ndarray]]) -> tuple[list, list]:
    """(training, validation) photos, by `is_validation` of each name."""
    return [p for p in photos if not is_validation(p[0])], [p for p in photos if is_validation(p[0])]


def rescale(image: np.ndarray, side: int) -> np.ndarray:
    """Resize so the shorter side is `side` (area averaging when shrinking, so no aliasing)."""
    h, w = image.shape[:2]
    s = side / min(h, w)
    size = (max(side, round(w * s)), max(side, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def training_scales(photos: list[tuple[str, np.ndarray]], sides=TRAIN_SIDES) -> list[np.ndarray]:
    """Each photo at every shorter side in `sides` that does not enlarge it (at least the smallest side)."""
    out = []
    for _, image in photos:
        short = min(image.shape[:2])
        for side in sorted({s for s in sides if s <= short} or {sides[0]}):
            out.append(rescale(image, side))
    return out


def window(image: np.ndarray, y: int, x: int, K: int) -> np.ndarray:
    """padded[y:y+3K, x:x+3K] of the image zero-padded by K (infolens.samplers.pad), without padding it all."""
    H, W, C = image.shape
    out = np.zeros((3 * K, 3 * K, C), np.uint8)
    y0, y1 = max(y - K, 0), min(y + 2 * K, H)
    x0, x1 = max(x - K, 0), min(x + 2 * K, W)
    out[y0 - (y - K) : y1 - (y - K), x0 - (x - K) : x1 - (x - K)] = image[y0:y1, x0:x1]
    return out


def random_windows(images: list[np.ndarray], K: int, n: int, rng: np.random.Generator,
                   flip: bool = True) -> np.ndarray:
    """n training windows, uint8 [n, 3K, 3K, C]: an image uniformly, then a patch position uniformly over all
    0..H−K × 0..W−K (so windows at the border hold the zero padding, as at inference), then a horizontal flip
    with probability 1/2 when `flip` (the padding is symmetric, so a flipped window is the flipped image's)."""
    out = np.empty((n, 3 * K, 3 * K, images[0].shape[2]), np.uint8)
    for i, index in enumerate(rng.integers(len(images), size=n)):
        image = images[index]
        H, W = image.shape[:2]
        w = window(image, int(rng.integers(H - K + 1)), int(rng.integers(W - K + 1)), K)
        out[i] = w[:, ::-1] if flip and rng.random() < 0.5 else w
    return out


def input_space(photos: list[tuple[str, np.ndarray]], size=INPUT_SIZE) -> list[tuple[str, np.ndarray]]:
    """The photos as a classifier sees them: shorter side to 224, centre crop (infolens.images.to_input_space)."""
    return [(name, to_input_space(image, size, "shorter-side-crop")) for name, image in photos]


def heldout_windows(photos: list[tuple[str, np.ndarray]], K: int, per_photo: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scoring windows: per_photo windows of every photo, each at a patch position drawn uniformly over all of
    them (0..H−K)², unflipped. Returns windows uint8 [n, 3K, 3K, 3] and the photo index of each, int64 [n].

    The draw depends only on (seed, photo order, image sizes), so every model of a given K is scored on the
    same windows.
    """
    rng = np.random.default_rng(seed)
    out, owner = [], []
    for index, (_, image) in enumerate(photos):
        H, W = image.shape[:2]
        ys, xs = rng.integers(H - K + 1, size=per_photo), rng.integers(W - K + 1, size=per_photo)
        out += [window(image, int(y), int(x), K) for y, x in zip(ys, xs)]
        owner += [index] * per_photo
    return np.stack(out), np.array(owner, np.int64)
