"""The pixel limit: an image file's size is read from its header and a file over the limit is refused before any
decoder allocates — in the library (read_image, OnnxClassifier.max_pixels), the CLI (--max-pixels, one line, exit
2, the other files still explained) and for every format whose header carries the size."""
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import scene
from infolens import OnnxClassifier, params
from infolens.errors import InfolensError
from infolens.images import image_size, read_image


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width × height (8-bit RGB) and whose data is a few bytes of zeros: what a
    decompression bomb looks like to anything that trusts the header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4096))) + \
        chunk(b"IEND", b"")


def written(tmp_path, ext: str, h=30, w=40) -> str:
    path = tmp_path / f"photo{ext}"
    img = np.ascontiguousarray(cv2.resize(scene(), (w, h)))
    if ext == ".gif":
        Image.fromarray(img).save(path)
    else:
        assert cv2.imwrite(str(path), img[:, :, ::-1])
    return str(path)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(30000, 30000))
    with pytest.raises(InfolensError) as e:
        read_image(bomb)
    assert e.value.param == "max_pixels" and "30000x30000" in str(e.value) and "50,000,000" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".gif"])
def test_every_format_is_measured_before_it_is_decoded(tmp_path, ext):
    path = written(tmp_path, ext)
    with open(path, "rb") as f:
        assert image_size(f.read()) == (40, 30), ext
    with pytest.raises(InfolensError) as e:
        read_image(path, max_pixels=40 * 30 - 1)
    assert e.value.param == "max_pixels" and "40x30" in str(e.value)
    assert read_image(path, max_pixels=40 * 30).shape == (30, 40, 3)


def test_a_format_without_a_header_we_read_is_checked_once_decoded(tmp_path):
    path = tmp_path / "photo.ppm"  # PPM: OpenCV reads it, image_size does not
    assert cv2.imwrite(str(path), cv2.resize(scene(), (40, 30)))
    assert image_size(path.read_bytes()) is None
    with pytest.raises(InfolensError, match="40x30") as e:
        read_image(path, max_pixels=1000)
    assert e.value.param == "max_pixels"
    assert read_image(path, max_pixels=None).shape == (30, 40, 3)


def test_only_the_frame_asked_for_is_decoded_and_the_count_still_noted(tmp_path):
    frames = [np.full((30, 40, 3), 40 * i, np.uint8) for i in range(5)]
    path = tmp_path / "pages.tiff"
    assert cv2.imwritemulti(str(path), frames)
    notes = []
    got = read_image(path, frame=3, notes=notes)
    assert (got == 120).all() and notes == ["5 frames (animated or multi-page): frame 3 is explained"]
    with pytest.raises(InfolensError, match="has 5 frames: there is no frame 5") as e:
        read_image(path, frame=5)
    assert e.value.param == "frame"


def test_the_classifier_carries_the_limit_and_a_decoded_array_has_none(tmp_path, model_file):
    path = written(tmp_path, ".png")
    clf = OnnxClassifier.from_card(model_file, max_pixels=100, resize="stretch")
    assert clf.max_pixels == 100
    with pytest.raises(InfolensError) as e:
        clf.load_image(path)
    assert e.value.param == "max_pixels"
    assert clf.load_image(read_image(path)).shape[2] == 3  # an array in memory is not refused
    assert OnnxClassifier.from_card(model_file).max_pixels == params.MAX_PIXELS
    with pytest.raises(InfolensError) as e:
        OnnxClassifier.from_card(model_file, max_pixels=0)
    assert e.value.param == "max_pixels"


def test_cli_refuses_one_line_exit_2_and_the_good_files_finish(tmp_path, model_file):
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    big.write_bytes(png_claiming(30000, 30000))
    assert cv2.imwrite(str(small), cv2.resize(scene(), (20, 16)))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "infolens", "explain", str(big), str(small), "--model", model_file,
                        "--resize", "stretch", "--sampler", "gray", "-K", "4", "--no-png", "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = [l for l in r.stderr.splitlines() if "big.png" in l]
    assert len(line) == 1 and "30000x30000" in line[0] and "--max-pixels" in line[0], r.stderr
    assert (out / "small.json").is_file() and not (out / "big.json").exists()
    r = subprocess.run([sys.executable, "-m", "infolens", "explain", str(small), "--model", model_file,
                        "--resize", "stretch", "--sampler", "gray", "-K", "4", "--no-png", "--out", str(out), "-q",
                        "--max-pixels", "100"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "20x16" in r.stderr and "--max-pixels" in r.stderr, r.stderr
