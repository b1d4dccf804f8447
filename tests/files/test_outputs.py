"""Output problems found before any computation, atomic writes, one run per result at a time, duplicates once."""
import json
import os
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import scene
from infolens import Explainer, OnnxClassifier, load_sampler
from infolens.errors import InfolensError
from infolens.outfiles import result_lock


def explain(*args, cwd=None):
    cmd = [sys.executable, "-m", "infolens", "explain", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def fast(model_file):
    """Flags for a quick explanation of the small test model."""
    return ["--model", model_file, "-K", "4", "-S", "4", "-N", "2", "--sampler", "noise", "--no-png"]


def one_line_error(r, flag):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("infolens: error")]
    assert lines and lines[0].endswith(f"({flag})"), r.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["file", "under_file", "proc"])
def test_bad_out_is_an_error_before_anything_else(tmp_path, image_file, where):
    """Checked before the model is even opened: a missing model would be the error otherwise."""
    target = {"file": tmp_path / "taken", "under_file": tmp_path / "taken" / "sub", "proc": "/proc/infolens-out"}[where]
    (tmp_path / "taken").write_text("precious")
    r = explain(image_file, "--model", tmp_path / "missing.onnx", "--out", target)
    line = one_line_error(r, "--out")
    assert "missing.onnx" not in r.stderr and str(target) in line
    assert (tmp_path / "taken").read_text() == "precious"


def test_foreign_files_are_refused_before_computing(tmp_path, image_file, fast):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene_ig.png").write_bytes(b"someone else's")
    r = explain(image_file, *fast, "--out", out)
    assert "scene_ig.png exists and was not written by infolens" in one_line_error(r, "--overwrite")
    assert sorted(os.listdir(out)) == ["scene_ig.png"]
    assert (out / "scene_ig.png").read_bytes() == b"someone else's"


def test_files_are_replaced_atomically_and_a_failed_write_keeps_the_old_result(tmp_path, model_file):
    e = Explainer(OnnxClassifier.from_card(model_file), load_sampler("gray", K=4)).explain(scene(), stride=4)
    out = tmp_path / "out"
    files = e.save(str(out), "x")
    before = {k: open(v, "rb").read() for k, v in files.items()}
    os.remove(files["ig"])
    os.mkdir(files["ig"])  # a folder where a PNG must go: its rename fails midway through the save
    with pytest.raises(InfolensError, match="cannot write the results") as err:
        e.save(str(out), "x")
    assert err.value.param == "out"
    for k in ("npz", "json"):
        assert open(files[k], "rb").read() == before[k], f"{k} must be the complete old file"
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")], "temporary files must not be left behind"
    os.rmdir(files["ig"])
    assert sorted(e.save(str(out), "x")) == sorted(files)


@pytest.mark.slow
def test_a_result_being_written_by_another_run_is_refused_and_the_rest_finish(tmp_path, image_file, fast):
    out = tmp_path / "out"
    out.mkdir()
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), scene(seed=3)[:, :, ::-1])
    with result_lock(str(out), "scene"):
        r = explain(image_file, other, *fast, "--out", out)
    line = one_line_error(r, "--out")
    assert f"being written by another infolens run (process {os.getpid()})" in line
    assert sorted(os.listdir(out)) == ["other.json", "other.npz"]


@pytest.mark.slow
def test_a_crashed_run_does_not_block_the_next(tmp_path, image_file, fast):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from infolens.outfiles import result_lock\n"
                               "with result_lock(sys.argv[1], 'scene'):\n print('held', flush=True); time.sleep(60)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    r = explain(image_file, *fast, "--out", out)
    assert r.returncode == 0, r.stderr
    assert {"scene.json", "scene.npz"} <= set(os.listdir(out))


@pytest.mark.slow
def test_two_runs_at_once_never_lose_a_result_silently(tmp_path, image_file, fast):
    """Both write scene.*: each either finishes (exit 0) or says the other run has it (exit 2), and the files on
    disk are one complete result."""
    out = tmp_path / "out"
    runs = [subprocess.Popen([sys.executable, "-m", "infolens", "explain", image_file, *fast, "-N", "8", "--out",
                              str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in runs]
    for code, err in results:
        assert code == 0 or (code == 2 and "being written by another infolens run" in err), err
    assert any(code == 0 for code, _ in results)
    with np.load(out / "scene.npz") as z:
        assert z["pmi"].shape[1:] == scene().shape[:2]


def test_the_same_image_twice_is_explained_once(tmp_path, image_file, fast):
    out = tmp_path / "out"
    copy = tmp_path / "copy.png"
    shutil.copy(image_file, copy)
    r = explain(image_file, image_file, copy, *fast, "--out", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" forwards in ") == 2  # the repeated path is skipped; the copy gets its own files
    assert "given more than once; explained once" in r.stderr
    assert "same file content as" in r.stderr and "reused" in r.stderr
    with np.load(out / "scene.npz") as a, np.load(out / "copy.npz") as b:
        np.testing.assert_array_equal(a["pmi"], b["pmi"])


def test_progress_in_a_log_is_lines_counting_the_same_forwards_as_the_summary(tmp_path, image_file, fast):
    """stderr to a pipe (as in a service or CI log): whole lines, no carriage returns, and the last line's count is
    the explanation's forwards, p(Y|x) included."""
    env = dict(os.environ, INFOLENS_PROGRESS_SECONDS="0")
    r = subprocess.run([sys.executable, "-m", "infolens", "explain", image_file, *fast, "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("scene.png: ")]
    assert len(lines) >= 2
    done, total = lines[-1].split(": ")[1].split(" ")[0].split("/")
    forwards = json.loads((tmp_path / "o" / "scene.json").read_text())["forwards"]
    assert int(done) == int(total) == forwards
    assert f"{forwards} forwards in" in r.stdout


def test_onnx_runtime_warnings_stay_out_of_our_stderr(tmp_path, image_file, fast):
    """A graph whose declared output shape is wrong: ONNX Runtime logs a coloured VerifyOutputSizes warning on every
    run unless its log level is lowered; ours is the only voice on stderr."""
    import onnx

    import onnx_builders

    path = onnx_builders.classifier(tmp_path / "odd.onnx")
    model = onnx.load(path)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7  # it computes 5 classes
    onnx.save(model, path)
    flags = [f if f != fast[1] else path for f in fast]
    r = explain(image_file, *flags, "--mean", "120,110,100", "--std", "60,50,40", "--resize", "none", "--out",
                tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert "VerifyOutputSizes" not in r.stderr and "\x1b[" not in r.stderr, r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["deletion", "negative", "sanity", "suite"])
def test_eval_commands_check_where_they_write_before_computing(tmp_path, model_file, image_file, command):
    e = Explainer(OnnxClassifier.from_card(model_file), load_sampler("gray", K=4)).explain(image_file, stride=4)
    e.save(str(tmp_path / "ex"), "scene", render=False)
    (tmp_path / "taken").write_text("precious")
    bad = str(tmp_path / "taken" / "sub")
    npz = str(tmp_path / "ex" / "scene.npz")
    args = {"deletion": ["deletion", npz, "--json", bad + "/r.json"],
            "negative": ["negative", npz, "--out", bad],
            "sanity": ["sanity", image_file, "--model", tmp_path / "missing.onnx", "--out", bad],
            "suite": ["suite", image_file, "--model", tmp_path / "missing.onnx", "--out", bad]}[command]
    r = subprocess.run([sys.executable, "-m", "infolens", "eval", *map(str, args)], capture_output=True, text=True)
    line = one_line_error(r, "--json" if command == "deletion" else "--out")
    assert "missing.onnx" not in line and (tmp_path / "taken").read_text() == "precious"


def test_a_failed_write_touches_no_file_of_the_set(tmp_path):
    """write_all_atomic: every file is written to a temporary name before any is renamed, so a write that fails
    (here the second) leaves the earlier files of the set as they were and no temporary file behind."""
    from infolens import outfiles

    a, b = tmp_path / "r.npz", tmp_path / "r.json"
    a.write_bytes(b"old npz")
    b.write_bytes(b"old json")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        outfiles.write_all_atomic([(str(a), lambda f: f.write(b"new npz")), (str(b), fail)])
    assert a.read_bytes() == b"old npz" and b.read_bytes() == b"old json"
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.npz"]
    outfiles.write_all_atomic([(str(a), lambda f: f.write(b"new npz")), (str(b), lambda f: f.write(b"new json"))])
    assert a.read_bytes() == b"new npz" and b.read_bytes() == b"new json"
