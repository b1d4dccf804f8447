"""A seeded corpus of hostile image files: everyday encodings in every format OpenCV reads here (PNG, JPEG, WebP, BMP,
TIFF, GIF) and what can go wrong with them — truncation, bit flips in headers and data, header fields changed (zero,
negative-looking and huge sizes, wrong bit depths, a palette image without its palette, bad CRCs), non-image bytes
behind image names, empty files and decompression bombs in every format that allows one.

`cases(seed, n)` → a list of Case; the same seed and n give the same bytes on every machine (numpy's PCG64, PIL and
OpenCV's encoders).  Nothing here is committed as files: tests/fuzz/run.py writes them where it runs them.
"""
from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

FORMATS = (".png", ".jpg", ".webp", ".bmp", ".tiff", ".gif")
BOMB_SIDE = 8000  # 64 MP: over the default limit of 50 MP, and a bomb of zeros that is quick to build


@dataclass(frozen=True)
class Case:
    """kind: what was done (the summary table's row); name: a file name (its extension the format's); data: the
    file's bytes; valid: a well-formed image that must be explained; refused: must end in an error line (empty,
    not an image, over the pixel limit)."""

    kind: str
    name: str
    data: bytes
    valid: bool = False
    refused: bool = False


def seed_images(rng: np.random.Generator) -> list[np.ndarray]:
    """Three small RGB photos-to-be: gradients, blocks and noise, 48×64, 61×40 and 33×33."""
    out = []
    for h, w in ((48, 64), (61, 40), (33, 33)):
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // (h + w)], -1)
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255)
        out.append(img.astype(np.uint8))
    return out


def encode(img: np.ndarray, ext: str) -> bytes:
    """RGB uint8 (or uint16, or grey, or RGBA) → the file's bytes; GIF through PIL, the rest through OpenCV."""
    if ext == ".gif":
        buf = io.BytesIO()
        Image.fromarray(img if img.dtype == np.uint8 else (img >> 8).astype(np.uint8)).save(buf, "GIF")
        return buf.getvalue()
    bgr = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, data = cv2.imencode(ext, bgr)
    assert ok, ext
    return data.tobytes()


def pil(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def valid_cases(rng: np.random.Generator) -> list[Case]:
    """Well-formed files: every format, 16 bits, grey, alpha, palette, CMYK, several frames, EXIF orientations."""
    seeds = seed_images(rng)
    cases = [Case("valid", f"seed{i}{ext}", encode(img, ext), valid=True) for i, img in enumerate(seeds)
             for ext in FORMATS]
    rgb = seeds[0]
    deep = rgb.astype(np.uint16) * 257
    alpha = np.dstack([rgb, np.where(np.arange(rgb.shape[1]) < 20, 0, 255).astype(np.uint8)[None].repeat(len(rgb), 0)])
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cases += [Case("valid: 16 bits", "deep.png", encode(deep, ".png"), valid=True),
              Case("valid: 16 bits", "deep.tiff", encode(deep, ".tiff"), valid=True),
              Case("valid: grey", "grey.png", encode(grey, ".png"), valid=True),
              Case("valid: grey", "grey.jpg", encode(grey, ".jpg"), valid=True),
              Case("valid: alpha", "alpha.png", encode(alpha, ".png"), valid=True),
              Case("valid: alpha", "alpha.webp", encode(alpha, ".webp"), valid=True),
              Case("valid: alpha", "alpha.tiff", encode(alpha, ".tiff"), valid=True),
              Case("valid: palette", "palette.png", pil(Image.fromarray(rgb).quantize(16), "PNG"), valid=True),
              Case("valid: palette", "palette.bmp", pil(Image.fromarray(rgb).quantize(16), "BMP"), valid=True),
              Case("valid: CMYK", "cmyk.jpg", pil(Image.fromarray(rgb).convert("CMYK"), "JPEG"), valid=True),
              Case("valid: CMYK", "cmyk.tiff", pil(Image.fromarray(rgb).convert("CMYK"), "TIFF"), valid=True)]
    frames = [Image.fromarray(np.roll(rgb, 7 * k, axis=1)) for k in range(4)]
    cases += [Case("valid: frames", "animated.gif", pil(frames[0], "GIF", save_all=True, append_images=frames[1:],
                                                        duration=80, loop=0), valid=True),
              Case("valid: frames", "pages.tiff", pil(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
                   valid=True)]
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        cases.append(Case("valid: EXIF orientation", f"exif{orientation}.jpg",
                          pil(Image.fromarray(rgb), "JPEG", exif=exif.tobytes()), valid=True))
    return cases


# ---- what goes wrong -------------------------------------------------------------------------------------------

def truncated(case: Case, rng) -> Case:
    cut = int(rng.integers(0, len(case.data)))
    return Case("truncated", f"cut{cut}-{case.name}", case.data[:cut], refused=cut == 0)


def flipped(case: Case, rng, header: bool) -> Case:
    data = bytearray(case.data)
    lo, hi = (0, min(64, len(data))) if header else (min(64, len(data) - 1), len(data))
    for _ in range(int(rng.integers(1, 4 if header else 9))):
        data[int(rng.integers(lo, hi))] ^= 1 << int(rng.integers(0, 8))
    return Case("bit flips in the header" if header else "bit flips in the data",
                f"flip{int(rng.integers(1 << 30))}-{case.name}", bytes(data))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 8
    while i + 8 <= len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        out.append((data[i + 4:i + 8], data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def png(chunks, crc=True) -> bytes:
    def one(kind, body):
        c = zlib.crc32(kind + body) if crc else (zlib.crc32(kind + body) ^ 0x5A5A5A5A)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", c)

    return b"\x89PNG\r\n\x1a\n" + b"".join(one(k, b) for k, b in chunks)


def header_fields(cases: list[Case], rng) -> list[Case]:
    """Header fields set to values a writer never writes, format by format."""
    out = []
    by_ext = {}
    for c in cases:
        if c.kind == "valid":
            by_ext.setdefault(c.name[c.name.rindex("."):], c)
    sizes = (0, 1, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
    # PNG: IHDR width, height, bit depth, colour type; the palette left out; CRCs
    chunks = png_chunks(by_ext[".png"].data)
    ihdr = chunks[0][1]
    for field, at, fmt in (("width", 0, ">I"), ("height", 4, ">I")):
        for v in sizes:
            body = ihdr[:at] + struct.pack(fmt, v) + ihdr[at + 4:]
            out.append(Case(f"PNG {field} changed", f"png-{field}-{v}.png", png([(b"IHDR", body)] + chunks[1:])))
    for depth in (0, 3, 5, 7, 16, 255):
        out.append(Case("PNG bit depth changed", f"png-depth-{depth}.png",
                        png([(b"IHDR", ihdr[:8] + bytes([depth]) + ihdr[9:])] + chunks[1:])))
    for kind in (1, 3, 5, 7, 255):  # 3: a palette image without a PLTE chunk
        out.append(Case("PNG colour type changed", f"png-colour-{kind}.png",
                        png([(b"IHDR", ihdr[:9] + bytes([kind]) + ihdr[10:])] + chunks[1:])))
    out.append(Case("PNG bad CRC", "png-crc.png", png(chunks, crc=False)))
    pal = png_chunks(next(c for c in cases if c.name == "palette.png").data)
    out.append(Case("PNG palette missing", "png-noplte.png", png([c for c in pal if c[0] != b"PLTE"])))
    # JPEG: the frame header's height, width, precision, components
    jpg = by_ext[".jpg"].data
    sof = next(i for i in range(2, len(jpg) - 1) if jpg[i] == 0xFF and jpg[i + 1] in (0xC0, 0xC2))
    for name, at, values in (("height", 5, (0, 1, 0xFFFF)), ("width", 7, (0, 1, 0xFFFF))):
        for v in values:
            out.append(Case(f"JPEG {name} changed", f"jpg-{name}-{v}.jpg",
                            jpg[:sof + at] + struct.pack(">H", v) + jpg[sof + at + 2:]))
    for v in (0, 12, 16, 255):
        out.append(Case("JPEG precision changed", f"jpg-precision-{v}.jpg", jpg[:sof + 4] + bytes([v]) + jpg[sof + 5:]))
    for v in (0, 2, 5, 255):
        out.append(Case("JPEG components changed", f"jpg-components-{v}.jpg",
                        jpg[:sof + 9] + bytes([v]) + jpg[sof + 10:]))
    # BMP: width, height (negative: top-down, huge), bits per pixel, compression
    bmp = by_ext[".bmp"].data
    for name, at, values in (("width", 18, (0, -1, -64, 0x7FFFFFFF)), ("height", 22, (0, -48, 0x7FFFFFFF, -0x7FFFFFFF))):
        for v in values:
            out.append(Case(f"BMP {name} changed", f"bmp-{name}-{v}.bmp",
                            bmp[:at] + struct.pack("<i", v) + bmp[at + 4:]))
    for v in (0, 7, 64, 0xFFFF):
        out.append(Case("BMP bit depth changed", f"bmp-bpp-{v}.bmp", bmp[:28] + struct.pack("<H", v) + bmp[30:]))
    for v in (1, 2, 3, 99):
        out.append(Case("BMP compression changed", f"bmp-compression-{v}.bmp",
                        bmp[:30] + struct.pack("<I", v) + bmp[34:]))
    # GIF: the logical screen and the first image's size
    gif = by_ext[".gif"].data
    desc = gif.index(b"\x2c", 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 13))
    for v in (0, 1, 0xFFFF):
        out.append(Case("GIF size changed", f"gif-screen-{v}.gif", gif[:6] + struct.pack("<HH", v, v) + gif[10:]))
        out.append(Case("GIF size changed", f"gif-frame-{v}.gif",
                        gif[:desc + 5] + struct.pack("<HH", v, v) + gif[desc + 9:]))
    # TIFF: width, length, bits per sample, samples per pixel, compression in the first IFD
    tif = by_ext[".tiff"].data
    e = "<" if tif[:2] == b"II" else ">"
    off = struct.unpack(e + "I", tif[4:8])[0]
    n = struct.unpack(e + "H", tif[off:off + 2])[0]
    for k in range(n):
        at = off + 2 + 12 * k
        tag, typ = struct.unpack(e + "HH", tif[at:at + 4])
        names = {256: "width", 257: "length", 258: "bits per sample", 259: "compression", 277: "samples per pixel"}
        if tag not in names:
            continue
        for v in (0, 3, 64, 0xFFFF) if tag != 259 else (0, 2, 6, 99):
            value = struct.pack(e + ("H" if typ == 3 else "I"), v).ljust(4, b"\0")
            out.append(Case(f"TIFF {names[tag]} changed", f"tif-{tag}-{v}.tiff", tif[:at + 8] + value + tif[at + 12:]))
    # WebP: the RIFF size and the VP8 frame size
    webp = by_ext[".webp"].data
    for v in (0, 8, 0xFFFFFFFF):
        out.append(Case("WebP RIFF size changed", f"webp-riff-{v}.webp", webp[:4] + struct.pack("<I", v) + webp[8:]))
    if webp[12:16] == b"VP8 ":
        for v in (0, 1, 0x3FFF):
            out.append(Case("WebP size changed", f"webp-size-{v}.webp",
                            webp[:26] + struct.pack("<HH", v, v) + webp[30:]))
    return out


def not_images(rng) -> list[Case]:
    """Bytes that are not images, behind every image extension; empty files."""
    texts = {"text": b"just some words\n" * 8, "html": b"<!doctype html><html><body>hi</body></html>",
             "json": b'{"image": "no"}', "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
             "zip": b"PK\x03\x04" + bytes(26), "elf": b"\x7fELF" + bytes(60)}
    out = [Case("empty file", f"empty{ext}", b"", refused=True) for ext in FORMATS]
    for i, ext in enumerate(FORMATS):
        out.append(Case("random bytes", f"random{i}{ext}", rng.bytes(int(rng.integers(1, 4096))), refused=True))
        for name, data in texts.items():
            out.append(Case("not an image", f"{name}{ext}", data, refused=True))
        magic = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".webp": b"RIFF\0\0\0\0WEBP",
                 ".bmp": b"BM", ".tiff": b"II*\x00", ".gif": b"GIF89a"}[ext]
        out.append(Case("magic only", f"magic{ext}", magic, refused=True))
        out.append(Case("magic, then random bytes", f"magicrandom{i}{ext}", magic + rng.bytes(200), refused=True))
    return out


def zeros_deflated(n: int, level: int = 9) -> bytes:
    c = zlib.compressobj(level)
    block = bytes(1 << 20)
    parts = [c.compress(block) for _ in range(n >> 20)] + [c.compress(bytes(n & ((1 << 20) - 1))), c.flush()]
    return b"".join(parts)


def bombs() -> list[Case]:
    """A few KB to MB on disk that decode to BOMB_SIDE² pixels or more, in every format that allows one; each is
    refused from its header (the limit), none decoded."""
    side = BOMB_SIDE
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # grey: one byte per pixel and a filter byte per row
    out = [Case("decompression bomb", "bomb.png", png([(b"IHDR", ihdr), (b"IDAT", zeros_deflated((side + 1) * side)),
                                                       (b"IEND", b"")]), refused=True)]
    # TIFF: one deflated strip of zeros, 8-bit grey
    strip = zeros_deflated(side * side)
    tags = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 0),
            (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, len(strip))]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(tags) + 4
    tags = [(t, ty, c, data_at if t == 273 else v) for t, ty, c, v in tags]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", t, ty, c) + (struct.pack("<HH", v, 0) if ty == 3 else struct.pack("<I", v))
        for t, ty, c, v in tags) + struct.pack("<I", 0)
    out.append(Case("decompression bomb", "bomb.tiff", b"II*\x00" + struct.pack("<I", ifd_at) + ifd + strip,
                    refused=True))
    # GIF: a 65535×65535 screen and frame, a few bytes of LZW (what a decoder allocates is the frame)
    gif = (b"GIF89a" + struct.pack("<HHBBB", 0xFFFF, 0xFFFF, 0x80, 0, 0) + bytes(6) + b"\x2c" +
           struct.pack("<HHHHB", 0, 0, 0xFFFF, 0xFFFF, 0) + b"\x02\x02\x4c\x01\x00\x3b")
    out.append(Case("decompression bomb", "bomb.gif", gif, refused=True))
    # BMP: RLE8 that claims 30000×30000 and ends at once
    w = h = 30000
    rle = b"\x00\x01"  # end of bitmap
    header = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(rle), 2835, 2835, 2, 0) + bytes(8)
    out.append(Case("decompression bomb", "bomb.bmp", b"BM" + struct.pack("<IHHI", 14 + len(header) + len(rle), 0, 0,
                                                                        14 + len(header)) + header + rle, refused=True))
    # JPEG: a valid small JPEG whose frame header claims 65500×65500
    small = encode(np.zeros((8, 8, 3), np.uint8), ".jpg")
    sof = next(i for i in range(2, len(small) - 1) if small[i] == 0xFF and small[i + 1] == 0xC0)
    out.append(Case("decompression bomb", "bomb.jpg", small[:sof + 5] + struct.pack(">HH", 65500, 65500) +
                    small[sof + 9:], refused=True))
    # WebP: a lossless (VP8L) header for 16384×16384 and a few bytes
    bits = (16383) | (16383 << 14)
    vp8l = b"\x2f" + bits.to_bytes(4, "little") + bytes(16)
    out.append(Case("decompression bomb", "bomb.webp", b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8l)) + b"WEBP" +
                    b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l, refused=True))
    return out


def cases(seed: int = 0, n: int = 1000) -> list[Case]:
    """At least n cases (the fixed kinds, then truncations and bit flips of the valid files up to n), seeded."""
    rng = np.random.default_rng(seed)
    valid = valid_cases(rng)
    out = valid + header_fields(valid, rng) + not_images(rng) + bombs()
    i = 0
    while len(out) < n:
        base = valid[i % len(valid)]
        out.append([truncated(base, rng), flipped(base, rng, True), flipped(base, rng, False)][i % 3])
        i += 1
    return [dataclasses.replace(c, name=f"{k:04d}-{c.name}") for k, c in enumerate(out)]  # unique file names
