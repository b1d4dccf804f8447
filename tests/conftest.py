import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import onnx_builders
from infolens import kernels

H, W = 17, 19
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: examples/, models/, README.md

# Kernel tests compare the compiled `infolens._sampling` with the numpy fallback; without it they skip, or fail when
# INFOLENS_REQUIRE_EXT=1 (CI sets it so a broken build cannot pass silently).
REQUIRE_EXT = os.environ.get("INFOLENS_REQUIRE_EXT", "") not in ("", "0")

IMPLS = [pytest.param(kernels.numpy_impl, id="numpy"),
         pytest.param(kernels.ext_impl, id="c++",
                      marks=pytest.mark.skipif(kernels.ext_impl is None and not REQUIRE_EXT,
                                               reason=str(kernels.EXT_UNAVAILABLE_REASON)))]


@pytest.fixture
def ext():
    if kernels.ext_impl is None:
        if REQUIRE_EXT:
            pytest.fail(f"INFOLENS_REQUIRE_EXT=1 but {kernels.EXT_UNAVAILABLE_REASON}")
        pytest.skip(str(kernels.EXT_UNAVAILABLE_REASON))
    return kernels.ext_impl


@pytest.fixture(params=IMPLS)
def impl(request):
    if request.param is None:  # only reachable with INFOLENS_REQUIRE_EXT=1
        pytest.fail(f"INFOLENS_REQUIRE_EXT=1 but {kernels.EXT_UNAVAILABLE_REASON}")
    return request.param


def scene(h=H, w=W, seed=0):
    """A small uint8 RGB picture with edges and smooth regions."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = np.linspace(20, 230, w, dtype=np.uint8)[None, :, None]
    cv2.circle(img, (w // 3, h // 2), max(2, h // 4), (200, 40, 60), -1)
    cv2.rectangle(img, (w // 2, 1), (w - 2, h // 3), (30, 180, 90), -1)
    noise = rng.integers(-12, 13, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def image_file(tmp_path):
    """A real PNG on disk (decoded by OpenCV like any user image)."""
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), scene()[:, :, ::-1])
    return str(path)


@pytest.fixture
def model_file(tmp_path):
    """The reference test classifier: NCHW float32 RGB, logits, dynamic batch, with a card for its preprocessing."""
    path = onnx_builders.classifier(tmp_path / "clf.onnx")
    write_card(path, "NCHW", "RGB", "float32")
    return path


def write_card(path, layout, order, dtype, kind=None):
    import json

    mean, std = onnx_builders.MEAN, onnx_builders.STD
    if order == "BGR":
        mean, std = mean[::-1], std[::-1]
    if dtype == "uint8":
        mean, std = np.zeros(3), np.ones(3)
    card = {"name": os.path.basename(path), "input": {"layout": layout, "channel_order": order, "scale": 1.0,
            "mean": list(mean), "std": list(std), "dtype": dtype, "resize": "none"}}
    if kind:
        card["output"] = {"kind": kind}
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(card, f)


def served_copy(model_file, folder):
    """The test classifier copied into `folder` (a models folder for `infolens serve`) with a card that resizes
    (stretch): the server takes images of any size, as the CLI's --resize stretch does → the copy's path."""
    import json
    import shutil

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "clf.onnx")
    shutil.copy(model_file, path)
    with open(os.path.splitext(model_file)[0] + ".json") as f:
        card = json.load(f)
    card["input"]["resize"] = "stretch"
    with open(os.path.join(folder, "clf.json"), "w") as f:
        json.dump(card, f)
    return path


def run_cli(*args, env=None):
    """Run the real `infolens` command in a subprocess → CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "infolens", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=600)
