"""Training/held-out images and 3K×3K context windows for the patch samplers (numpy + OpenCV only).

A window is what the runtime cuts around a K×K patch at (y, x): rows y..y+3K and columns
x..x+3K of the image zero-padded by K (uint8 [3K, 3K, C]); the patch itself is the centre K×K.
The conditional-Gaussian fit reuses this module, so it must not import torch.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from infolens.errors import InfolensError
from infolens.images import read_image

# Natural photographs shipped with scikit-image. The four colour photos are all there is; the
# grey ones add natural fine-scale texture they lack (brick wall, grass, gravel, the cameraman
# scene) and enter as R=G=B — still a valid natural image, grey photos occur in ImageNet too —
# so the sampler learns spatial structure from twice the data at a mild cost in colour statistics.
# Excluded: synthetic (color, chessboard, logo, phantom, horse silhouette), microscopy/medical
# (cell, ihc, retina, microaneurysms), astronomy (hubble_deep_field, moon), text (page, text),
# artificially motion-blurred (clock_motion); coins is left out to keep colour and grey windows
# at one half each.
BUILTIN_TRAIN = [
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",  # stereo pair with motorcycle_left: both stay on the training side
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
]
# chelsea is the demo image, so it must never be trained on; coffee is the other colour photo
# kept out. Held-out NLL is thus measured on colour photos only, the case the sampler is for.
BUILTIN_HELDOUT = ["chelsea.png", "coffee.png"]


def builtin_dir() -> str:
    """Folder of scikit-image's bundled sample images (imported lazily: only the builtin sources need it)."""
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data")


def load_images(source: str) -> list[tuple[str, np.ndarray]]:
    """Load images as (name, uint8 RGB [H, W, 3]) pairs.

    source: "builtin" (BUILTIN_TRAIN), "builtin-heldout" (BUILTIN_HELDOUT), or a folder, read
    recursively in sorted path order; names are then paths relative to the folder, and files
    OpenCV cannot decode are skipped. Raises ValueError when nothing could be loaded.
    """
    if source in ("builtin", "builtin-heldout"):
        folder = builtin_dir()
        names = BUILTIN_TRAIN if source == "builtin" else BUILTIN_HELDOUT
        paths = [(name, os.path.join(folder, name)) for name in names]
    elif os.path.isdir(source):
        paths = []
        for root, _, files in os.walk(source):
            for file in files:
                path = os.path.join(root, file)
                paths.append((os.path.relpath(path, source), path))
        paths.sort()
    else:
        raise ValueError(f"image source is neither 'builtin', 'builtin-heldout' nor a folder: {source!r}")
    images = []
    for name, path in paths:
        try:
            images.append((name, read_image(path)))
        except InfolensError:  # a folder may hold other files: skip what is not an image
            continue
    if not images:
        raise ValueError(f"no decodable images found in {source!r}")
    return images


def _window(image: np.ndarray, y: int, x: int, K: int) -> np.ndarray:
    """padded[y:y+3K, x:x+3K] of the image zero-padded by K (infolens.samplers.pad), without padding it all."""
    H, W, C = image.shape
    out = np.zeros((3 * K, 3 * K, C), np.uint8)
    y0, y1 = max(y - K, 0), min(y + 2 * K, H)
    x0, x1 = max(x - K, 0), min(x + 2 * K, W)
    out[y0 - (y - K) : y1 - (y - K), x0 - (x - K) : x1 - (x - K)] = image[y0:y1, x0:x1]
    return out


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize by `scale` (area averaging when shrinking, so no aliasing; bilinear when enlarging)."""
    H, W = image.shape[:2]
    size = (max(1, round(W * scale)), max(1, round(H * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def random_windows(
    images: list[np.ndarray] | list[tuple[str, np.ndarray]],
    K: int,
    n: int,
    rng: np.random.Generator,
    augment: bool = True,
) -> np.ndarray:
    """Draw n context windows, uint8 [n, 3K, 3K, C].

    Each window picks an image uniformly, then a patch position (y, x) uniformly over the valid
    positions 0..H-K × 0..W-K, and cuts it from the zero-padded image exactly as the runtime
    does, so windows near an edge contain the zero border. With augment: rescale by 0.5–1.5
    (one factor per image per call, before choosing positions), mild colour jitter on the image
    pixels only (the border stays 0), then a random flip / 90° rotation of the window — equal to
    the window of the flipped image at the mirrored position, because the padding is symmetric.
    Images may be arrays or (name, array) pairs as returned by load_images; ValueError if one is
    smaller than K×K.
    """
    arrays = [im[1] if isinstance(im, tuple) else im for im in images]
    if any(min(a.shape[:2]) < K for a in arrays):
        raise ValueError(f"every image must be at least K={K} pixels high and wide")
    C = arrays[0].shape[2]
    out = np.empty((n, 3 * K, 3 * K, C), np.uint8)
    picks = rng.integers(len(arrays), size=n)
    # One rescale per image per call, not per window: resizing whole photos dominates otherwise.
    for index in np.unique(picks):
        image = arrays[index]
        if augment:
            scale = rng.uniform(0.5, 1.5)
            if min(image.shape[:2]) * scale >= K:
                image = _rescale(image, scale)
        H, W = image.shape[:2]
        for i in np.flatnonzero(picks == index):
            y, x = int(rng.integers(H - K + 1)), int(rng.integers(W - K + 1))
            window = _window(image, y, x, K)
            if augment:
                window = _jitter(window, y, x, K, H, W, rng)
                if rng.random() < 0.5:
                    window = window[:, ::-1]
                window = np.rot90(window, int(rng.integers(4)))
            out[i] = window
    return out


def _jitter(window: np.ndarray, y: int, x: int, K: int, H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """Mild colour jitter (global gain ±10 %, per-channel gain ±5 %, offset ±8) inside the image part only."""
    gain = rng.uniform(0.9, 1.1) * rng.uniform(0.95, 1.05, size=window.shape[2])
    offset = rng.uniform(-8, 8)
    y0, y1 = max(K - y, 0), min(H - y + K, 3 * K)
    x0, x1 = max(K - x, 0), min(W - x + K, 3 * K)
    inside = window[y0:y1, x0:x1].astype(np.float32) * gain + offset
    window[y0:y1, x0:x1] = np.clip(np.rint(inside), 0, 255).astype(np.uint8)
    return window
