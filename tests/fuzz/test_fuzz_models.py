"""Hostile model files: truncated and corrupted .onnx files, graphs whose output is not [B, classes], NaN and Inf
outputs, rank-5 and string inputs, an op ONNX Runtime lacks, and cards that disagree with the graph — each ends in
one line naming the model file and what is wrong, from the library (an InfolensError) and from the CLI (exit 2),
never a traceback."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_builders
from conftest import scene
from infolens import OnnxClassifier
from infolens.errors import InfolensError


def graph_model(path, nodes, inputs, outputs, inits=(), domains=()):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=onnx_builders.OPSET + [helper.make_opsetid(d, 1) for d in domains],
                              ir_version=onnx_builders.IR_VERSION)
    onnx.save(model, str(path))
    return str(path)


def value(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


IMAGE = value("input", TensorProto.FLOAT, ["N", 3, 17, 19])


def hostile_models(tmp_path) -> dict[str, tuple[str, str]]:
    """name → (model path, a word the error line must have)."""
    good = onnx_builders.classifier(tmp_path / "good.onnx")
    data = open(good, "rb").read()
    rng = np.random.default_rng(0)
    out = {}
    for frac in (0.0, 0.1, 0.5, 0.99):
        p = tmp_path / f"cut{int(frac * 100)}.onnx"
        p.write_bytes(data[:int(len(data) * frac)])
        out[f"truncated at {int(frac * 100)} %"] = (str(p), "")
    for k in range(4):
        flipped = bytearray(data)
        for i in rng.integers(0, 200, 6):  # the graph's structure is at the front
            flipped[int(i)] ^= 1 << int(rng.integers(0, 8))
        p = tmp_path / f"flipped{k}.onnx"
        p.write_bytes(bytes(flipped))
        out[f"bit flips {k}"] = (str(p), "")
    p = tmp_path / "text.onnx"
    p.write_text("not a model\n")
    out["text"] = (str(p), "")
    shape4 = numpy_helper.from_array(np.array([-1, 3, 17, 19], np.int64), "s")
    out["output [B, C, H, W]"] = (graph_model(tmp_path / "map.onnx", [helper.make_node("Identity", ["input"], ["y"])],
                                              [IMAGE], [value("y", TensorProto.FLOAT, ["N", 3, 17, 19])]), "")
    out["output [B]"] = (graph_model(tmp_path / "scalar.onnx",
                                     [helper.make_node("ReduceMean", ["input"], ["y"], keepdims=0)],
                                     [IMAGE], [value("y", TensorProto.FLOAT, ["N"])]), "")
    for name, v in (("NaN", np.nan), ("Inf", np.inf)):
        const = numpy_helper.from_array(np.full((1, 5), v, np.float32), "bad")
        flat = numpy_helper.from_array(np.array([-1, 3 * 17 * 19], np.int64), "f")
        w = numpy_helper.from_array(np.ones((3 * 17 * 19, 5), np.float32) / 1000, "w")
        out[f"{name} outputs"] = (graph_model(
            tmp_path / f"{name}.onnx", [helper.make_node("Reshape", ["input", "f"], ["x"]),
                                        helper.make_node("MatMul", ["x", "w"], ["z"]),
                                        helper.make_node("Add", ["z", "bad"], ["logits"])],
            [IMAGE], [value("logits", TensorProto.FLOAT, ["N", 5])], [const, flat, w]), name)
    out["rank-5 input"] = (graph_model(
        tmp_path / "rank5.onnx", [helper.make_node("ReduceMean", ["input"], ["y"], axes=[2, 3, 4], keepdims=0)],
        [value("input", TensorProto.FLOAT, ["N", 3, 2, 17, 19])], [value("y", TensorProto.FLOAT, ["N", 3])]), "rank")
    out["string input"] = (graph_model(
        tmp_path / "string.onnx", [helper.make_node("Identity", ["input"], ["y"])],
        [value("input", TensorProto.STRING, ["N"])], [value("y", TensorProto.STRING, ["N"])]), "")
    out["an op ONNX Runtime lacks"] = (graph_model(
        tmp_path / "custom.onnx", [helper.make_node("Explain", ["input"], ["y"], domain="com.vendor")],
        [IMAGE], [value("y", TensorProto.FLOAT, ["N", 5])], domains=["com.vendor"]), "")
    del shape4
    # cards that disagree with the graph (the graph itself is fine)
    for name, card, word in (("card: a size the graph does not take", {"input": {"size": [224, 224]}}, "size"),
                             ("card: NHWC for an NCHW graph", {"input": {"layout": "NHWC"}}, "layout"),
                             ("card: uint8 for a float graph", {"input": {"dtype": "uint8"}}, "uint8"),
                             ("card: 3 labels for 5 classes", {"labels": ["a", "b", "c"]}, "labels"),
                             ("card: not JSON", None, "card")):
        stem = tmp_path / name.split(":")[1].strip().replace(" ", "_")
        shutil.copy(good, f"{stem}.onnx")
        with open(f"{stem}.json", "w") as f:
            f.write("{ not json" if card is None else json.dumps(card))
        out[name] = (f"{stem}.onnx", word)
    return out


CASES = ["truncated at 0 %", "truncated at 10 %", "truncated at 50 %", "truncated at 99 %", "bit flips 0",
         "bit flips 1", "bit flips 2", "bit flips 3", "text", "output [B, C, H, W]", "output [B]", "NaN outputs",
         "Inf outputs", "rank-5 input", "string input", "an op ONNX Runtime lacks",
         "card: a size the graph does not take", "card: NHWC for an NCHW graph", "card: uint8 for a float graph",
         "card: 3 labels for 5 classes", "card: not JSON"]


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_model_is_one_line_from_the_library(tmp_path, case):
    path, word = hostile_models(tmp_path)[case]
    with pytest.raises(InfolensError) as e:
        clf = OnnxClassifier.from_card(path)
        clf.predict(clf.normalize(clf.load_image(scene())[None]))
    line = str(e.value)
    assert line and "\n" not in line and word.lower() in line.lower(), line


@pytest.mark.slow
def test_hostile_models_are_one_line_each_from_the_cli(tmp_path):
    """Every case in one go: one `infolens: error:` line naming the model file, exit 2, no traceback."""
    image = tmp_path / "photo.png"
    import cv2

    cv2.imwrite(str(image), scene())
    failures = []
    for case, (path, word) in hostile_models(tmp_path).items():
        r = subprocess.run([sys.executable, "-m", "infolens", "explain", str(image), "--model", path, "--out",
                            str(tmp_path / "o"), "-K", "4", "--sampler", "gray", "-q"], capture_output=True,
                           text=True, timeout=120)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        ok = (r.returncode == 2 and len(lines) == 1 and lines[0].startswith("infolens: error:")
              and (os.path.basename(path) in lines[0] or os.path.basename(os.path.splitext(path)[0]) in lines[0])
              and word.lower() in lines[0].lower())
        if not ok:
            failures.append(f"{case}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    assert not failures, "\n".join(failures)
