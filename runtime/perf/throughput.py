"""Throughput: the classifier's forwards per second inside an explanation against raw ONNX Runtime on the same model
and batch (the ratio is infolens's overhead, 1.0 = none), a table of models × batches × options, the paper's
setting, and how far the options (fp16, CUDA graphs, TensorRT) move the maps."""
from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
import onnxruntime as ort

from .. import kernels, params
from ..classifier import OnnxClassifier
from ..errors import InfolensError
from ..methods import Explainer
from ..samplers import load_sampler
from .resnet50 import resnet50_file


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


def classifier_for(args, model=None, **over) -> OnnxClassifier:
    """The classifier the flags describe (`over` wins: device, fp16, cuda_graph, provider)."""
    from ..catalog import DEFAULT_CLASSIFIER, shipped
    from ..cli.options import gpu

    kw = {"device": args.device, "batch_backend": args.batch_backend, "incremental": args.incremental, **gpu(args),
          **over}
    return OnnxClassifier.from_card(model or args.model or shipped(DEFAULT_CLASSIFIER, "model"), **kw)


def ratio(args) -> int:
    clf = classifier_for(args)
    sampler = load_sampler(args.sampler, K=args.K, device=clf.placement)
    ex = Explainer(clf, sampler, batch_size=args.batch_size)
    image = args.image or np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    ex.explain(image, stride=args.S, samples=1)  # warm-up: sessions, allocations, the grid's incremental graphs
    warm = time.perf_counter() - t0
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
    print(f"machine     {machine(clf)}, kernels {kernels.backend()}")
    print(f"model       {clf.model_path}  batch {args.batch_size}  {options_line(clf)}")
    print(f"explain     sampler {args.sampler} K={args.K} S={args.S} N={args.N}: {e.forwards} forwards")
    if clf.incremental != "off":
        print(f"incremental {args.incremental}: {clf.incremental_used}; the warm-up (N=1, its graphs and positions "
              f"planned) took {warm:.1f} s, of it {clf.incremental_used.get('build_s', 0):.1f} s building the grid's "
              "graphs and sessions (once per grid and process)")
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

def table(args) -> int:
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
                clf = classifier_for(args, path, batch_backend="auto", cpu_fallback=args.cpu_fallback, **kw)
                sampler = load_sampler("patchsampler", K=8, device=clf.placement)
            except InfolensError as err:
                print(f"| {model} | | {name} | {params.with_flag(err)} | | |", flush=True)
                continue
            if not printed:
                print(f"<!-- {machine(clf)} -->", flush=True)
                printed = True
            image = np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
            for B in batches:
                ex = Explainer(clf, sampler, batch_size=B)
                raw = bound_throughput(clf, B, args.seconds)
                ex.explain(image, stride=8, samples=1, classes="top1")  # warm-up: sessions, buffers, CUDA graphs
                S = stride_for(raw * args.seconds, clf.pre.size, 8, 8)
                e = ex.explain(image, stride=S, samples=8, classes="top1")
                e2e = e.forwards / e.timing["total_s"]
                print(f"| {model} | {B} | {name} | {raw:,.0f} | {e2e:,.0f} | {e2e / raw:.3f} |", flush=True)
    return 0


def stride_for(forwards: float, size, K: int, N: int) -> int:
    """The smallest stride (at most K) whose positions × N stay within `forwards` (the positions of patch_grid: with
    the border-aligned last row and column)."""
    from ..methods.grid import patch_grid

    H, W = size
    S = 1
    while len(patch_grid(H, W, K, S)[0]) * N > forwards and S < K:
        S += 1
    return S


def paper(args) -> int:
    """The paper's setting (K=8, S=1, N=8, top-1) once, after a warm-up: forwards, seconds, forwards/s."""
    clf = classifier_for(args)
    ex = Explainer(clf, load_sampler("patchsampler", K=8, device=clf.placement), batch_size=args.batch_size,
                   progress=True)
    image = args.image or np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
    ex.explain(image, stride=8, samples=8, classes="top1")
    t0 = time.perf_counter()
    e = ex.explain(image, stride=1, samples=8, classes="top1")
    seconds = time.perf_counter() - t0
    print(f"machine     {machine(clf)}")
    print(f"model       {clf.model_path}  batch {args.batch_size}  {options_line(clf)}")
    print(f"paper       K=8 S=1 N=8 top-1: {e.forwards:,} forwards in {seconds:.1f} s "
          f"({e.forwards / seconds:,.0f} forwards/s)")
    return 0


def agreement(args) -> int:
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
            clf = classifier_for(args, batch_backend="auto", cpu_fallback=args.cpu_fallback, **parse_config(name))
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


def machine(clf: OnnxClassifier) -> str:
    where = f"{platform.processor() or platform.machine()}, {cores()} cores"
    if clf.device == "cuda":
        try:
            import subprocess

            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            where += f", {gpu}"
        except OSError:
            pass
    return f"{where}, onnxruntime {ort.__version__} {clf.session.get_providers()[0]}"


def options_line(clf: OnnxClassifier) -> str:
    return (f"device {clf.device}, provider {clf.placement.provider}, batch backend {clf.batch_backend}"
            f"{', fp16' if clf.fp16 else ''}{', CUDA graphs' if clf.placement.cuda_graph else ''}")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
