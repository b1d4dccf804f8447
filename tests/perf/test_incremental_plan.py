"""Incremental-inference plans against brute force: the full model run on a photo and on a copy with one patch
replaced, every intermediate tensor compared — nothing outside a tensor's predicted box may differ, and the box is
tight on the spatial axes (within one element of the differing elements' bounding box)."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import onnx_builders
from conftest import REPO
from infolens.perf.incremental import Graph

H, W, K = 20, 22, 4


def tapped(path):
    """A session whose outputs are every node's first output: name → array, per run."""
    model = onnx.load(path)
    names = [n.output[0] for n in model.graph.node]
    del model.graph.output[:]
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every node's tensor as written
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: dict(zip(names, session.run(None, {session.get_inputs()[0].name: x})))


def perturbed(photo, y, x, k, spatial, seed):
    out = photo.copy()
    index = [slice(None)] * photo.ndim
    index[spatial[0]], index[spatial[1]] = slice(y, y + k), slice(x, x + k)
    patch = out[tuple(index)]
    out[tuple(index)] = np.random.default_rng(seed).normal(0, 1, patch.shape).astype(np.float32)
    return out


def check_boxes(graph, run, photo, y, x, k, tight=True):
    before = run(photo)
    after = run(perturbed(photo, y, x, k, graph.spatial, seed=y * 100 + x))
    plan = graph.plan(y, x, k)
    for name, a in before.items():
        box = plan.boxes[name]
        differs = np.argwhere(a != after[name])
        if box is None:
            assert differs.size == 0, f"{name}: predicted unchanged, {len(differs)} elements differ"
            continue
        if differs.size == 0:
            continue  # e.g. a ReLU that was off on both
        lo, hi = differs.min(0), differs.max(0) + 1
        for axis, (b_lo, b_hi) in enumerate(box):
            assert b_lo <= lo[axis] and hi[axis] <= b_hi, f"{name} axis {axis}: differs in {lo[axis]}..{hi[axis]}, " \
                                                         f"box {b_lo}..{b_hi} at patch ({y}, {x})"
            if tight and a.ndim == 4 and axis >= 2:  # the spatial axes (a changed pixel reaches every channel)
                assert b_lo >= lo[axis] - 1 and b_hi <= hi[axis] + 1, \
                    f"{name} axis {axis}: box {b_lo}..{b_hi} is loose around {lo[axis]}..{hi[axis]} at ({y}, {x})"
    return plan


CORNERS_EDGES_CENTRE = [(0, 0), (0, W - K), (H - K, 0), (H - K, W - K), (0, 9), (8, 0), (8, 9), (H - K, 9),
                        (8, W - K)]


@pytest.mark.parametrize("variant", ["residual", "nhwc", "se", "unsupported"])
def test_every_tensors_box_holds_what_changes_and_no_more(tmp_path, variant):
    path = onnx_builders.cnn(tmp_path / f"{variant}.onnx", variant, H, W)
    spatial = (1, 2) if variant == "nhwc" else (2, 3)
    graph = Graph(path, spatial=spatial)
    run = tapped(path)
    shape = (1, H, W, 3) if variant == "nhwc" else (1, 3, H, W)
    photo = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    for y, x in CORNERS_EDGES_CENTRE:
        # an op the plans do not know changes all of its output: safe, not tight
        plan = check_boxes(graph, run, photo, y, x, K, tight=variant != "unsupported")
        assert plan.unsupported == ("DepthToSpace" if variant == "unsupported" else None)
        assert 0 < plan.macs < plan.macs_full


def test_a_gate_over_the_whole_map_ends_the_incremental_part_there(tmp_path):
    graph = Graph(onnx_builders.cnn(tmp_path / "se.onnx", "se", H, W))
    plan = graph.plan(8, 9, K)
    mul = next(layer for layer in plan.layers if layer.op == "Mul")
    assert mul.share == 1.0 and not mul.incremental and plan.cut == next(
        i for i, layer in enumerate(plan.layers) if layer.op == "GlobalAveragePool")


@pytest.mark.slow
@pytest.mark.parametrize("where", [(0, 0), (108, 108), (216, 100)])
def test_the_shipped_classifiers_boxes(where):
    path = os.path.join(REPO, "models", "efficientnet_lite0.onnx")
    photo = np.random.default_rng(2).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    plan = check_boxes(Graph(path), tapped(path), photo, *where, 8)
    assert plan.unsupported is None and 1.4 < plan.macs_full / plan.macs < 2.5


def test_perf_prints_the_plan_per_layer_and_refuses_a_missing_model(tmp_path):
    from conftest import run_cli

    path = onnx_builders.cnn(tmp_path / "residual.onnx", "residual", H, W)
    r = run_cli("perf", "--incremental-plan", path, "-K", K, "-S", 2)
    assert r.returncode == 0, r.stderr
    graph = Graph(path)
    plans = [graph.plan(y, x, K) for y in range(0, H - K + 1, 2) for x in range(0, W - K + 1, 2)]
    ratio = plans[0].macs_full / np.mean([p.macs for p in plans])
    assert f"→ {ratio:.2f}× fewer" in r.stdout, r.stdout
    rows = [line for line in r.stdout.splitlines() if line.startswith("| conv")]
    assert len(rows) == sum(1 for n in onnx.load(path).graph.node if n.op_type == "Conv"), r.stdout
    r = run_cli("perf", "--incremental-plan", tmp_path / "nothing.onnx")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--incremental-plan" in r.stderr, r.stderr
