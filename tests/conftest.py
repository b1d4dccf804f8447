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


@pytest.fixture
def models_dir(tmp_path):
    """A models folder for `infolens serve` with one small classifier, "toy" (24×24 RGB, 6 classes), and its card."""
    folder = tmp_path / "models"
    folder.mkdir()
    path = onnx_builders.classifier(folder / "toy.onnx", H=24, W=24, n_classes=6)
    write_card(path, "NCHW", "RGB", "float32")
    return folder


@pytest.fixture
def photo(tmp_path):
    """A 24×24 PNG for the "toy" classifier of `models_dir`."""
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), scene(24, 24)[:, :, ::-1])
    return path


def run_cli(*args, env=None):
    """Run the real `infolens` command in a subprocess → CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "infolens", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=600)


class LoopDisk:
    """A small ext4 file system on a loop device, mounted at `where`, for storage that fails mid-run: `fill()` leaves
    no room, `break_()` turns it read-only the way ext4 does on a disk error (errors=remount-ro: open files
    included, which a remount cannot do while a file is open for writing), `repair()` checks it and mounts it
    writable again.  `loop_disk` makes one and skips the test, saying why, where mounting is not permitted."""

    def __init__(self, where, size_mb: int):
        self.where, self.image = where, where.parent / f"{where.name}.img"
        where.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(size_mb << 20)
        r = subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], capture_output=True, text=True)
        if r.returncode == 0:
            r = self._mount()
        if r.returncode:
            pytest.skip(f"cannot mount an ext4 loop device here ({r.stderr.strip() or r.returncode}): the storage "
                        "faults need one")

    def _mount(self):
        return subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.where)],
                              capture_output=True, text=True)

    def fill(self) -> None:
        with open(self.where / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                pass

    def free(self) -> None:
        os.unlink(self.where / "filler")

    def break_(self) -> None:
        device = next(line.split()[0] for line in open("/proc/mounts") if line.split()[1] == str(self.where))
        with open(f"/sys/fs/ext4/{os.path.basename(device)}/trigger_fs_error", "w") as f:
            f.write("infolens test: the disk fails")

    def repair(self) -> None:
        self.unmount()
        subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True)
        assert self._mount().returncode == 0

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.where)], capture_output=True)


@pytest.fixture
def loop_disk(tmp_path):
    """A LoopDisk of 16 MiB at tmp_path/disk, unmounted afterwards."""
    disk = LoopDisk(tmp_path / "disk", 16)
    yield disk
    subprocess.run(["umount", "-l", str(disk.where)], capture_output=True)
