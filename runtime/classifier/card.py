"""The model card (DESIGN §2) and the preprocessing it declares: how a uint8 RGB image becomes the model's tensor."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from .. import params
from ..errors import InfolensError
from ..images import read_image, rgb_value, to_input_space

_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}
FIELDS = ("layout", "size", "channel_order", "scale", "mean", "std", "dtype", "resize", "interpolation", "pad_value",
          "crop_fraction", "grayscale")  # the preprocessing a card's "input" (or a user) gives; channels is the model's


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 RGB image becomes the model tensor, one value (like timm's pretrained config).

    The image reaches `size` (H, W pixels) by `resize` (one of images.RESIZE_MODES, with `interpolation`, `pad_value`
    for letterbox, `crop_fraction` for shorter-side-crop); then each pixel v = (pixel[channel_order] * scale − mean)
    / std per model channel, in `layout` "NCHW" | "NHWC" and `dtype` "float32" | "uint8" (a uint8 model takes the
    pixels as they are).  A single-channel model (`channels` 1) takes the grey level Y = ⌊luma(R, G, B) + 0.5⌋ by
    the `grayscale` formula (graphs.LUMA: "bt601" as OpenCV, "pil", "bt709", "average"), then (Y * scale − mean) /
    std.

    A field left None is filled in by `resolve` from the model's input (layout from its shape, size from its static
    dimensions, dtype from its element type, channels from its shape) or from the defaults (scale 1, mean 0, std 1,
    RGB, shorter-side-crop, auto interpolation).  A value the model or the resize mode cannot use (mean on a uint8
    input, pad_value without letterbox, …) is an InfolensError naming it, never silently ignored.
    """

    layout: str | None = None
    size: tuple[int, int] | None = None
    channel_order: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | float | None = None
    std: tuple[float, ...] | float | None = None
    dtype: str | None = None
    resize: str | None = None
    interpolation: str | None = None
    pad_value: tuple[int, int, int] | int | None = None
    crop_fraction: float | None = None
    channels: int | None = None
    grayscale: str | None = None

    @classmethod
    def from_card(cls, card: dict, **overrides) -> "Preprocessing":
        """From a model card's "input" object; `overrides` that are not None win (the CLI's flags)."""
        values = {k: card.get(k) for k in FIELDS}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **overrides) -> "Preprocessing":
        """A copy with the `overrides` that are not None."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def resolve(self, inp) -> "Preprocessing":
        """Every field decided for the model input `inp` (an onnxruntime NodeArg: name, shape, type), or an
        InfolensError naming the field to give."""
        shape = inp.shape
        if len(shape) != 4:
            raise InfolensError(f"model input {inp.name!r} has rank {len(shape)} {shape}; an image classifier takes "
                                f"[batch, C, H, W] or [batch, H, W, C] with C = 3 or 1")
        layout = self.layout
        if layout is None:
            first, last = shape[1] in (1, 3), shape[3] in (1, 3)
            if first == last:
                raise InfolensError(f"cannot infer the layout from input shape {shape}: give it (NCHW or NHWC)",
                                    "layout")
            layout = "NCHW" if first else "NHWC"
        layout = params.check("layout", str(layout).upper())
        c_dim, hw = (shape[1], shape[2:4]) if layout == "NCHW" else (shape[3], shape[1:3])
        if isinstance(c_dim, int) and c_dim not in (1, 3):
            raise InfolensError(f"model input {inp.name!r} has {c_dim} channels in layout {layout}; infolens explains "
                                f"3-channel colour and 1-channel grey models (wrong layout?)", "layout")
        channels = 1 if c_dim == 1 else 3
        size = self.size
        if size is None:
            if not all(isinstance(d, int) for d in hw):
                raise InfolensError(f"input shape {shape} has no fixed height/width: give the size H,W", "size")
            size = hw
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise InfolensError(f"bad input size {list(size)}: expected H,W", "size")
        dtype = self.dtype
        if dtype is None:
            if inp.type not in _DTYPES:
                raise InfolensError(f"model input type {inp.type} is not supported (float32 or uint8 inputs only)",
                                    "model")
            dtype = _DTYPES[inp.type]
        if dtype == "uint8":  # raw pixels: a normalization given for it would be silently ignored
            for name, value, identity in (("scale", self.scale, 1.0), ("mean", self.mean, 0.0),
                                          ("std", self.std, 1.0)):
                if value is not None and any(v != identity for v in values(value)):
                    raise InfolensError(f"model input {inp.name!r} is uint8 (raw pixels, normalized inside the graph "
                                        f"if at all): a {name} cannot apply; remove it", name)
        grayscale, channel_order = self.grayscale, self.channel_order
        if channels == 1:
            if channel_order is not None and str(channel_order).upper() != "RGB":
                raise InfolensError(f"model input {inp.name!r} has one channel (grey): a channel order cannot apply; "
                                    f"remove it (grayscale chooses how RGB becomes grey)", "channel_order")
            grayscale = params.check("grayscale", grayscale or "bt601")
        elif grayscale is not None:
            raise InfolensError(f"grayscale applies to single-channel models; model input {inp.name!r} has 3 "
                                f"channels", "grayscale")
        channel_order = params.check("channel_order", str(channel_order or "RGB").upper())
        mean = values(0.0 if self.mean is None else self.mean, channels, "mean")
        std = values(1.0 if self.std is None else self.std, channels, "std")
        if min(abs(s) for s in std) == 0:
            raise InfolensError("std must not be 0", "std")
        resize = params.check("resize", self.resize or "shorter-side-crop")
        for name, value, unused, mode in (("pad_value", self.pad_value, None, "letterbox"),
                                          ("crop_fraction", self.crop_fraction, 1.0, "shorter-side-crop")):
            if value is not None and value != unused and resize != mode:
                raise InfolensError(f"{name} applies to resize {mode}, not {resize}", name)
        if resize == "none" and self.interpolation not in (None, "auto"):
            raise InfolensError("interpolation does not apply with resize none (images must have the input size)",
                                "interpolation")
        interpolation = params.check("interpolation", self.interpolation or "auto")
        crop_fraction = params.check("crop_fraction", float(1.0 if self.crop_fraction is None else self.crop_fraction))
        # what does not apply stays None, so that a resolved value resolves to itself (a twin, a rebuilt model)
        pad = rgb_value(0 if self.pad_value is None else self.pad_value, "pad_value") if resize == "letterbox" else None
        return Preprocessing(layout, size, channel_order, float(1.0 if self.scale is None else self.scale), mean, std,
                             dtype, resize, interpolation, pad, crop_fraction, channels,
                             grayscale if channels == 1 else None)

    def lut(self) -> np.ndarray:
        """[3, 256] table (resolved preprocessing): value of model channel c for pixel value v, in the model input's
        dtype.  A grey model's table is the identity: its graph front (graphs.grey_front) computes the grey level
        and normalizes it."""
        v = np.arange(256, dtype=np.float64)
        if self.dtype == "uint8":
            return np.tile(np.arange(256, dtype=np.uint8), (3, 1))
        if self.channels == 1:
            return np.tile(v.astype(np.float32), (3, 1))
        rows = [(v * self.scale - m) / s for m, s in zip(self.mean, self.std)]
        return np.stack(rows).astype(np.float32)

    def src(self) -> np.ndarray:
        """[3] int64: the RGB channel that feeds each model channel."""
        return np.array(["RGB".index(ch) for ch in self.channel_order], dtype=np.int64)

    def input_space(self, image, notes: list | None = None, max_pixels: int | None = params.MAX_PIXELS) -> np.ndarray:
        """A path or a uint8 RGB [h, w, 3] array → uint8 RGB [H, W, 3] in the model's input space.  `notes` (a list)
        gets a line for each change a user should know of: the file's (images.read_image: transparency, frames,
        16 bits) and an image smaller than the input, which is enlarged.  `max_pixels`: a file's limit
        (images.read_image); an array is already decoded and has none."""
        notes = [] if notes is None else notes
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image, notes=notes, max_pixels=max_pixels)
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InfolensError(f"image array must be uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
        (h, w), (H, W) = image.shape[:2], self.size
        if (h < H or w < W) and self.resize != "none":
            notes.append(f"the image ({h}x{w}) is smaller than the model input ({H}x{W}): enlarged ({self.resize})")
        return to_input_space(image, self.size, self.resize, self.interpolation, self.pad_value, self.crop_fraction)

    def used(self) -> dict:
        """The values this model and resize mode actually use (what an explanation records), JSON-ready."""
        d = asdict(self)
        d["size"] = list(self.size)
        drop = set()
        if self.dtype == "uint8":
            drop |= {"scale", "mean", "std"}
        if self.channels == 1:
            drop.add("channel_order")
        else:
            drop.add("grayscale")
        if self.resize != "letterbox":
            drop.add("pad_value")
        if self.resize != "shorter-side-crop":
            drop.add("crop_fraction")
        if self.resize == "none":
            drop.add("interpolation")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items() if k not in drop}


def read_card(card_path: str) -> dict:
    """The card's JSON object ({} when the file does not exist), or an InfolensError naming --card."""
    if not os.path.exists(card_path):
        return {}
    try:
        with open(card_path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InfolensError(f"cannot read model card {card_path}: {e}", "card") from None


def values(v, n: int | None = None, param: str = "") -> tuple[float, ...]:
    """A number or a list of numbers → a tuple; with n: 1 value repeated to n, or exactly n values."""
    vals = [float(x) for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])]
    if n is None:
        return tuple(vals)
    if len(vals) == 1:
        vals *= n
    if len(vals) != n:
        raise InfolensError(f"{param} needs {'1 value' if n == 1 else f'1 or {n} values'} for this model, got "
                            f"{len(vals)}", param)
    return tuple(vals)
