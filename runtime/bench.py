"""Benchmark: end-to-end explain throughput against raw ONNX Runtime on the same model and batch size.

    infolens bench [--model M.onnx] [-K 16] [-S 16] [-N 8] [--batch-size 64] [--sampler patchsampler]
    infolens bench --rss 8 2 1 -K 8 -N 8       # peak memory of one explain at each stride
    infolens bench --method mipin              # MIP-IN maps/s against raw forwards/s, same batch
(`python -m infolens.bench` is the same.)

Both numbers are classifier forwards (images) per second, measured in one process, alternating raw and
end-to-end rounds so that machine load hits both alike.  The ratio end-to-end ÷ raw is the runtime's
overhead (1.0 = none); the breakdown says where the rest went.
"""
from __future__ import annotations

import argparse
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
    from .cli.options import Parser

    ap = Parser(prog="infolens bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="classifier .onnx (default: the shipped EfficientNet-Lite0)")
    ap.add_argument("--image", help="image to explain (default: a seeded random image; cost does not depend on it)")
    ap.add_argument("--sampler", default="patchsampler")
    ap.add_argument("-K", type=int, default=16)
    ap.add_argument("-S", type=int, default=16)
    ap.add_argument("-N", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="alternating raw / end-to-end rounds (default 3)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--rss", type=int, nargs="+", metavar="S",
                    help="instead: peak resident memory of one explain (top-3) at each of these strides, each in a "
                    "fresh process, to show that memory does not grow with the number of positions")
    ap.add_argument("--method", choices=["pmi", "mipin"], default="pmi",
                    help="pmi (default): the marginalization; mipin: maps per second of the shipped (or --inverse) "
                    "MIP-IN inverse, one class per image, against raw forwards per second at the same batch")
    ap.add_argument("--inverse", help="--method mipin: a fitted inverse (default: the classifier's)")
    args = ap.parse_args(argv)
    if args.rss:
        return _rss_table(args)
    if args.method == "mipin":
        return _mipin(args)
    try:
        from .catalog import DEFAULT_CLASSIFIER, shipped

        clf = OnnxClassifier.from_card(args.model or shipped(DEFAULT_CLASSIFIER, "model"), device=args.device)
        sampler = load_sampler(args.sampler, K=args.K, device=args.device)
        ex = Explainer(clf, sampler, batch_size=args.batch_size)
        image = args.image or np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
        ex.explain(image, stride=args.K, samples=1)  # warm-up: sessions, allocations
        raw, raw_ours, e2e, parts = [], [], [], []
        for _ in range(args.rounds):
            raw.append(raw_throughput(clf, args.batch_size, None))
            raw_ours.append(raw_throughput(clf, args.batch_size, session_options()))
            e = ex.explain(image, stride=args.S, samples=args.N)
            e2e.append(e.forwards / e.timing["total_s"])
            parts.append(e.timing)
    except InfolensError as err:
        print(f"infolens.bench: error: {params.with_flag(err)}", file=sys.stderr)
        return 2
    r, q = max(statistics.median(raw), statistics.median(raw_ours)), statistics.median(e2e)
    t = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    print(f"machine     {platform.processor() or platform.machine()}, {_cores()} cores, onnxruntime {ort.__version__} "
          f"{clf.session.get_providers()[0]}, kernels {kernels.backend()}")
    print(f"model       {clf.model_path}  batch {args.batch_size}")
    print(f"explain     sampler {args.sampler} K={args.K} S={args.S} N={args.N}: {e.forwards} forwards")
    print(f"raw ORT     {statistics.median(raw):8.1f} forwards/s   default session options "
          f"(rounds: {', '.join(f'{v:.1f}' for v in raw)})")
    print(f"raw ORT     {statistics.median(raw_ours):8.1f} forwards/s   infolens session options "
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
