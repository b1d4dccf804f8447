"""Exact incremental inference: one graph for the patch positions that share a cut, fed the patch's in-fills, the photo's activations
and the position's offsets, gives the full forward's output on the perturbed copies — on test CNNs with every op
kind the plans know (and one they do not, which runs in full), at the corners, the edges and the centre, and on the
shipped classifier."""
import math
import os

import numpy as np
import onnxruntime as ort
import pytest

import onnx_builders
from conftest import REPO
from infolens.backends.incremental import Incremental

H, W, K = 20, 22, 4
POSITIONS = [(0, 0), (0, W - K), (H - K, 0), (H - K, W - K), (0, 9), (8, 0), (8, 9), (H - K, 9), (8, W - K), (8, 13), (4, 5)]


def check(path, photo, spatial, positions, k, B=3, tol=1e-5, threshold=0.5, plain=False):
    """One graph for all `positions`; the positions of one key run together, B perturbed copies each, in one run:
    the full forward's output on every copy.  plain: every session without graph optimizations (ONNX's semantics
    of each op, not ONNX Runtime's fused kernels)."""
    ex = Incremental(path, k, positions, spatial, threshold)
    so = ort.SessionOptions()
    if plain:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    acts = ex.tap(photo, lambda model: ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]))
    sessions = {cut: ort.InferenceSession(g[0].SerializeToString(), so, providers=["CPUExecutionProvider"])
                for cut, g in ex.graphs.items()}
    full = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    fed = full.get_inputs()[0].name
    keys: dict = {}
    for y, x in positions:
        keys.setdefault(ex.position(y, x).key, []).append((y, x))
    for key, group in keys.items():
        where, patches, want = [], [], []
        for y, x in group:
            box = ex.position(y, x).box
            copies = np.repeat(photo, B, 0)
            at = (slice(None),) + tuple(slice(lo, hi) for lo, hi in box[1:])
            copies[at] = np.random.default_rng(y * 31 + x).normal(0, 1, copies[at].shape)
            want.append(np.concatenate([full.run(None, {fed: c[None]})[0] for c in copies]))  # test CNNs: batch 1
            patches.append(copies[at])
            where += [(y, x)] * B
        want = np.concatenate(want)
        got = sessions[key[0]].run(None, ex.feed(acts, where, np.concatenate(patches)))[0]
        assert got.shape == want.shape and np.abs(got - want).max() <= tol, (group, np.abs(got - want).max())
    return ex, keys


@pytest.mark.parametrize("threshold", [0.5, math.inf], ids=["cut", "no-cut"])  # no cut: every op on its box
@pytest.mark.parametrize("variant", ["residual", "nhwc", "se", "constant", "unsupported"])
def test_the_incremental_graph_gives_the_full_forward(tmp_path, variant, threshold):
    path = onnx_builders.cnn(tmp_path / f"{variant}.onnx", variant, H, W)
    nhwc = variant == "nhwc"
    photo = np.random.default_rng(1).normal(0, 1, (1, H, W, 3) if nhwc else (1, 3, H, W)).astype(np.float32)
    ex, keys = check(path, photo, (1, 2) if nhwc else (2, 3), POSITIONS, K, threshold=threshold)
    assert all(any(g[2][1]) for g in ex.graphs.values())
    if threshold < math.inf:
        assert any(len(group) > 1 for group in keys.values())  # positions alike away from the border run together


@pytest.mark.parametrize("plain", [False, True], ids=["fused", "plain"])
@pytest.mark.parametrize("threshold", [0.5, math.inf], ids=["cut", "no-cut"])
def test_a_quantized_copy_gives_the_full_forwards_integers(tmp_path, threshold, plain):
    """The QDQ copy of the residual CNN (uint8 activations, int8 weights): the output equals the full forward's
    exactly, whether ONNX Runtime fuses both graphs' QDQ units into integer kernels (QLinearConv, QLinearAdd…) or
    runs every op as ONNX defines it; with the graph's cut and without."""
    path = onnx_builders.quantized(tmp_path / "qdq.onnx", onnx_builders.cnn(tmp_path / "float.onnx", "residual", H, W),
                                   H, W)
    photo = np.random.default_rng(1).normal(0, 1, (1, 3, H, W)).astype(np.float32)
    ex, _ = check(path, photo, (2, 3), POSITIONS, K, tol=0, threshold=threshold, plain=plain)
    ops = {n.op_type for g in ex.graphs.values() for n in g[0].graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and ex.period == 4


def test_pmi_maps_of_a_quantized_model_incrementally(tmp_path):
    """auto runs the QDQ copy incrementally; its PMI and IG maps are the full forwards'."""
    from conftest import write_card
    from infolens import Explainer, OnnxClassifier

    path = onnx_builders.quantized(tmp_path / "qdq.onnx", onnx_builders.cnn(tmp_path / "float.onnx", "residual", H, W),
                                   H, W)
    write_card(path, "NCHW", "RGB", "float32", kind="probs")
    image = np.random.default_rng(4).integers(0, 256, (H, W, 3), np.uint8)
    runs = {mode: Explainer(OnnxClassifier.from_card(path, incremental=mode), "noise", K=K, batch_size=12).explain(
        image, classes="top2", stride=2, samples=3) for mode in ("off", "auto")}
    assert runs["auto"].model["incremental"]["used"], runs["auto"].model["incremental"]
    for name in ("pmi", "ig"):
        assert np.abs(runs["off"].maps[name] - runs["auto"].maps[name]).max() <= 1e-4, name


@pytest.mark.parametrize("variant", ["residual", "nhwc", "se", "unsupported"])
def test_positions_a_period_apart_are_one_plan_moved(tmp_path, variant):
    """Every position of a stride-1 grid: what the executor derives by moving its class's plan is what planning the
    position itself gives; the networks plan one position per class of the period, but the one whose reflect Pad
    clamps boxes at the border plans each; and the graphs give the full forward on a spread of the grid's
    positions.  (The period counts the strides of the part whose boxes move: the SE network's gate and the
    DepthToSpace stop it before their strided convolution.)"""
    path = onnx_builders.cnn(tmp_path / f"{variant}.onnx", variant, H, W)
    nhwc = variant == "nhwc"
    grid = [(y, x) for y in range(H - K + 1) for x in range(W - K + 1)]
    ex = Incremental(path, K, grid, (1, 2) if nhwc else (2, 3))
    for y, x in grid:
        want = ex._walk(ex.graph.plan(y, x, K, ex.threshold, clip=False))
        got = ex.position(y, x)
        assert (got.key, got.box, got.crops, got.places, got.masks) == (want.key, want.box, want.crops, want.places,
                                                                          want.masks), (y, x)
    assert ex.period == {"residual": 4, "nhwc": 2, "se": 1, "unsupported": 1}[variant]
    if nhwc:
        assert len(ex._direct) == len(grid)
    else:
        assert len(ex._classes) == ex.period ** 2 and not ex._direct
    photo = np.random.default_rng(5).normal(0, 1, (1, H, W, 3) if nhwc else (1, 3, H, W)).astype(np.float32)
    check(path, photo, (1, 2) if nhwc else (2, 3), grid[::7], K)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["float", "qdq"])
def test_the_shipped_classifier_incrementally(tmp_path, form):
    """The shipped EfficientNet-Lite0, and a QDQ copy of it (per-channel int8 weights): the same integers, exactly."""
    path = os.path.join(REPO, "models", "efficientnet_lite0.onnx")
    if form == "qdq":
        path = onnx_builders.quantized(tmp_path / "qdq.onnx", path, 224, 224, per_channel=True)
    photo = np.random.default_rng(2).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    check(path, photo, (2, 3), [(0, 0), (108, 108), (216, 100), (32, 200)], 8, B=2, tol=0 if form == "qdq" else 1e-5)


@pytest.mark.parametrize("variant", ["residual", "se"])
def test_pmi_maps_with_the_incremental_backend_are_the_host_batchs(tmp_path, variant):
    from conftest import write_card
    from infolens import Explainer, OnnxClassifier

    path = onnx_builders.cnn(tmp_path / f"{variant}.onnx", variant, H, W)
    write_card(path, "NCHW", "RGB", "float32", kind="probs")
    image = np.random.default_rng(3).integers(0, 256, (H, W, 3), np.uint8)
    maps = {}
    for mode in ("off", "on"):
        clf = OnnxClassifier.from_card(path, incremental=mode)
        e = Explainer(clf, "noise", K=K, batch_size=10).explain(image, classes="top2", stride=2, samples=3)
        maps[mode] = e
    host, inc = maps["off"], maps["on"]
    assert inc.model["incremental"]["used"] and not host.model["incremental"]["used"]
    assert inc.model["incremental"]["kept_mb"] > 0 and "kept_mb" not in host.model["incremental"]
    assert host.forwards == inc.forwards
    for name in ("pmi", "ig"):
        assert np.abs(host.maps[name] - inc.maps[name]).max() <= 1e-4, name  # bits


def test_the_graphs_of_the_last_grids_stay(tmp_path):
    """Explanations whose grids (K, stride) take turns, as a server's jobs do, reuse each grid's executor (and
    record what it took to build); beyond the last KEPT grids the oldest is dropped."""
    from conftest import write_card
    from infolens import Explainer, OnnxClassifier
    from infolens.backends import incremental

    path = onnx_builders.cnn(tmp_path / "residual.onnx", "residual", H, W)
    write_card(path, "NCHW", "RGB", "float32", kind="probs")
    clf = OnnxClassifier.from_card(path, incremental="on")
    image = np.random.default_rng(3).integers(0, 256, (H, W, 3), np.uint8)

    def executor(k, stride):
        Explainer(clf, "noise", K=k, batch_size=16).explain(image, classes="top1", stride=stride, samples=1)
        assert clf.incremental_used["used"]
        return next(reversed(incremental._EXECUTORS.values()))[0]

    first = executor(4, 2)
    built = clf.incremental_used["build_s"]  # the grid's one-time cost, recorded again where the graphs are reused
    assert built > 0 and executor(4, 3) is not first and executor(4, 2) is first
    assert clf.incremental_used["build_s"] == built
    for k, stride in [(3, 1), (3, 2), (3, 3), (4, 4)][:incremental.KEPT]:  # new grids: the first is dropped
        executor(k, stride)
    assert len(incremental._EXECUTORS) == incremental.KEPT and executor(4, 2) is not first


def test_incremental_on_refuses_a_uint8_model_in_one_line(tmp_path, image_file):
    from conftest import run_cli, write_card

    path = onnx_builders.classifier(tmp_path / "u8.onnx", dtype="uint8")
    write_card(path, "NCHW", "RGB", "uint8")
    r = run_cli("explain", image_file, "--model", path, "--incremental", "on", "-K", 4, "--sampler",
                "noise", "--out", tmp_path / "out", "-q")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.rstrip().endswith("incremental inference cannot run this model: it takes float32 RGB models run "
                                      "in float32; auto falls back to full forwards (--incremental)"), r.stderr


def test_incremental_on_names_the_op_it_does_not_support_in_one_line(tmp_path, image_file):
    from conftest import run_cli, write_card

    path = onnx_builders.cnn(tmp_path / "d2s.onnx", "unsupported", H, W)
    write_card(path, "NCHW", "RGB", "float32", kind="probs")
    r = run_cli("explain", image_file, "--model", path, "--resize", "stretch", "--incremental", "on", "-K", K,
                "--sampler", "noise", "--out", tmp_path / "out", "-q")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "op DepthToSpace is not supported" in r.stderr and r.stderr.rstrip().endswith("(--incremental)"), r.stderr
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


@pytest.mark.parametrize("variant", ["se", "unsupported"])
def test_incremental_auto_runs_where_the_plan_predicts_a_gain_and_says_why_not_elsewhere(tmp_path, variant):
    """auto: the squeeze-and-excitation CNN runs incrementally (its plan predicts 2.5× fewer multiply-adds); the
    one with a DepthToSpace falls back to full forwards, and its JSON names the op.  Either way the maps are the full
    forwards' within float rounding."""
    from conftest import write_card
    from infolens import Explainer, OnnxClassifier

    path = onnx_builders.cnn(tmp_path / f"{variant}.onnx", variant, H, W)
    write_card(path, "NCHW", "RGB", "float32", kind="probs")
    image = np.random.default_rng(4).integers(0, 256, (H, W, 3), np.uint8)
    runs = {mode: Explainer(OnnxClassifier.from_card(path, incremental=mode), "noise", K=K, batch_size=12).explain(
        image, classes="top1", stride=2, samples=2) for mode in ("off", "auto")}
    record = runs["auto"].model["incremental"]
    assert record["mode"] == "auto" and record["used"] == (variant == "se"), record
    if variant == "se":
        assert record["predicted_speedup"] >= 1.5 and "why_not" not in record, record
    else:
        assert "DepthToSpace" in record["why_not"], record
    for name in ("pmi", "ig"):
        assert np.abs(runs["off"].maps[name] - runs["auto"].maps[name]).max() <= 1e-4, name
