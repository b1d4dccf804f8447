"""Colour maps and overlays with a colour bar in the map's unit (OpenCV)."""
from __future__ import annotations

import cv2
import numpy as np

from .errors import InfolensError

_BAR_W, _PAD = 16, 6


def diverging_lut() -> np.ndarray:
    """uint8 [256, 1, 3] BGR: blue (opposes) → white (0) → red (supports), for cv2.applyColorMap."""
    t = np.linspace(-1, 1, 256)
    blue, red, white = np.array([180, 60, 30]), np.array([40, 40, 200]), np.array([250, 250, 250])
    rows = [white + (red - white) * v if v > 0 else white + (blue - white) * -v for v in t]
    return np.clip(np.rint(rows), 0, 255).astype(np.uint8)[:, None, :]


def colorize(values: np.ndarray, kind: str) -> tuple[np.ndarray, float, float]:
    """float [H, W] map → (BGR uint8 [H, W, 3], vmin, vmax).

    diverging: symmetric about 0 (vmax = max |value|); sequential: 0..max (inferno).
    """
    if kind == "diverging":
        vmax = float(np.abs(values).max()) or 1e-12
        vmin = -vmax
    else:
        vmin, vmax = min(0.0, float(values.min())), float(values.max()) or 1e-12
    u8 = np.clip(np.rint((values - vmin) / (vmax - vmin) * 255), 0, 255).astype(np.uint8)
    if kind == "diverging":
        return cv2.applyColorMap(u8, diverging_lut()), vmin, vmax
    return cv2.applyColorMap(u8, cv2.COLORMAP_INFERNO), vmin, vmax


def overlay(image: np.ndarray, values: np.ndarray, kind: str, title: str, unit: str = "bits", alpha: float = 0.65,
            min_side: int = 448, hide: np.ndarray | None = None) -> np.ndarray:
    """The map blended over a grey copy of the RGB image, upscaled to at least `min_side`, with a titled colour bar.
    `hide` bool [H, W]: pixels shown as the grey image alone (e.g. values within two standard errors of 0).

    Returns BGR uint8 (ready for cv2.imwrite).
    """
    colour, vmin, vmax = colorize(values, kind)
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2BGR)
    blend = cv2.addWeighted(colour, alpha, grey, 1 - alpha, 0)
    if hide is not None:
        blend[hide] = grey[hide]
    f = max(1, -(-min_side // min(image.shape[:2])))
    blend = cv2.resize(blend, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    h, w = blend.shape[:2]
    ramp = np.linspace(255, 0, h - 2 * _PAD).astype(np.uint8)[:, None].repeat(_BAR_W, 1)
    bar = cv2.applyColorMap(ramp, diverging_lut() if kind == "diverging" else cv2.COLORMAP_INFERNO)
    panel = np.full((h + 30, w + _BAR_W + 90, 3), 255, np.uint8)
    panel[30:30 + h, :w] = blend
    x0 = w + 10
    panel[30 + _PAD:30 + h - _PAD, x0:x0 + _BAR_W] = bar
    font = cv2.FONT_HERSHEY_SIMPLEX
    ticks = [vmax, 0.0, vmin] if kind == "diverging" else [vmax, (vmax + vmin) / 2, vmin]
    for i, v in enumerate(ticks):
        y = 30 + _PAD + int(i * (h - 2 * _PAD - 1) / 2)
        cv2.putText(panel, f"{v:+.3g}", (x0 + _BAR_W + 4, y + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    label = {"probability": "prob.", "activation²": "act.²"}.get(unit, unit)
    cv2.putText(panel, label, (x0, 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(panel, title[:70], (4, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def encode_png(bgr: np.ndarray) -> bytes:
    """BGR uint8 [H, W, 3] → PNG file bytes."""
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise InfolensError("cannot encode the overlay as PNG")
    return buf.tobytes()
