"""Benchmark: end-to-end explain throughput against raw ONNX Runtime on the same model and batch size.

    infolens bench [--model M.onnx] [-K 16] [-S 16] [-N 8] [--batch-size 64] [--sampler patchsampler]
    infolens bench --rss 8 2 1 -K 8 -N 8       # peak memory of one explain at each stride
    infolens bench --method mipin              # MIP-IN maps/s against raw forwards/s, same batch
    infolens bench --device cuda --table       # GPU table: models × batches × options (fp16, CUDA graphs, TensorRT)
    infolens bench --device cuda --paper --cuda-graph   # the paper's setting (K=8, S=1, N=8): seconds
    infolens bench --agreement examples/coffee.png --configs cpu,cuda,cuda+graph,cuda+fp16
(`python -m infolens.bench` is the same.)

Both numbers are classifier forwards (images) per second, measured in one process, alternating raw and
end-to-end rounds so that machine load hits both alike.  The ratio end-to-end ÷ raw is the runtime's
overhead (1.0 = none); the breakdown says where the rest went.  "Raw" on a GPU is the classifier alone with its
input and output bound on the device (IO binding), the same batch, the same options.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

from . import kernels, params
from .backends.sessions import session_options
from .classifier import OnnxClassifier
from .methods import Explainer
from .errors import InfolensError
from .samplers import load_sampler


def bound_throughput(clf: OnnxClassifier, batch: int, seconds: float = 4.0) -> float:
    """Images/s of the classifier alone on one fixed batch, on its own placement and graph edits (fp16, CUDA
    graphs), input and output bound on its device once (IO binding); each call copies its [batch, Y] scores back, as
    an explanation must."""
    dev = clf.placement.device
    session = clf.open_graph(graph=True)
    x = clf.normalize(np.random.default_rng(0).integers(0, 256, (batch, *clf.pre.size, 3), dtype=np.uint8))
    bind = session.io_binding()
    bind.bind_ortvalue_input(clf.feed_name, ort.OrtValue.ortvalue_from_numpy(x, dev, 0))
    bind.bind_output(clf.output.name, dev)
    session.run_with_iobinding(bind)
    out = bind.get_outputs()[0]
    bind.bind_ortvalue_output(clf.output.name, ort.OrtValue.ortvalue_from_shape_and_type(
        out.shape(), np.float32, dev, 0))
    session.run_with_iobinding(bind)  # a CUDA graph is captured here
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run_with_iobinding(bind)
        bind.copy_outputs_to_cpu()
        n += batch
    return n / (time.perf_counter() - t0)


def raw_throughput(clf: OnnxClassifier, batch: int, options: ort.SessionOptions | None, seconds: float = 4.0) -> float:
    """Images/s of back-to-back session.run calls on one fixed batch (options None: ONNX Runtime's defaults)."""
    session = ort.InferenceSession(clf.model_path, options, providers=clf.session.get_providers())
    rng = np.random.default_rng(0)
    x = clf.normalize(rng.integers(0, 256, (batch, *clf.pre.size, 3), dtype=np.uint8))
    feed = {clf.input_name: x}
    session.run(None, feed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, feed)
        n += batch
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    from .cli.options import Parser, add_run

    ap = Parser(prog="infolens bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="classifier .onnx (default: the shipped EfficientNet-Lite0)")
    ap.add_argument("--image", help="image to explain (default: a seeded random image; cost does not depend on it)")
    ap.add_argument("--sampler", default="patchsampler")
    ap.add_argument("-K", type=int, default=16)
    ap.add_argument("-S", type=int, default=16)
    ap.add_argument("-N", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="alternating raw / end-to-end rounds (default 3)")
    add_run(ap)
    ap.add_argument("--batch-backend", choices=params.PARAMS["batch_backend"].choices, default="auto")
    ap.add_argument("--rss", type=int, nargs="+", metavar="S",
                    help="instead: peak resident memory of one explain (top-3) at each of these strides, each in a "
                    "fresh process, to show that memory does not grow with the number of positions")
    ap.add_argument("--method", choices=["pmi", "mipin"], default="pmi",
                    help="pmi (default): the marginalization; mipin: maps per second of the shipped (or --inverse) "
                    "MIP-IN inverse, one class per image, against raw forwards per second at the same batch")
    ap.add_argument("--inverse", help="--method mipin: a fitted inverse (default: the classifier's)")
    ap.add_argument("--table", action="store_true", help="instead: a Markdown table of raw and end-to-end forwards/s "
                    "for each of --models × --batches × --configs on --device")
    ap.add_argument("--models", default="efficientnet_lite0,resnet50", help="--table: shipped names, files, or "
                    "resnet50 (built with seeded random weights under ~/.cache/infolens/bench; default %(default)s)")
    ap.add_argument("--batches", default="64,256,1024", help="--table: batch sizes (default %(default)s)")
    ap.add_argument("--configs", help="--table and --agreement: option sets, each device[+fp16][+graph][+trt] "
                    "(default --table: the --device with each option; --agreement: cpu, cpu+fp16)")
    ap.add_argument("--seconds", type=float, default=3.0, help="--table: seconds of each measurement (default 3)")
    ap.add_argument("--paper", action="store_true", help="instead: one explanation at the paper's setting (K=8, "
                    "S=1, N=8, top-1 class; 376,713 forwards on a 224×224 model) with the given options: seconds")
    ap.add_argument("--agreement", nargs="+", metavar="IMAGE", help="instead: how far each --configs' maps are "
                    "from the first's (K=8, S=4, N=8, top-1), and whether a second run repeats them exactly")
    args = ap.parse_args(argv)
    try:
        if args.rss:
            return _rss_table(args)
        if args.method == "mipin":
            return _mipin(args)
        if args.table:
            return _table(args)
        if args.paper:
            return _paper(args)
        if args.agreement:
            return _agreement(args)
        return _explain(args)
    except InfolensError as err:
        print(f"infolens.bench: error: {params.with_flag(err)}", file=sys.stderr)
        return 2


def _classifier(args, model=None, **over) -> OnnxClassifier:
    """The classifier the flags describe (`over` wins: device, fp16, cuda_graph, provider)."""
    from .catalog import DEFAULT_CLASSIFIER, shipped
    from .cli.options import gpu

    kw = {"device": args.device, "batch_backend": args.batch_backend, **gpu(args), **over}
    return OnnxClassifier.from_card(model or args.model or shipped(DEFAULT_CLASSIFIER, "model"), **kw)


def _explain(args) -> int:
    clf = _classifier(args)
    sampler = load_sampler(args.sampler, K=args.K, device=clf.placement)
    ex = Explainer(clf, sampler, batch_size=args.batch_size)
    image = args.image or np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
    ex.explain(image, stride=args.K, samples=1)  # warm-up: sessions, allocations
    raw, raw_ours, e2e, parts = [], [], [], []
    for _ in range(args.rounds):
        if clf.device == "cpu" and not clf.fp16:
            raw.append(raw_throughput(clf, args.batch_size, None))
        raw_ours.append(bound_throughput(clf, args.batch_size))
        e = ex.explain(image, stride=args.S, samples=args.N)
        e2e.append(e.forwards / e.timing["total_s"])
        parts.append(e.timing)
    r, q = max(statistics.median(raw or raw_ours), statistics.median(raw_ours)), statistics.median(e2e)
    t = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    print(f"machine     {_machine(clf)}, kernels {kernels.backend()}")
    print(f"model       {clf.model_path}  batch {args.batch_size}  {_options(clf)}")
    print(f"explain     sampler {args.sampler} K={args.K} S={args.S} N={args.N}: {e.forwards} forwards")
    if raw:
        print(f"raw ORT     {statistics.median(raw):8.1f} forwards/s   default session options, session.run "
              f"(rounds: {', '.join(f'{v:.1f}' for v in raw)})")
    print(f"raw ORT     {statistics.median(raw_ours):8.1f} forwards/s   infolens session options, IO binding "
          f"(rounds: {', '.join(f'{v:.1f}' for v in raw_ours)})")
    print(f"end-to-end  {q:8.1f} forwards/s   (rounds: {', '.join(f'{v:.1f}' for v in e2e)})")
    print(f"ratio       {q / r:8.3f}   (end-to-end ÷ the faster raw figure)")
    total = t["total_s"]
    print("time split  " + ", ".join(f"{k[:-2]} {100 * t[k] / total:.1f}%" for k in
                                      ("classifier_s", "sampler_wait_s", "composite_s")) +
          f", other {100 * (total - t['classifier_s'] - t['sampler_wait_s'] - t['composite_s']) / total:.1f}%"
          f"   (sampler_wait: time the classifier waited for the sampler)")
    print(f"sampler     {1000 * t['sampler_s'] / e.params['positions']:.2f} ms per position vs classifier "
          f"{1000 * t['classifier_s'] / e.params['positions']:.2f} ms for its {e.params['N_used']} forwards "
          f"({100 * t['sampler_s'] / t['classifier_s']:.1f}%; "
          + ("between the classifier's calls, on the same cores)" if clf.device == "cpu" else
             "beside the classifier, in its own thread)"))
    return 0


CONFIG_PARTS = {"fp16": "fp16", "graph": "cuda_graph", "trt": "provider"}


def parse_config(text: str) -> dict:
    """"cuda+fp16+graph" → classifier keywords {device, fp16, cuda_graph, provider}."""
    device, *parts = text.split("+")
    kw = {"device": params.check("device", device), "fp16": False, "cuda_graph": False, "provider": "default"}
    for p in parts:
        if p not in CONFIG_PARTS:
            raise InfolensError(f"bad config {text!r}: device then any of +fp16, +graph, +trt", "configs")
        kw[CONFIG_PARTS[p]] = "tensorrt" if p == "trt" else True
    return kw


def _table(args) -> int:
    """Markdown rows as they are measured: raw (IO-bound classifier alone) and end-to-end forwards/s for each model,
    batch and option set; the end-to-end explanation (PatchSampler K=8, N=8, top-1) gets the stride (≤ 8) that
    makes it about --seconds long at the raw rate.  A cell whose options cannot run (no TensorRT) says why and the table
    goes on."""
    configs = (args.configs or (f"{args.device},{args.device}+fp16" + (
        ",cuda+graph,cuda+fp16+graph,cuda+trt,cuda+trt+fp16" if args.device == "cuda" else ""))).split(",")
    configs = [(c, parse_config(c)) for c in configs]
    batches = [int(b) for b in args.batches.split(",")]
    printed = False
    print("| model | batch | options | raw forwards/s | end-to-end forwards/s | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for model in args.models.split(","):
        path = resnet50_file() if model == "resnet50" else model
        for name, kw in configs:
            try:
                clf = _classifier(args, path, batch_backend="auto", cpu_fallback=args.cpu_fallback, **kw)
                sampler = load_sampler("patchsampler", K=8, device=clf.placement)
            except InfolensError as err:
                print(f"| {model} | | {name} | {params.with_flag(err)} | | |", flush=True)
                continue
            if not printed:
                print(f"<!-- {_machine(clf)} -->", flush=True)
                printed = True
            image = np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
            for B in batches:
                ex = Explainer(clf, sampler, batch_size=B)
                raw = bound_throughput(clf, B, args.seconds)
                ex.explain(image, stride=8, samples=1, classes="top1")  # warm-up: sessions, buffers, CUDA graphs
                S = _stride_for(raw * args.seconds, clf.pre.size, 8, 8)
                e = ex.explain(image, stride=S, samples=8, classes="top1")
                e2e = e.forwards / e.timing["total_s"]
                print(f"| {model} | {B} | {name} | {raw:,.0f} | {e2e:,.0f} | {e2e / raw:.3f} |", flush=True)
    return 0


def _stride_for(forwards: float, size, K: int, N: int) -> int:
    """The smallest stride (at most K) whose positions × N stay within `forwards` (the positions of patch_grid: with
    the border-aligned last row and column)."""
    from .methods.grid import patch_grid

    H, W = size
    S = 1
    while len(patch_grid(H, W, K, S)[0]) * N > forwards and S < K:
        S += 1
    return S


def _paper(args) -> int:
    """The paper's setting (K=8, S=1, N=8, top-1) once, after a warm-up: forwards, seconds, forwards/s."""
    clf = _classifier(args)
    ex = Explainer(clf, load_sampler("patchsampler", K=8, device=clf.placement), batch_size=args.batch_size,
                   progress=True)
    image = args.image or np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
    ex.explain(image, stride=8, samples=8, classes="top1")
    t0 = time.perf_counter()
    e = ex.explain(image, stride=1, samples=8, classes="top1")
    seconds = time.perf_counter() - t0
    print(f"machine     {_machine(clf)}")
    print(f"model       {clf.model_path}  batch {args.batch_size}  {_options(clf)}")
    print(f"paper       K=8 S=1 N=8 top-1: {e.forwards:,} forwards in {seconds:.1f} s "
          f"({e.forwards / seconds:,.0f} forwards/s)")
    return 0


def _agreement(args) -> int:
    """Each config's PMI and IG maps (K=8, S=4, N=8, top-1, seed 0) against the first config's: the largest
    difference in bits, Pearson's r; and whether the same config run again gives the same maps bit for bit.  A
    config that cannot run here gets a row saying why."""
    from scipy import stats

    configs = (args.configs or "cpu,cpu+fp16").split(",")
    runs = {}
    print("| image | options | PMI max abs diff (bits) | PMI range (bits) | PMI r | IG max abs diff (bits) | IG r | "
          "repeats exactly |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in configs:
        try:
            clf = _classifier(args, batch_backend="auto", cpu_fallback=args.cpu_fallback, **parse_config(name))
            ex = Explainer(clf, load_sampler("patchsampler", K=8, device=clf.placement), batch_size=args.batch_size)
        except InfolensError as err:  # e.g. no TensorRT here: say so, go on with the others
            print(f"| | {name} | {params.with_flag(err)} | | | | | |", flush=True)
            continue
        for image in args.agreement:
            a, b = (ex.explain(image, stride=4, samples=8, classes="top1", seed=0) for _ in range(2))
            same = all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("pmi", "ig"))
            ref = runs.setdefault(image, a)
            pmi, ig = ((getattr(ref, k).ravel(), getattr(a, k).ravel()) for k in ("pmi", "ig"))
            print(f"| {os.path.basename(image)} | {name} | {np.abs(pmi[0] - pmi[1]).max():.2e} | "
                  f"{np.ptp(pmi[0]):.3f} | {stats.pearsonr(*pmi)[0]:.6f} | {np.abs(ig[0] - ig[1]).max():.2e} | "
                  f"{stats.pearsonr(*ig)[0]:.6f} | {'yes' if same else 'NO'} |", flush=True)
    return 0


def _machine(clf: OnnxClassifier) -> str:
    where = f"{platform.processor() or platform.machine()}, {_cores()} cores"
    if clf.device == "cuda":
        try:
            import subprocess

            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            where += f", {gpu}"
        except OSError:
            pass
    return f"{where}, onnxruntime {ort.__version__} {clf.session.get_providers()[0]}"


def _options(clf: OnnxClassifier) -> str:
    return (f"device {clf.device}, provider {clf.placement.provider}, batch backend {clf.batch_backend}"
            f"{', fp16' if clf.fp16 else ''}{', CUDA graphs' if clf.placement.cuda_graph else ''}")


def resnet50_file() -> str:
    """A ResNet-50 (v1.5, 224×224 NCHW, ImageNet's mean and std, softmax over 1000 classes) with seeded random
    weights, the bench's heavier classifier: built once under the cache folder, with its card."""
    import json

    folder = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "infolens", "bench")
    path = os.path.join(folder, "resnet50.onnx")
    if not os.path.isfile(path):
        import onnx

        os.makedirs(folder, exist_ok=True)
        onnx.save(resnet50(), path + ".tmp")
        os.replace(path + ".tmp", path)
        card = {"name": "resnet50 (random weights)", "input": {"layout": "NCHW", "size": [224, 224], "scale": 1 / 255,
                                                               "mean": [0.485, 0.456, 0.406],
                                                               "std": [0.229, 0.224, 0.225]},
                "output": {"kind": "probs"}}
        with open(os.path.join(folder, "resnet50.json"), "w") as f:
            json.dump(card, f)
    return path


def resnet50(width: int = 64, classes: int = 1000, seed: int = 0):
    """ResNet-50 v1.5 as an ONNX ModelProto (batch-norms folded into the convolutions), He-initialized from `seed`;
    each residual branch's last convolution is scaled down so that activations stay finite through 16 blocks.
    `width` is the stem's channel count (64 in the real network)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, cin, cout, k, stride=1, relu=True, gain=1.0):
        i = len(nodes)
        w = (rng.standard_normal((cout, cin, k, k), np.float32) * gain * np.sqrt(2.0 / (cin * k * k)))
        inits.extend([numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                      numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")])
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return f"c{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        return f"r{i}"

    x = conv("input", 3, width, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        mid = width * 2 ** stage
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 0 else 1
            h = conv(x, cin, mid, 1)
            h = conv(h, mid, mid, 3, stride)
            h = conv(h, mid, 4 * mid, 1, relu=False, gain=0.2)
            skip = conv(x, cin, 4 * mid, 1, stride, relu=False) if b == 0 else x
            j = len(nodes)
            nodes += [helper.make_node("Add", [h, skip], [f"a{j}"]), helper.make_node("Relu", [f"a{j}"], [f"o{j}"])]
            x, cin = f"o{j}", 4 * mid
    fc = rng.standard_normal((cin, classes), np.float32) * np.float32(np.sqrt(1.0 / cin))
    inits += [numpy_helper.from_array(fc, "fc_w"), numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"),
              numpy_helper.from_array(np.array([-1, cin], np.int64), "flat")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Reshape", ["gap", "flat"], ["f"]),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "resnet50", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _mipin(args) -> int:
    """MIP-IN maps per second (one tapped forward and one inverse forward per batch of images, one class each,
    maps resized to the input) against raw forwards per second, alternating rounds in one process."""
    from .catalog import DEFAULT_CLASSIFIER, shipped
    from .methods.mipin import MIPIN

    try:
        clf = OnnxClassifier.from_card(args.model or shipped(DEFAULT_CLASSIFIER, "model"), device=args.device)
        method = MIPIN(clf, args.inverse)
    except InfolensError as err:
        print(f"infolens.bench: error: {params.with_flag(err)}", file=sys.stderr)
        return 2
    B = args.batch_size
    images = np.random.default_rng(0).integers(0, 256, (B, *clf.pre.size, 3), dtype=np.uint8)
    method.batch_maps(images)  # warm-up
    raw, maps = [], []
    for _ in range(args.rounds):
        raw.append(raw_throughput(clf, B, session_options()))
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 4.0:
            method.batch_maps(images)
            n += B
        maps.append(n / (time.perf_counter() - t0))
    r, m = statistics.median(raw), statistics.median(maps)
    print(f"machine     {platform.processor() or platform.machine()}, {_cores()} cores, onnxruntime {ort.__version__} "
          f"{clf.session.get_providers()[0]}")
    print(f"model       {clf.model_path}  batch {B}; inverse {method.inverse_path} (map layer "
          f"{method.card['map_shape']})")
    print(f"raw ORT     {r:8.1f} forwards/s   (rounds: {', '.join(f'{v:.1f}' for v in raw)})")
    print(f"MIP-IN      {m:8.1f} maps/s       (rounds: {', '.join(f'{v:.1f}' for v in maps)}; one class per image, "
          f"tapped forward + inverse + resize)")
    print(f"ratio       {m / r:8.3f}   (maps/s ÷ raw forwards/s; goal ≥ 0.5)")
    return 0


def _rss_table(args) -> int:
    import multiprocessing

    print(f"peak RSS of one explain: sampler {args.sampler} K={args.K} N={args.N} top-3, batch {args.batch_size}, "
          f"{args.model or 'shipped EfficientNet-Lite0'}")
    print(f"{'S':>4} {'positions':>9} {'forwards':>9} {'seconds':>8} {'peak RSS MB':>12}")
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for S in args.rss:
            try:
                row = pool.apply(_one_explain_rss, (args.model, args.sampler, args.K, S, args.N, args.batch_size,
                                                    args.device))
            except InfolensError as err:
                print(f"infolens.bench: error: {params.with_flag(err)}", file=sys.stderr)
                return 2
            print(f"{S:>4} {row[0]:>9} {row[1]:>9} {row[2]:>8.1f} {row[3]:>12.1f}")
    return 0


def _one_explain_rss(model, sampler, K, S, N, batch_size, device) -> tuple:
    """In a fresh process: explain a seeded random image; positions, forwards, seconds and the peak RSS (MB)."""
    import resource

    from .catalog import DEFAULT_CLASSIFIER, shipped

    clf = OnnxClassifier.from_card(model or shipped(DEFAULT_CLASSIFIER, "model"), device=device)
    ex = Explainer(clf, load_sampler(sampler, K=K, device=device), batch_size=batch_size)
    image = np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    e = ex.explain(image, classes="top3", stride=S, samples=N)
    return (e.params["positions"], e.forwards, time.perf_counter() - t0,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
