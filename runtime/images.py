"""Image files → uint8 RGB arrays, and the resize/crop into a classifier's input space (OpenCV)."""
from __future__ import annotations

import contextlib
import os
import sys

import cv2
import numpy as np

from .errors import InfolensError
from .params import MAX_PIXELS, PARAMS, check

RESIZE_MODES = PARAMS["resize"].choices
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "nearest": cv2.INTER_NEAREST, "lanczos": cv2.INTER_LANCZOS4}


WHITE = (255, 255, 255)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")  # what a folder's images end in
_MULTI_FRAME = (b"GIF8", b"II*\x00", b"MM\x00*")  # GIF, TIFF (little/big endian): files that can hold several images


def quiet_decoders(stderr: bool = False) -> None:
    """The image decoders say nothing: besides failing, OpenCV logs a WARN or ERROR line per broken file (libtiff's
    errors among them) and libpng writes its warnings straight to the process's stderr, which would break the
    CLI's one line per bad file — and that line says it better.  `stderr`: also send what the decoders write to
    file descriptor 2 to /dev/null while they decode (a process-wide switch for a single-threaded command line; a
    server, whose other threads log, leaves it off).  (OpenCV 5 has the log level in cv2.utils.logging, OpenCV 4
    as cv2.setLogLevel.)"""
    global _DECODER_STDERR
    logging = getattr(cv2.utils, "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)  # LOG_LEVEL_SILENT
    _DECODER_STDERR = not stderr


_DECODER_STDERR = True  # whether the decoders may write to file descriptor 2 (quiet_decoders)


@contextlib.contextmanager
def _decoding():
    """While the decoders run: file descriptor 2 to /dev/null unless they may write to it."""
    if _DECODER_STDERR:
        yield
        return
    sys.stderr.flush()
    saved, sink = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(sink)


def read_image(path: str | os.PathLike, background=WHITE, frame: int = 0, notes: list | None = None,
               max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to uint8 RGB [H, W, 3], saying in `notes` (a list, appended to) what was changed.

    Grey images become RGB; a JPEG's EXIF orientation is applied (as viewers show it); transparency is composited
    on `background` (R, G, B 0..255, default white) with a note when any pixel is not opaque; 16-bit images are
    rounded to 8 bits (v / 257) with a note; of a multi-frame file (animated GIF, multi-page TIFF) frame `frame`
    (0-based) is used, with a note naming it.  A JPEG counts as complete when its end-of-image marker follows the
    image data, even if more data follows (phone "motion photos" append a video).

    `max_pixels`: the image's pixels (width × height, per frame) at most, read from the header before decoding
    (PNG, JPEG, GIF, BMP, WebP, TIFF; other formats are checked once decoded); None: no limit.  Only the frame
    asked for is decoded.

    Raises InfolensError (one line) for a missing, empty, truncated or undecodable file, a frame it lacks, or an
    image over `max_pixels` (naming `max_pixels`).
    """
    path = os.fspath(path)
    notes = [] if notes is None else notes
    background = rgb_value(background, "background")
    check("frame", frame)
    if not os.path.exists(path):
        raise InfolensError(f"image not found: {path}")
    if os.path.isdir(path):
        raise InfolensError(f"not an image file but a directory: {path}")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise InfolensError(f"image file is empty (0 bytes): {path}")
    if max_pixels is not None:
        check_pixels(image_size(data), check("max_pixels", max_pixels), path)
    buf = np.frombuffer(data, np.uint8)
    with _decoding():
        raw, count = _decode(buf, data, path, frame)
    if raw is None:
        if data[:4] == b"GIF8":  # OpenCV reads GIF from 4.12 on
            raise InfolensError(f"cannot decode GIF {path}: this OpenCV ({cv2.__version__}) has no GIF reader "
                                f"(4.12 or newer has); convert it to PNG")
        raise InfolensError(f"cannot decode image (not an image, or truncated): {path}")
    if frame and count <= 1:
        raise InfolensError(f"{path} has 1 frame: there is no frame {frame} (0-based)", "frame")
    if max_pixels is not None:  # a format whose header image_size does not read
        check_pixels(raw.shape[1::-1], max_pixels, path)
    if count > 1:
        notes.append(f"{count} frames (animated or multi-page): frame {frame} is explained")
    return _to_rgb8(raw, background, notes)


def _decode(buf: np.ndarray, data: bytes, path: str, frame: int):
    """The frame `frame` of the file's bytes, as OpenCV decodes it (None: it cannot), and the file's frame count."""
    count = 1
    if data[:2] == b"\xff\xd8":
        if not _jpeg_complete(data):
            # libjpeg decodes a cut-off JPEG with a grey tail and only warns; refuse it instead of explaining garbage.
            raise InfolensError(f"image is truncated (JPEG end marker missing): {path}")
        raw = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # applies the EXIF orientation, converts CMYK and grey
    elif data[:4] in _MULTI_FRAME:
        count = cv2.imcount(path)  # from the file's structure: only the frame asked for is decoded
        if frame >= count > 0:
            raise InfolensError(f"{path} has {count} frame{'s' if count > 1 else ''}: there is no frame {frame} "
                                "(0-based)", "frame")
        ok, frames = cv2.imdecodemulti(buf, cv2.IMREAD_UNCHANGED, None, (frame, frame + 1))
        raw = frames[0] if ok and frames else None
    else:
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return raw, count


def check_pixels(size: tuple[int, int] | None, max_pixels: int, where: str) -> None:
    """InfolensError naming `max_pixels` when an image of `size` (width, height; None: unknown) is over it."""
    if size is not None and size[0] * size[1] > max_pixels:
        raise InfolensError(f"image of {size[0]}x{size[1]} pixels is over the limit of {max_pixels:,} pixels: "
                            f"{where}", "max_pixels")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image file's header, without decoding it (a server checks its pixel limit before
    any decoder allocates): PNG, JPEG, GIF, BMP, WebP and TIFF; None when the header says nothing we read."""
    import struct

    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if kind == b"VP8L":
                b = int.from_bytes(data[21:25], "little")
                return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
            if kind == b"VP8X":
                return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        if data[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    return None
                marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
                if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + length
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            e = "<" if data[:2] == b"II" else ">"
            (off,) = struct.unpack(e + "I", data[4:8])
            (n,) = struct.unpack(e + "H", data[off:off + 2])
            dims = {}
            for k in range(n):
                tag, typ, _, value = struct.unpack(e + "HHI4s", data[off + 2 + 12 * k:off + 14 + 12 * k])
                if tag in (256, 257):
                    dims[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), value[:2 if typ == 3 else 4])[0]
            if len(dims) == 2:
                return dims[256], dims[257]
    except (struct.error, IndexError, ValueError):
        return None
    return None


def rgb_value(v, param: str) -> tuple[int, int, int]:
    """One value or R, G, B, integers in 0..255 → (R, G, B); InfolensError naming `param` otherwise."""
    vals = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
    if len(vals) == 1:
        vals *= 3
    if len(vals) != 3 or any(not float(x).is_integer() or not 0 <= float(x) <= 255 for x in vals):
        raise InfolensError(f"{param} must be one value or R,G,B, integers in 0..255, got {v!r}", param)
    return tuple(int(x) for x in vals)


def _to_rgb8(raw: np.ndarray, background, notes: list) -> np.ndarray:
    if raw.dtype == np.uint16:
        raw = np.round(raw / 257.0).astype(np.uint8)
        notes.append("16-bit image: rounded to 8 bits per channel")
    elif raw.dtype != np.uint8:
        raise InfolensError(f"{raw.dtype} images are not supported (8- or 16-bit integer images only)")
    if raw.ndim == 2:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    if raw.shape[2] == 4:
        alpha = raw[:, :, 3:].astype(np.float64) / 255
        raw = raw[:, :, :3]
        if (alpha < 1).any():
            bg = np.asarray(background, np.float64)[::-1]
            raw = np.round(raw * alpha + bg * (1 - alpha)).astype(np.uint8)
            see_through = (alpha < 1).mean()
            notes.append(f"transparent pixels ({see_through:.0%} not opaque) composited on background "
                         f"{','.join(str(int(v)) for v in background)}")
    return np.ascontiguousarray(raw[:, :, ::-1])


def _jpeg_complete(data: bytes) -> bool:
    """Whether the JPEG's end-of-image marker follows its image data: the segments before the first scan are walked
    by their lengths (an EXIF thumbnail carries its own markers), then FF D9 is searched after it — inside coded data
    an FF byte is always followed by 00 or a restart marker, so FF D9 there is the end of the image."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", i + 2) >= 0
        if marker == 0xD9:
            return True
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return False


def to_input_space(image: np.ndarray, size: tuple[int, int], resize: str, interpolation: str = "auto",
                   pad_value=(0, 0, 0), crop_fraction: float = 1.0) -> np.ndarray:
    """Resize/crop a uint8 RGB [h, w, 3] image to the classifier's input size (H, W).

    resize: "shorter-side-crop" scales so the image covers (H, W) / crop_fraction, then takes the centre H×W (a
    crop_fraction of 0.875 is the common "resize 256, crop 224"); "stretch" resizes to H×W ignoring aspect;
    "letterbox" scales so the whole image fits in H×W and pads the rest, centred, with pad_value (RGB 0..255);
    "none" requires the image to have that size already.
    interpolation: one of INTERPOLATIONS (OpenCV's), or "auto": area when shrinking, linear when enlarging.
    """
    H, W = size
    h, w = image.shape[:2]
    if (h, w) == (H, W):
        return image
    if resize == "none":
        raise InfolensError(f"image is {h}x{w} but the model takes {H}x{W} and resize is 'none'", "resize")
    if resize == "stretch":
        return _resize(image, W, H, interpolation)
    if resize == "letterbox":
        s = min(H / h, W / w)
        nh, nw = min(H, max(1, round(h * s))), min(W, max(1, round(w * s)))
        y0, x0 = (H - nh) // 2, (W - nw) // 2
        out = np.empty((H, W, 3), np.uint8)
        out[:] = np.asarray(pad_value, np.uint8)
        out[y0:y0 + nh, x0:x0 + nw] = _resize(image, nw, nh, interpolation)
        return out
    s = max(H / h, W / w) / crop_fraction
    nh, nw = max(H, round(h * s)), max(W, round(w * s))
    scaled = _resize(image, nw, nh, interpolation)
    y0, x0 = (nh - H) // 2, (nw - W) // 2
    return np.ascontiguousarray(scaled[y0:y0 + H, x0:x0 + W])


def _resize(image: np.ndarray, w: int, h: int, interpolation: str) -> np.ndarray:
    if (h, w) == image.shape[:2]:
        return image
    if interpolation == "auto":
        interpolation = "area" if w * h < image.shape[0] * image.shape[1] else "linear"
    return cv2.resize(image, (w, h), interpolation=INTERPOLATIONS[interpolation])
