"""`infolens perf`, the throughput benchmark: its modes run and report what they claim (the numbers themselves live in
docs/benchmark, measured, not in tests)."""
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import onnx_builders
from conftest import run_cli, scene, write_card
from infolens.errors import InfolensError
from infolens.methods import patch_grid
from infolens.perf.resnet50 import resnet50
from infolens.perf.throughput import parse_config, stride_for


def test_perf_configs_parse_and_refuse():
    assert parse_config("cuda+fp16+graph+trt") == {"device": "cuda", "fp16": True, "cuda_graph": True,
                                                   "provider": "tensorrt"}
    assert parse_config("cpu") == {"device": "cpu", "fp16": False, "cuda_graph": False, "provider": "default"}
    for bad in ("gpu", "cpu+fast"):
        with pytest.raises(InfolensError):
            parse_config(bad)


def test_the_perf_resnet50_is_a_resnet50():
    model = resnet50(width=4, classes=10)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 53 and sum(n.op_type == "Add" for n in model.graph.node) == 16
    assert sum(np.prod(i.dims) for i in model.graph.initializer if i.name.startswith("w")) > 0
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"input": np.random.default_rng(0).standard_normal((2, 3, 224, 224), np.float32)})[0]
    assert y.shape == (2, 10) and np.all(np.isfinite(y)) and np.allclose(y.sum(1), 1, atol=1e-5)


@pytest.mark.slow
def test_perf_table_and_agreement_run_on_the_cpu(tmp_path):
    path = onnx_builders.classifier(tmp_path / "tiny.onnx", H=24, W=24, n_classes=10)
    r = run_cli("perf", "--table", "--models", path, "--batches", "8", "--seconds", "0.2", "--configs",
                "cpu,cpu+fp16,cpu+graph", "--fp16-tolerance", "10")  # a toy model: its runner-up classes p < 10⁻⁴
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "tiny" in line]
    assert len(rows) == 3 and "CUDA graphs need device cuda" in rows[2], r.stdout
    for row in rows[:2]:
        raw, e2e, ratio = (float(c.replace(",", "")) for c in row.strip("|").split("|")[3:6])
        assert raw > 0 and e2e > 0 and ratio == pytest.approx(e2e / raw, rel=0.02)
    img = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(img), scene(24, 24))
    r = run_cli("perf", "--agreement", img, "--model", path, "--configs", "cpu,cpu+fp16", "--fp16-tolerance", "10")
    assert r.returncode == 0, r.stderr
    rows = [line.strip("|").split("|") for line in r.stdout.splitlines() if line.startswith("| a.png")]
    assert [c.strip() for c in rows[0][2:]] == ["0.00e+00", rows[0][3].strip(), "1.000000", "0.00e+00", "1.000000",
                                                "yes"]
    assert 0 < float(rows[1][2]) < float(rows[1][3]) and rows[1][7].strip() == "yes"


def test_the_perf_stride_counts_the_border_aligned_positions():
    # at S = 5 the grid has 42 offsets per axis and the border-aligned 43rd: 1,849 positions, over a budget of 1,800
    assert len(patch_grid(224, 224, 16, 5)[0]) == 43 * 43
    S = stride_for(1800, (224, 224), 16, 1)
    assert S == 6 and len(patch_grid(224, 224, 16, S)[0]) <= 1800


@pytest.mark.slow
def test_infolens_perf_method_mipin_reports_a_ratio():
    r = subprocess.run([sys.executable, "-m", "infolens", "perf", "--method", "mipin", "--rounds", "1",
                        "--batch-size", "8"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ratio = [ln for ln in r.stdout.splitlines() if ln.startswith("ratio")]
    assert ratio and 0 < float(ratio[0].split()[1]) < 10
    bad = subprocess.run([sys.executable, "-m", "infolens", "perf", "--method", "nope"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


@pytest.mark.slow
def test_perf_startup_times_the_short_job_in_a_fresh_process(tmp_path):
    path = onnx_builders.classifier(tmp_path / "tiny.onnx", H=24, W=24, n_classes=10)
    write_card(path, "NCHW", "RGB", "float32")
    r = run_cli("perf", "--startup", "--model", path, "--sampler", "noise", "-K", "4", "-S", "4", "-N", "2",
                "--rounds", "1", "--batch-size", "8")
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0] + (" " + ln.split()[1] if ln.startswith(("raw", "wall", "fixed", "short")) else ""): ln
             for ln in r.stdout.splitlines() if ln.strip()}
    assert "73 forwards" in lines["short job"]  # 6 × 6 positions × 2 in-fills + p(Y|x)
    wall = float(lines["wall clock"].split()[2])
    inside = float(lines["inside"].split()[1])
    fixed = lines["fixed cost"].split()
    assert 0 < inside < wall and float(fixed[2]) == pytest.approx(wall - inside, abs=0.011)
    assert "import infolens" in lines["fixed cost"] and "opening the sessions" in lines["fixed cost"]
    r = run_cli("perf", "--startup", "--model", path, "--image", tmp_path / "missing.png", "--rounds", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.png" in r.stderr, r.stderr


@pytest.mark.slow
def test_bench_is_perfs_former_name(tmp_path):
    r = run_cli("bench", "--method", "mipin", "--rounds", "1", "--batch-size", "8")
    assert r.returncode == 0 and "`infolens bench` is now `infolens perf`" in r.stderr
    r = subprocess.run([sys.executable, "-m", "infolens.perf", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--startup" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["off", "on"])
def test_perf_rss_explains_once_per_stride_in_a_fresh_process(tmp_path, mode):
    """`--rss`: one row per stride, the positions and forwards of that stride's explanation and its peak memory,
    with the explanation's incremental mode."""
    path = onnx_builders.cnn(tmp_path / "cnn.onnx", "residual", 20, 22)
    write_card(path, "NCHW", "RGB", "float32", kind="probs")
    r = run_cli("perf", "--rss", 4, 2, "--model", path, "-K", 4, "-N", 1, "--sampler", "noise", "--incremental", mode)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"incremental {mode}" in lines[0], r.stdout
    rows = [line.split() for line in lines[2:]]
    want = {S: len(patch_grid(20, 22, 4, S)[0]) for S in (4, 2)}
    assert [(int(S), int(n), int(f)) for S, n, f, _, _ in rows] == [(S, n, n + 1) for S, n in want.items()], r.stdout
    assert all(float(mb) > 0 for *_, mb in rows)
