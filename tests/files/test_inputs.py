"""Everyday image files, made here: nothing about them is changed without a note, and what is changed is stated and
controllable (transparency, frames, 16 bits, CMYK, EXIF orientation, small images, JPEGs with data after their end)."""
import io
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import scene
from infolens import OnnxClassifier
from infolens.errors import InfolensError
from infolens.images import read_image


def picture(h=24, w=32, seed=0):
    return cv2.resize(scene(seed=seed), (w, h), interpolation=cv2.INTER_LINEAR)


def explain_cli(tmp_path, model_file, *files, extra=()):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "infolens", "explain", *map(str, files), "--model", model_file,
                        "--resize", "stretch", "--sampler", "gray", "-K", "4", "--no-png", "--out", str(out),
                        *extra], capture_output=True, text=True)
    return r, out


def test_rgba_is_composited_on_the_background_with_a_note(tmp_path):
    rgb = picture()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :10] = 0
    alpha[:, 10:20] = 128
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    notes = []
    got = read_image(path, notes=notes)
    assert (got[:, :10] == 255).all(), "fully transparent pixels are the white background"
    np.testing.assert_array_equal(got[:, 20:], rgb[:, 20:])
    half = np.round(rgb[:, 10:20] * (128 / 255) + 255 * (127 / 255)).astype(np.uint8)
    np.testing.assert_array_equal(got[:, 10:20], half)
    assert len(notes) == 1 and "transparent" in notes[0] and "255,255,255" in notes[0]
    black = read_image(path, background=(0, 0, 0))
    assert (black[:, :10] == 0).all()
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(opaque)
    notes = []
    np.testing.assert_array_equal(read_image(opaque, notes=notes), rgb)
    assert notes == [], "an alpha channel that is opaque everywhere changes nothing and needs no note"


@pytest.mark.slow
def test_cli_notes_and_records_what_it_did_to_the_input(tmp_path, model_file):
    rgb = picture()
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 0, np.uint8)]), "RGBA").save(path)
    r, out = explain_cli(tmp_path, model_file, path, extra=["--background", "0,128,255"])
    assert r.returncode == 0, r.stderr
    assert "infolens: note:" in r.stderr and "0,128,255" in r.stderr
    meta = json.loads((out / "rgba.json").read_text())
    assert any("transparent" in n for n in meta["input_notes"])
    with np.load(out / "rgba.npz") as z:  # stretched 24x32 → 17x19: all of it the background
        assert (z["image"] == (0, 128, 255)).all()
    r, _ = explain_cli(tmp_path, model_file, path, extra=["--background", "300"])
    assert r.returncode == 2 and r.stderr.strip().endswith("(--background)")


@pytest.mark.slow
def test_animated_gif_names_the_frame_used_and_frame_chooses_it(tmp_path, model_file):
    frames = [picture(seed=s) for s in range(3)]
    path = tmp_path / "anim.gif"
    Image.fromarray(frames[0]).save(path, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=100, loop=0)
    if not cv2.haveImageReader(str(path)):
        with pytest.raises(InfolensError, match="has no GIF reader"):
            read_image(path)
        pytest.skip(f"OpenCV {cv2.__version__} reads no GIF (4.12 and newer do): only its clear error is checked")
    notes = []
    first = read_image(path, notes=notes)
    assert notes == ["3 frames (animated or multi-page): frame 0 is explained"]
    second = read_image(path, frame=2)
    np.testing.assert_array_equal(first, np.array(Image.open(path).convert("RGB")))  # PIL's first frame
    assert np.abs(second.astype(int) - first.astype(int)).mean() > 5, "frame 2 is another picture"
    with pytest.raises(InfolensError, match="no frame 3") as err:
        read_image(path, frame=3)
    assert err.value.param == "frame"
    r, out = explain_cli(tmp_path, model_file, path, extra=["--frame", "1"])
    assert r.returncode == 0 and "frame 1 is explained" in r.stderr
    r, _ = explain_cli(tmp_path, model_file, path, extra=["--frame", "7"])
    assert r.returncode == 2 and r.stderr.strip().endswith("(--frame)")


def test_16_bit_images_are_rounded_to_8_bits_with_a_note(tmp_path):
    rgb16 = (picture().astype(np.uint16) * 257 + np.uint16(100))
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), rgb16[:, :, ::-1])
    notes = []
    got = read_image(path, notes=notes)
    np.testing.assert_array_equal(got, np.round(rgb16 / 257).astype(np.uint8))
    assert notes == ["16-bit image: rounded to 8 bits per channel"]


def test_cmyk_and_grey_jpegs_decode_to_rgb(tmp_path):
    rgb = picture()
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=95)
    got = read_image(cmyk)
    assert got.shape == rgb.shape and np.abs(got.astype(int) - rgb.astype(int)).mean() < 8
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    g = read_image(grey)
    assert g.shape == rgb.shape and (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()


def test_exif_rotated_jpeg_is_upright_as_viewers_show_it(tmp_path):
    rgb = picture(20, 40)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored image must be turned 90° clockwise to be viewed
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(path, quality=98, exif=exif)
    got = read_image(path)
    assert got.shape == rgb.shape
    assert np.abs(got.astype(int) - rgb.astype(int)).mean() < 6


def test_jpeg_with_data_after_its_end_is_read_and_a_cut_one_refused(tmp_path):
    _, jpg = cv2.imencode(".jpg", picture()[:, :, ::-1])
    jpg = jpg.tobytes()
    exif = Image.Exif()
    exif[0x010F] = "phone"
    buf = io.BytesIO()
    Image.fromarray(picture()).save(buf, "JPEG", exif=exif, quality=90)
    for name, data in [("motion.jpg", jpg + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40),
                       ("exif_motion.jpg", buf.getvalue() + b"ftypmp42" + b"\xff\xd8" * 500)]:
        (tmp_path / name).write_bytes(data)
        assert read_image(tmp_path / name).shape == (24, 32, 3)
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) * 2 // 3])
    with pytest.raises(InfolensError, match="truncated"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "cut_tail.jpg").write_bytes(jpg[: len(jpg) * 2 // 3] + b"\x00" * 100)
    with pytest.raises(InfolensError, match="truncated"):
        read_image(tmp_path / "cut_tail.jpg")


def test_an_image_smaller_than_the_input_gets_a_note(tmp_path, model_file):
    clf = OnnxClassifier.from_card(model_file, resize="shorter-side-crop")
    notes = []
    clf.load_image(picture(8, 8), notes)
    assert notes == ["the image (8x8) is smaller than the model input (17x19): enlarged (shorter-side-crop)"]
    notes = []
    clf.load_image(picture(40, 40), notes)
    assert notes == []


def test_what_the_decoders_print_does_not_break_one_line_per_bad_file(tmp_path, model_file):
    """libpng writes warnings straight to stderr and OpenCV logs libtiff's errors: the CLI's stderr is still one
    line per bad file."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    zero_width = tmp_path / "zero.png"  # libpng: "Image width is zero in IHDR"
    zero_width.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 16, 8, 2, 0, 0, 0)) +
                           chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))
    tiff = tmp_path / "cut.tiff"  # libtiff through OpenCV's log: a strip cut short
    ok, data = cv2.imencode(".tiff", picture())
    tiff.write_bytes(data.tobytes()[:len(data) // 2])
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), picture())
    r, out = explain_cli(tmp_path, model_file, zero_width, tiff, good, extra=("-q",))
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert all(line.startswith("infolens: error: ") for line in lines), r.stderr
    assert (out / "good.json").is_file()
