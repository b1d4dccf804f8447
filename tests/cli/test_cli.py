"""The `infolens` command as a user runs it: outputs, bad input, the compiled module vs the numpy fallback."""
import json
import os

import cv2
import numpy as np
import pytest

import onnx_builders
from conftest import run_cli, scene

SMALL = ["-K", "4", "-S", "4", "-N", "2", "--quiet"]


def test_explain_writes_the_promised_files(tmp_path, image_file, model_file):
    out = tmp_path / "out"
    r = run_cli("explain", image_file, "--model", model_file, "--out", out, *SMALL, "--sampler", "noise",
                "--classes", "top2")
    assert r.returncode == 0, r.stderr
    z = np.load(out / "scene.npz")
    assert sorted(z.files) == ["classes", "ig", "ig_stderr", "image", "pmi", "pmi_stderr", "probs"]
    assert z["image"].dtype == np.uint8 and z["image"].shape == (17, 19, 3)
    assert z["pmi"].shape == (2, 17, 19) and z["pmi"].dtype == np.float32 and z["ig"].shape == (17, 19)
    assert z["pmi_stderr"].shape == (2, 17, 19) and z["ig_stderr"].shape == (17, 19)
    assert (z["pmi_stderr"] > 0).all() and (z["ig_stderr"] > 0).all()  # noise in-fills: real Monte-Carlo error
    np.testing.assert_array_equal(z["image"], scene())  # PNG round trip is lossless: the image that was explained
    meta = json.loads((out / "scene.json").read_text())
    assert meta["params"]["K"] == 4 and meta["params"]["S"] == 4 and meta["params"]["N"] == 2
    assert meta["params"]["sampler"] == "noise" and meta["params"]["batch_size"] == 64
    assert meta["model"]["mean"] == list(onnx_builders.MEAN) and meta["model"]["layout"] == "NCHW"
    assert meta["forwards"] == 1 + meta["params"]["positions"] * 2 and meta["timing"]["total_s"] > 0
    assert [c["index"] for c in meta["classes"]] == list(z["classes"])
    for c in z["classes"]:
        png = cv2.imread(str(out / f"scene_pmi_{c}.png"))
        assert png is not None and png.shape[0] > 17
    assert cv2.imread(str(out / "scene_ig.png")) is not None


@pytest.mark.slow
def test_the_default_sampler_uses_one_infill_and_says_so_when_more_are_asked(tmp_path, image_file, model_file):
    for flags, noted in (([], False), (["-N", "1"], False), (["-N", "2"], True), (["--target-se", "0.1"], True),
                         (["-N", "2", "--sampler", "noise"], False)):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        r = run_cli("explain", image_file, "--model", model_file, "--out", out, "-K", "4", *flags)
        assert r.returncode == 0, r.stderr
        assert ("the ring-mean sampler is deterministic: one in-fill per patch" in r.stderr) == noted, (flags, r.stderr)
        meta = json.loads((out / "scene.json").read_text())
        assert meta["params"]["sampler"] == ("noise" if "noise" in flags else "ring-mean")
        assert meta["forwards"] == 1 + meta["params"]["positions"] * (2 if "noise" in flags else 1)


@pytest.mark.slow
def test_compiled_module_and_numpy_fallback_give_identical_maps(tmp_path, image_file, model_file):
    from infolens import kernels

    if not kernels.USING_EXTENSION and os.environ.get("INFOLENS_REQUIRE_EXT") != "1":
        pytest.skip("compiled infolens._sampling not built")
    assert kernels.USING_EXTENSION, "INFOLENS_REQUIRE_EXT=1 but infolens._sampling did not import"
    ps = onnx_builders.patch_sampler(tmp_path / "ps.onnx", 4)
    results = {}
    for flag in ("0", "1"):
        out = tmp_path / f"o{flag}"
        r = run_cli("explain", image_file, "--model", model_file, "--sampler-model", ps, "--out", out, *SMALL,
                    "-S", "2", "--batch-size", "5", env={"INFOLENS_NO_EXT": flag})
        assert r.returncode == 0, r.stderr
        results[flag] = np.load(out / "scene.npz")
        meta = json.loads((out / "scene.json").read_text())
        assert meta["params"]["kernels"] == ("numpy" if flag == "1" else "c++")
    for k in ("pmi", "ig", "probs"):
        np.testing.assert_array_equal(results["0"][k], results["1"][k])


def _bad_files(tmp_path):
    jpg = tmp_path / "cut.jpg"
    cv2.imwrite(str(jpg), scene(64, 64))
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    png = tmp_path / "cut.png"
    cv2.imwrite(str(png), scene(64, 64))
    png.write_bytes(png.read_bytes()[:200])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    return {"missing": tmp_path / "nope.png", "empty": empty, "truncated jpeg": jpg, "truncated png": png,
            "not an image": text}


def _one_line_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "empty", "truncated jpeg", "truncated png", "not an image"])
def test_bad_image_one_line_exit_2(tmp_path, model_file, kind):
    path = _bad_files(tmp_path)[kind]
    line = _one_line_error(run_cli("explain", path, "--model", model_file, "--out", tmp_path / "o", *SMALL,
                                   "--sampler", "gray"))
    assert str(path) in line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_multi_image_call_still_explains_the_good_ones(tmp_path, image_file, model_file):
    bad = _bad_files(tmp_path)
    second = tmp_path / "second.png"
    cv2.imwrite(str(second), scene(seed=3))
    out = tmp_path / "o"
    r = run_cli("explain", bad["empty"], image_file, bad["truncated jpeg"], second, "--model", model_file,
                "--out", out, "--sampler", "gray", "-K", "4", "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("infolens: error:")]) == 2
    assert (out / "scene.npz").exists() and (out / "second.npz").exists()


def _models(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    flat = onnx_builders.classifier(tmp_path / "flat.onnx", rank=2)
    # output [N, 5, 2]: no single class axis
    g = helper.make_graph([helper.make_node("Reshape", ["input", "shp"], ["out"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 17, 19])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 323])],
                          [onnx.numpy_helper.from_array(np.array([-1, 3, 323], np.int64), "shp")])
    noclass = tmp_path / "noclass.onnx"
    onnx.save(helper.make_model(g, opset_imports=onnx_builders.OPSET, ir_version=10), str(noclass))
    return {"missing": tmp_path / "nope.onnx", "corrupt": corrupt, "rank 2 input": flat, "no class axis": noclass}


@pytest.mark.parametrize("kind,expect", [("missing", "not found"), ("corrupt", "cannot load"),
                                         ("rank 2 input", "rank 2"), ("no class axis", "class axis")])
def test_bad_model_one_line_exit_2(tmp_path, image_file, kind, expect):
    line = _one_line_error(run_cli("explain", image_file, "--model", _models(tmp_path)[kind], "--out",
                                   tmp_path / "o", *SMALL, "--sampler", "gray"))
    assert expect in line


@pytest.mark.parametrize("flags,expect", [
    (["-K", "0"], "-K"), (["-K", "40"], "larger than"), (["-S", "0"], "-S"), (["-S", "5"], "stride of 4 or less (-S)"), (["-N", "0"], "-N"),
    (["--classes", "5"], "out of range"), (["--classes", "-1"], "out of range"), (["--classes", "topx"], "--classes"),
    (["--batch-size", "0"], "--batch-size"), (["-K", "abc"], "-K"), (["--sampler", "magic"], "--sampler"),
    (["--mean", "1,2"], "--mean"), (["--card", "nope.json"], "--card"), (["--layout", "nchw", "--size", "20,20"], "--size")])
def test_bad_flags_one_line_exit_2(tmp_path, image_file, model_file, flags, expect):
    base = ["-K", "4", "-S", "4", "-N", "2", "--quiet", "--sampler", "gray"]
    line = _one_line_error(run_cli("explain", image_file, "--model", model_file, "--out", tmp_path / "o",
                                   *base, *flags))
    assert expect in line, line


@pytest.mark.slow
def test_does_not_overwrite_foreign_files(tmp_path, image_file, model_file):
    out = tmp_path / "o"
    out.mkdir()
    (out / "scene.npz").write_bytes(b"user data")
    args = ["explain", image_file, "--model", model_file, "--out", out, "--sampler", "gray", "-K", "4", "-q"]
    line = _one_line_error(run_cli(*args))
    assert "--overwrite" in line and (out / "scene.npz").read_bytes() == b"user data"
    assert run_cli(*args, "--overwrite").returncode == 0
    assert run_cli(*args).returncode == 0, "an earlier infolens result is replaced without asking"


def test_fixed_batch_models(tmp_path, image_file, model_file):
    """A batch fixed to 1 by accident is relaxed; one fixed inside the graph (Reshape) falls back to single calls."""
    from infolens import Explainer, OnnxClassifier, load_sampler
    from conftest import write_card

    ref = Explainer(OnnxClassifier.from_card(model_file), load_sampler("noise", K=4), batch_size=8).explain(
        image_file, stride=3, samples=2)
    for name, kw, limit in [("fixed", {"batch": 1}, None), ("hard", {"batch": 1, "reshape_batch": 1}, 1)]:
        path = onnx_builders.classifier(tmp_path / f"{name}.onnx", **kw)
        write_card(path, "NCHW", "RGB", "float32")
        clf = OnnxClassifier.from_card(path)
        assert clf.batch_limit == limit
        got = Explainer(clf, load_sampler("noise", K=4), batch_size=8).explain(image_file, stride=3, samples=2)
        np.testing.assert_allclose(got.pmi, ref.pmi, rtol=1e-5, atol=1e-6)


def test_labels_from_onnx_metadata(tmp_path):
    from infolens import OnnxClassifier

    names = ["ant", "bee", "cat", "dog", "eel"]
    path = onnx_builders.classifier(tmp_path / "m.onnx", metadata={"names": str(dict(enumerate(names)))})
    assert OnnxClassifier(path).labels == names
    path = onnx_builders.classifier(tmp_path / "j.onnx", metadata={"labels": json.dumps(names)})
    assert OnnxClassifier(path).labels == names


def test_models_lists_shipped_cards():
    r = run_cli("models")
    assert r.returncode == 0
    assert "efficientnet_lite0.onnx" in r.stdout and "patchsampler_k8.onnx" in r.stdout
    block = r.stdout.split("patchsampler_k8.onnx", 1)[1].split("\n")[1]
    assert block.strip().startswith("K=8 logistic_mixture head, M=5 T=2; held-out NLL 3.")
    assert "K=8 categorical head, width 64" in r.stdout  # the first PatchSampler, kept beside


def test_help_teaches():
    r = run_cli("explain", "--help")
    assert r.returncode == 0 and "PMI" in r.stdout and "--sampler" in r.stdout and "examples:" in r.stdout


def test_cuda_without_cuda_provider_is_a_one_line_error(tmp_path, image_file, model_file):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the error path does not apply")
    line = _one_line_error(run_cli("explain", image_file, "--model", model_file, "--device", "cuda",
                                   "--out", tmp_path / "o", *SMALL, "--sampler", "gray"))
    assert "infolens[gpu]" in line


def test_runtime_never_imports_torch(tmp_path, image_file, model_file):
    import subprocess
    import sys

    code = ("import sys; from infolens import cli, perf, methods, samplers, classifier; "
            f"rc = cli.main(['explain', {image_file!r}, '--model', {model_file!r}, '--out', {str(tmp_path)!r}, "
            "'-K', '4', '--sampler', 'gaussian', '-q']); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
