"""PatchSampler: window data, training, ONNX export parity, NLL, and the shipped models' interface."""
import json
import math
import os

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from infolens import samplers
from infolens.export import data, patchsampler as ps

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


@pytest.fixture(scope="module")
def tiny_trained():
    """A K=4, width-16 sampler after 30 seeded steps on two small builtin images, with its losses."""
    torch.set_num_threads(1)
    images = dict(data.load_images("builtin"))
    names = ("astronaut.png", "camera.png")
    small = [cv2.resize(images[name], (128, 128), interpolation=cv2.INTER_AREA) for name in names]
    torch.manual_seed(0)
    model = ps.PatchSampler(4, 3, width=16)
    losses = ps.train(model, small, steps=30, batch=16, seed=0, progress=False)
    return model, losses


@pytest.fixture(scope="module")
def tiny_onnx(tiny_trained, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ps") / "tiny.onnx")
    ps.export_onnx(tiny_trained[0], path)
    return path


def test_training_loss_goes_down(tiny_trained):
    losses = tiny_trained[1]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1


def test_export_matches_torch_on_uint8_with_dynamic_batch(tiny_trained, tiny_onnx):
    model = tiny_trained[0].eval()
    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch in (1, 5):
        context = rng.integers(0, 256, (batch, 12, 12, 3), dtype=np.uint8)
        got = sess.run(["probs"], {"context": context})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(context)).numpy()
        assert got.dtype == np.float32 and got.shape == (batch, 4, 4, 3, 256)
        assert np.abs(got - want).max() < 1e-4
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_exported_file_interface(tiny_onnx):
    proto = onnx.load(tiny_onnx)
    assert proto.ir_version <= 10
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("context", "tensor(uint8)", [12, 12, 3])
    assert (out.name, out.type, out.shape[1:]) == ("probs", "tensor(float)", [4, 4, 3, 256])


def test_centre_of_context_is_ignored(tiny_onnx):
    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(2).integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    b = a.copy()
    b[:, 4:8, 4:8] = 255 - b[:, 4:8, 4:8]
    pa, pb = (sess.run(["probs"], {"context": x})[0] for x in (a, b))
    np.testing.assert_array_equal(pa, pb)


def test_nll_bits():
    targets = np.random.default_rng(3).integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
    uniform = np.full((7, 4, 4, 3, 256), 1 / 256, np.float32)
    assert ps.nll_bits(uniform, targets) == pytest.approx(8.0, abs=1e-5)
    peaked = np.full_like(uniform, 0.1 / 255)
    np.put_along_axis(peaked, targets[..., None].astype(np.int64), 0.9, axis=-1)
    assert ps.nll_bits(peaked, targets) == pytest.approx(-math.log2(0.9), abs=1e-5)
    wrong = np.roll(peaked, 1, axis=-1)
    assert ps.nll_bits(wrong, targets) > 8.0


def _coordinate_image(H=40, W=50):
    """R = row, G = column, B = 255: every pixel names its position and is nonzero."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([y, x, np.full_like(y, 255)], -1).astype(np.uint8)


def test_random_windows_are_the_runtime_context():
    K, image = 8, _coordinate_image()
    windows = data.random_windows([image], K, 400, np.random.default_rng(5), augment=False)
    assert windows.shape == (400, 24, 24, 3) and windows.dtype == np.uint8
    ys, xs = windows[:, K, K, 0].astype(np.int64), windows[:, K, K, 1].astype(np.int64)
    # exactly what the runtime's PatchSampler cuts around the patch at (y, x)
    np.testing.assert_array_equal(windows, samplers.windows(samplers.pad(image, K), ys, xs, 3 * K))
    # positions span every valid patch position, so windows reach into the zero border
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (0, 40 - K, 0, 50 - K)
    assert (windows[..., 2] == 0).any(axis=(1, 2)).mean() > 0.5


def test_augmented_windows_keep_border_and_centre():
    K, image = 4, np.full((30, 30, 3), 200, np.uint8)
    windows = data.random_windows([("flat", image)], K, 300, np.random.default_rng(6))
    assert windows.shape == (300, 12, 12, 3) and windows.dtype == np.uint8
    assert windows[:, K : 2 * K, K : 2 * K].min() > 0  # the patch always lies inside the image
    assert (windows == 0).all(-1).any(axis=(1, 2)).mean() > 0.2  # many windows overlap the border
    assert len(np.unique(windows[:, K, K, 0])) > 5  # colour jitter is on
    with pytest.raises(ValueError, match="at least K=4"):
        data.random_windows([np.ones((3, 9, 3), np.uint8)], K, 1, np.random.default_rng(6))


def test_load_images(tmp_path):
    train = data.load_images("builtin")
    assert [n for n, _ in train] == data.BUILTIN_TRAIN
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for _, im in train)
    assert "chelsea.png" in data.BUILTIN_HELDOUT and not set(data.BUILTIN_HELDOUT) & set(data.BUILTIN_TRAIN)
    assert ("motorcycle_left.png" in data.BUILTIN_TRAIN) == ("motorcycle_right.png" in data.BUILTIN_TRAIN)

    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "red.png"), np.tile(np.uint8([0, 0, 255]), (5, 6, 1)))  # BGR red
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((4, 4), 77, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    loaded = data.load_images(str(tmp_path))
    assert [n for n, _ in loaded] == ["grey.png", os.path.join("sub", "red.png")]
    assert loaded[0][1].shape == (4, 4, 3) and (loaded[0][1] == 77).all()
    assert tuple(loaded[1][1][0, 0]) == (255, 0, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no decodable images"):
        data.load_images(str(tmp_path / "empty"))


def test_cli_writes_model_and_card(tmp_path):
    ps.main(["--K", "4", "--width", "8", "--steps", "3", "--batch", "4", "--eval-windows", "40", "--out", str(tmp_path)])
    card = json.loads((tmp_path / "patchsampler_k4.json").read_text())
    assert (card["task"], card["K"], card["C"], card["licence"]) == ("patch-sampler", 4, 3, "Apache-2.0")
    assert card["nll_bits_per_subpixel"]["uniform"] == pytest.approx(8.0)
    assert card["training"]["heldout"] == data.BUILTIN_HELDOUT and card["cost_ms_per_position"] > 0
    assert card["command"].startswith("python -m infolens.export.patchsampler --K 4 ")
    sess = ort.InferenceSession(str(tmp_path / "patchsampler_k4.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].shape[1:] == [4, 4, 3, 256]


@pytest.mark.parametrize("K", [8, 16])
def test_shipped_patchsampler(K):
    path = os.path.join(MODELS, f"patchsampler_k{K}.onnx")
    with open(path[: -len(".onnx")] + ".json") as f:
        card = json.load(f)
    assert (card["task"], card["K"], card["C"]) == ("patch-sampler", K, 3)
    assert card["nll_bits_per_subpixel"]["patchsampler"] < card["nll_bits_per_subpixel"]["uniform"] - 1.0
    assert os.path.getsize(path) <= 25 * 2**20
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("context", "tensor(uint8)", [3 * K, 3 * K, 3])
    assert (out.name, out.type, out.shape[1:]) == ("probs", "tensor(float)", [K, K, 3, 256])
    windows = data.random_windows(data.load_images("builtin-heldout"), K, 3, np.random.default_rng(7), augment=False)
    probs = sess.run(["probs"], {"context": windows})[0]
    assert probs.shape == (3, K, K, 3, 256)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
