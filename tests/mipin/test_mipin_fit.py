"""MIP-IN fitted on a small residual CNN built in the test: the runtime's maps equal a direct numpy computation of
the same masked linear inverse, from the fitted parameters; fits are reproducible; the explain route works."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from conftest import REPO
from infolens import Explainer, OnnxClassifier, Preprocessing
from infolens.errors import InfolensError
from infolens.mipin.fit import Fitter, fit, save
from infolens.mipin.part import for_classifier, taps
from test_mipin_part import small_cnn

ROOT = REPO


def crops(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (5, 5), 2)
                     for _ in range(n)])


@pytest.fixture
def cnn(tmp_path):
    path = str(tmp_path / "cnn.onnx")
    small_cnn(path)
    return OnnxClassifier(path, Preprocessing(resize="none", scale=1 / 255))


def conv_transpose(s, w, geom):
    """ConvTranspose written out: s [C_out, h, w], w [C_out, C_in / group, kh, kw] → [C_in, H, W]."""
    (sy, sx), (pt, pl, pb, pr), (dy, dx) = geom["strides"], geom["pads"], geom["dilations"]
    group = geom["group"]
    c_out, fi, kh, kw = w.shape
    h, wd = s.shape[1:]
    H = (h - 1) * sy - pt - pb + (kh - 1) * dy + 1 + geom["output_padding"][0]
    W = (wd - 1) * sx - pl - pr + (kw - 1) * dx + 1 + geom["output_padding"][1]
    full = np.zeros((fi * group, H + pt + pb + kh * dy, W + pl + pr + kw * dx))
    fo = c_out // group
    for co in range(c_out):
        g = co // fo
        for ky in range(kh):
            for kx in range(kw):
                for ci in range(fi):
                    full[g * fi + ci, ky * dy:ky * dy + (h - 1) * sy + 1:sy, kx * dx:kx * dx + (wd - 1) * sx + 1:sx] += \
                        w[co, ci, ky, kx] * s[co]
    return full[:, pt:pt + H, pl:pl + W]


def numpy_maps(f: Fitter, tapped_out: dict, classes):
    """The masked linear inverse from the fitter's plan, for one image's taps, in plain numpy."""
    part = f.part
    readers = {n.output[0]: n for n in part.nodes}
    maps = []
    for c in classes:
        y = tapped_out[part.logits][0].astype(np.float64)
        signal = {part.logits: np.where(np.arange(len(y)) == c, y - f.acts.mu[part.logits], 0.0)}
        for step in f.plan:
            t, shape = step["tensor"], step["shape"][1:]
            total = np.zeros(shape)
            for out in step["free"]:
                n, s = readers[out], signal[out]
                if n.op_type in ("Relu", "Clip"):
                    total += s * (tapped_out[out][0] > 0)
                elif n.op_type in ("GlobalAveragePool",):
                    total += np.broadcast_to(s.reshape(-1, 1, 1), shape)
                elif n.op_type == "MaxPool":
                    flat = np.zeros(int(np.prod(shape)))
                    flat[tapped_out[f.indices[out]][0].reshape(-1)] += s.reshape(-1)
                    total += flat.reshape(shape)
                else:  # reshapes
                    total += s.reshape(shape)
            for p in step["param"]:
                s = signal[p["reader"]]
                if p["kind"] == "dense":
                    total += (s.reshape(-1) @ p["theta"]).reshape(shape) if p["rank"] == 2 else \
                        np.einsum("ohw,oi->ihw", s, p["theta"])
                else:
                    total += conv_transpose(s, p["weight"], p["geom"])
            signal[t] = total
        x = tapped_out[part.map_tensor][0] - f.acts.mu[part.map_tensor]
        maps.append((signal[part.map_tensor] * x).sum(0))
    return np.stack(maps)


@pytest.mark.parametrize("map_layer,depthwise", [(None, None), ("r1", None), ("r1", 1), ("r1", 2)])
def test_runtime_maps_equal_a_numpy_computation_of_the_fitted_inverse(tmp_path, map_layer, depthwise):
    path = str(tmp_path / "cnn.onnx")
    small_cnn(path, depthwise_stride=depthwise)
    cnn = OnnxClassifier(path, Preprocessing(resize="none", scale=1 / 255))
    model, part = for_classifier(cnn, map_layer)
    f = Fitter(cnn, part, crops(), progress=False, workdir=str(tmp_path))
    f.fit()
    inverse = f.export()
    if map_layer == "r1":  # the residual block, the max-pool and a 3x3 conv are inverted
        assert {n.op_type for n in inverse.graph.node} >= {"MaxUnpool", "ConvTranspose", "Conv", "MatMul"}
    groups = [a.i for n in inverse.graph.node for a in n.attribute if n.op_type == "Conv" and a.name == "group"]
    assert (8 in groups) == (depthwise == 1), "a depthwise inverse of stride 1 runs as the Conv it equals"
    image = crops(1, seed=9)[0]
    tapped, _ = taps(model, part)
    names = [o.name for o in tapped.graph.output]
    out = dict(zip(names, ort.InferenceSession(tapped.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": cnn.normalize(image[None])})))
    classes = [0, 3]
    session = ort.InferenceSession(inverse.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: out[i.name] for i in session.get_inputs() if i.name != "classes"}
    got = session.run(["maps"], {**feeds, "classes": np.array(classes, np.int64)})[0]
    want = numpy_maps(f, out, classes)
    assert got.shape == want.shape == (2, *f.acts.shapes[part.map_tensor][2:])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert np.abs(want[0] - want[1]).max() > 1e-3 * np.abs(want).max(), "two classes, two maps"
    # linear in the class signal: the classes' maps sum to the map of the whole centred logit vector
    all_maps = session.run(["maps"], {**feeds, "classes": np.arange(5, dtype=np.int64)})[0]
    np.testing.assert_allclose(all_maps[classes], got, rtol=1e-5, atol=1e-6)


def test_fits_are_reproducible_and_report_held_out_r2(cnn):
    _, part = for_classifier(cnn, "r1")
    a, rec_a = fit(cnn, part, crops(), seed=1, progress=False)
    b, rec_b = fit(cnn, part, crops(), seed=1, progress=False)
    assert a.SerializeToString() == b.SerializeToString()
    assert set(rec_a["r2"]) == {"flat", "r2", "mp"} and rec_a["r2"] == rec_b["r2"]
    assert rec_a["r2"]["flat"] > 0.5  # the pooled features from 5 logits: mostly recoverable
    c, _ = fit(cnn, part, crops(), seed=2, progress=False)
    assert c.SerializeToString() != a.SerializeToString(), "another held-out split, another fit"


def test_explain_with_mipin_one_forward(tmp_path, cnn):
    _, part = for_classifier(cnn, "r1")
    model, record = fit(cnn, part, crops(), progress=False)
    inverse = str(tmp_path / "cnn.mipin.onnx")
    card = save(model, record, cnn, inverse)
    assert card["classifier_sha256"] and card["map_layer"] == "r1"
    ex = Explainer(cnn, inverse=inverse)
    e = ex.explain(crops(1, seed=5)[0], classes="top2", method="mipin")
    assert e.maps["mipin"].shape == (2, 32, 32) and e.forwards == 1
    again = ex.explain(crops(1, seed=5)[0], classes="top2", method="mipin")
    np.testing.assert_array_equal(again.maps["mipin"], e.maps["mipin"])
    files = e.save(str(tmp_path / "out"), "x")
    assert json.loads(open(files["json"]).read())["maps"]["mipin"]["unit"] == "activation²"
    import onnx

    changed = onnx.load(cnn.model_path)
    changed.doc_string = "another model"  # any change of the file: another sha256
    onnx.save(changed, str(tmp_path / "changed.onnx"))
    with pytest.raises(InfolensError, match="fitted for another classifier") as err:
        Explainer(OnnxClassifier(str(tmp_path / "changed.onnx"), Preprocessing(resize="none", scale=1 / 255)),
                  inverse=inverse).explain(crops(1)[0], method="mipin")
    assert err.value.param == "inverse"
    renamed = str(tmp_path / "my_inverse.bin")  # an inverse under any name: its card is my_inverse.json
    save(model, record, cnn, renamed)
    assert os.path.isfile(tmp_path / "my_inverse.json")
    again = Explainer(cnn, inverse=renamed).explain(crops(1, seed=5)[0], classes="top2", method="mipin")
    np.testing.assert_array_equal(again.maps["mipin"], e.maps["mipin"])


@pytest.mark.slow
def test_mipin_fit_command_writes_the_inverse_and_card_beside_the_model(tmp_path, cnn):
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    for i, img in enumerate(crops(6, seed=3)):
        cv2.imwrite(str(photos / f"p{i}.png"), cv2.resize(img, (48, 40)))
    cmd = [sys.executable, "-m", "infolens", "mipin", "fit", cnn.model_path, "--data", str(tmp_path / "photos"),
           "--crops", "24", "--map-layer", "r1", "--resize", "shorter-side-crop", "--scale", str(1 / 255), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "cnn.mipin.json").read_text())
    assert card["map_layer"] == "r1" and card["crops"] == 24 and card["photos"] == 6 and set(card["r2"]) == {
        "flat", "r2", "mp"}
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.rstrip().endswith("(--overwrite)")
    r = subprocess.run([sys.executable, "-m", "infolens", "explain", str(photos / "p0.png"), "--model", cnn.model_path,
                        "--resize", "shorter-side-crop", "--scale", str(1 / 255), "--method", "mipin", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 forwards in" in r.stdout
    bad = subprocess.run(cmd[:5] + ["--data", str(tmp_path / "none"), "--overwrite", "-q"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.rstrip().endswith("(--data)")


def test_shipped_inverse_explains_the_shipped_classifier_in_one_forward(tmp_path):
    e = Explainer(OnnxClassifier.from_card()).explain(
        cv2.cvtColor(cv2.imread(os.path.join(ROOT, "examples", "chelsea.png")), cv2.COLOR_BGR2RGB), method="mipin")
    assert e.forwards == 1 and e.maps["mipin"].shape == (3, 224, 224)
    assert e.params["map_shape"] == [14, 14]
    # the three top classes get different maps; the top class's map is positive where the cat's face is
    m = e.maps["mipin"]
    assert np.corrcoef(m[0].ravel(), m[1].ravel())[0, 1] < 0.95
    assert m[0, 60:160, 60:160].mean() > m[0].mean()


def test_qdq_quantized_model_is_inverted_on_its_dequantized_tensors(tmp_path):
    """ONNX Runtime's own QDQ quantization of the residual CNN: the walk passes Q/DQ pairs, the map layer is a
    dequantized tensor, the int8 weights (DequantizeLinear of constants) are constants, and the exported inverse
    still equals the numpy computation."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": (c.transpose(2, 0, 1)[None] / 255).astype(np.float32)} for c in crops(8)])

        def get_next(self):
            return next(self.items, None)

    small_cnn(str(tmp_path / "float.onnx"), depthwise_stride=1)
    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "q.onnx"), Calibration(),
                    quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8)
    clf = OnnxClassifier(str(tmp_path / "q.onnx"), Preprocessing(resize="none", scale=1 / 255))
    model, part = for_classifier(clf, "r1_DequantizeLinear_Output")  # down through the residual block and pool
    assert {"QuantizeLinear", "DequantizeLinear", "MaxPool", "Add"} <= {n.op_type for n in part.nodes}
    assert for_classifier(clf)[1].map_tensor.endswith("DequantizeLinear_Output")
    f = Fitter(clf, part, crops(), progress=False, workdir=str(tmp_path))
    f.fit()
    inverse = f.export()
    tapped, _ = taps(model, part)
    names = [o.name for o in tapped.graph.output]
    image = crops(1, seed=9)[0]
    out = dict(zip(names, ort.InferenceSession(tapped.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": clf.normalize(image[None])})))
    session = ort.InferenceSession(inverse.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: out[i.name] for i in session.get_inputs() if i.name != "classes"}
    got = session.run(["maps"], {**feeds, "classes": np.array([1, 4], np.int64)})[0]
    np.testing.assert_allclose(got, numpy_maps(f, out, [1, 4]), rtol=1e-4, atol=1e-4 * np.abs(got).max())
