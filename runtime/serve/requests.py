"""What a request carries, decoded: a JSON body, a multipart form (an image file and the params as fields), base64
images and KServe instances; every problem is an ApiError naming the request field at fault."""
from __future__ import annotations

import base64
import binascii

import numpy as np
from fastapi import Request

from .. import params


class ApiError(Exception):
    """An HTTP error answered as JSON {"error": message, "field": field} with `status` and optional headers."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.field, self.headers = status, field, headers


async def read_json(request: Request) -> dict:
    """The body as a JSON object."""
    import json

    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(422, f"the body is not JSON: {e}", "body") from None
    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object", "body")
    return body


async def read_form(request: Request) -> tuple:
    """A multipart job: the image as the file field `file` (or `image`), `model`, and the params either as fields of
    their own (K=16, sampler=patchsampler, …; numbers as text) or as one JSON `params` field → (model, image bytes,
    params dict)."""
    import json

    try:
        form = await request.form()
    except Exception as e:  # a malformed multipart body: the parser's own reason, one line
        raise ApiError(422, f"the multipart body cannot be read: {str(e).splitlines()[0]}", "body") from None
    upload = form.get("file", form.get("image"))
    if upload is None or isinstance(upload, str):
        raise ApiError(422, "a multipart job needs the image as a file field: -F file=@photo.jpg", "file")
    data = await upload.read()
    if not data:
        raise ApiError(422, "the file field is empty", "file")
    raw = {}
    if "params" in form:
        try:
            raw = json.loads(form["params"])
        except ValueError as e:
            raise ApiError(422, f"params is not JSON: {e}", "params") from None
    for key, value in form.multi_items():
        if key not in ("file", "image", "model", "params") and isinstance(value, str):
            raw[key] = form_value(key, value)
    return form.get("model"), data, raw


def form_value(key: str, text: str):
    """A form field's text as the type its parameter takes (K=16 → 16); text that is not a number stays text, for
    check_params to name."""
    from .models import FIELDS

    kind = params.PARAMS[FIELDS[key]].kind if key in FIELDS else None
    try:
        return kind(text) if kind in (int, float) else text
    except ValueError:
        return text


def decode_base64(value, where: str) -> bytes:
    """An image file's bytes from base64 (a string or {"b64": …}); `where` is the field the errors name."""
    if isinstance(value, dict) and "b64" in value:
        value = value["b64"]
    if not isinstance(value, str) or not value:
        raise ApiError(422, "image must be the image file's bytes in base64", where)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "image is not valid base64", where) from None


def decode_instance(value, where: str) -> bytes:
    """A KServe instance → image file bytes: base64 (a string or {"b64": …}, possibly under "image"), or an
    [H][W][3] array of 0..255 (encoded as PNG, which decodes to exactly that array)."""
    if isinstance(value, dict) and "image" in value:
        value = value["image"]
    if isinstance(value, list):
        import cv2

        try:
            arr = np.asarray(value)
        except ValueError:
            raise ApiError(422, "an array instance must be [H][W][3] numbers", where) from None
        if arr.ndim != 3 or arr.shape[2] != 3 or not np.issubdtype(arr.dtype, np.number) or arr.size == 0 or \
                arr.min() < 0 or arr.max() > 255 or not np.all(arr == np.round(arr)):
            raise ApiError(422, f"an array instance must be [H][W][3] integers in 0..255, got shape "
                           f"{list(arr.shape)}", where)
        return cv2.imencode(".png", arr.astype(np.uint8)[:, :, ::-1])[1].tobytes()
    return decode_base64(value, where)


def extension(data: bytes) -> str:
    """The file extension an image's bytes call for, from their magic number (".img" when unknown)."""
    for magic, ext in ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
                       (b"RIFF", ".webp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif")):
        if data.startswith(magic):
            return ext
    return ".img"
