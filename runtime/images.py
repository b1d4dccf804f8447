"""Image files → uint8 RGB arrays, and the resize/crop into a classifier's input space (OpenCV)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import InfolensError

RESIZE_MODES = ("shorter-side-crop", "stretch", "none")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to uint8 RGB [H, W, 3]; grey and alpha images are converted.

    Raises InfolensError (one line) for a missing, empty, truncated or undecodable file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InfolensError(f"image not found: {path}")
    if os.path.isdir(path):
        raise InfolensError(f"not an image file but a directory: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise InfolensError(f"image file is empty (0 bytes): {path}")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        # libjpeg decodes a cut-off JPEG with a grey tail and only warns; refuse it instead of explaining garbage.
        raise InfolensError(f"image is truncated (JPEG end marker missing): {path}")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InfolensError(f"cannot decode image (not an image, or truncated): {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def to_input_space(image: np.ndarray, size: tuple[int, int], resize: str) -> np.ndarray:
    """Resize/crop a uint8 RGB [h, w, 3] image to the classifier's input size (H, W).

    resize: "shorter-side-crop" scales so the image covers H×W, then centre-crops; "stretch" resizes to H×W
    ignoring aspect; "none" requires the image to have that size already.
    """
    H, W = size
    h, w = image.shape[:2]
    if (h, w) == (H, W):
        return image
    if resize == "none":
        raise InfolensError(f"image is {h}x{w} but the model takes {H}x{W} and resize is 'none'", "resize")
    if resize == "stretch":
        return _resize(image, W, H)
    if resize != "shorter-side-crop":
        raise InfolensError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}", "resize")
    s = max(H / h, W / w)
    nh, nw = max(H, round(h * s)), max(W, round(w * s))
    scaled = _resize(image, nw, nh)
    y0, x0 = (nh - H) // 2, (nw - W) // 2
    return np.ascontiguousarray(scaled[y0:y0 + H, x0:x0 + W])


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    shrinking = w * h < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
