"""`infolens perf`: the throughput benchmark (runtime/perf/) — end-to-end against raw ONNX Runtime, the short job's
start-up, memory, MIP-IN, the GPU table.  `infolens bench` is its former name, kept with a deprecation note."""
from __future__ import annotations

import argparse
import sys

from . import options

EXAMPLES = """examples:
  infolens perf [--model M.onnx] [-K 16] [-S 16] [-N 8] [--batch-size 64]   # in-process ratio and time split
  infolens perf --startup                    # the short job in a fresh process, start-up included, fixed costs apart
  infolens perf --rss 8 2 1 -K 8 -N 8        # peak memory of one explanation at each stride
  infolens perf --method mipin               # MIP-IN maps/s against raw forwards/s, same batch
  infolens perf --device cuda --table        # GPU table: models × batches × options (fp16, CUDA graphs, TensorRT)
  infolens perf --device cuda --paper --cuda-graph   # the paper's setting (K=8, S=1, N=8): seconds
  infolens perf --agreement examples/coffee.png --configs cpu,cuda,cuda+graph,cuda+fp16
  infolens perf --incremental-plan resnet50 -K 8 -S 4   # what incremental inference would save, per layer

Throughput is classifier forwards (images) per second, raw and end-to-end measured in one process in alternating
rounds, so that machine load hits both alike; the ratio end-to-end ÷ raw is infolens's overhead (1.0 = none).
"Raw" on a GPU is the classifier alone with its input and output bound on the device (IO binding), the same batch,
the same options."""


def register(sub) -> None:
    for name, help in (("perf", "throughput against raw ONNX Runtime: end-to-end ratio, start-up, memory, MIP-IN, "
                                "the GPU table"), ("bench", "former name of perf (deprecated)")):
        p = sub.add_parser(name, help=help, description="How fast infolens runs against raw ONNX Runtime on the "
                           "same model and batch (the maps' faithfulness is `infolens eval benchmark`).",
                           epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
        _arguments(p)
        p.set_defaults(run=run, deprecated=name == "bench")


def _arguments(p) -> None:
    p.add_argument("--model", help="classifier .onnx (default: the shipped EfficientNet-Lite0)")
    p.add_argument("--image", help="image to explain (default: a seeded random image; cost does not depend on it)")
    p.add_argument("--sampler", choices=options.choices("sampler"), default="patchsampler",
                   help="sampler of the explanation (default patchsampler)")
    p.add_argument("-K", type=int, default=16, help="patch size (default 16)")
    p.add_argument("-S", type=int, default=16, help="stride (default 16)")
    p.add_argument("-N", type=int, default=8, help="in-fills per patch (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="alternating raw / end-to-end rounds (default 3)")
    options.add_run(p)
    p.add_argument("--batch-backend", choices=options.choices("batch_backend"), default="auto",
                   help="how perturbation batches are built (default auto)")
    options.add_incremental(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--startup", action="store_true", help="instead: the short job as a user runs it (`infolens "
                      "explain` in a fresh process, wall clock, start-up included) against raw ONNX Runtime on the "
                      "same forwards, and the fixed costs apart (imports, sessions, files)")
    mode.add_argument("--rss", type=int, nargs="+", metavar="S",
                      help="instead: peak resident memory of one explain (top-3) at each of these strides, each in a "
                      "fresh process, to show that memory does not grow with the number of positions")
    p.add_argument("--method", choices=["pmi", "mipin"], default="pmi",
                   help="pmi (default): the marginalization; mipin: maps per second of the shipped (or --inverse) "
                   "MIP-IN inverse, one class per image, against raw forwards per second at the same batch")
    p.add_argument("--inverse", help="--method mipin: a fitted inverse (default: the classifier's)")
    mode.add_argument("--table", action="store_true", help="instead: a Markdown table of raw and end-to-end "
                      "forwards/s for each of --models × --batches × --configs on --device")
    p.add_argument("--models", default="efficientnet_lite0,resnet50", help="--table: shipped names, files, or "
                   "resnet50 (built with seeded random weights under ~/.cache/infolens/bench; default %(default)s)")
    p.add_argument("--batches", default="64,256,1024", help="--table: batch sizes (default %(default)s)")
    p.add_argument("--configs", help="--table and --agreement: option sets, each device[+fp16][+graph][+trt] "
                   "(default --table: the --device with each option; --agreement: cpu, cpu+fp16)")
    p.add_argument("--seconds", type=float, default=3.0, help="--table: seconds of each measurement (default 3)")
    mode.add_argument("--paper", action="store_true", help="instead: one explanation at the paper's setting (K=8, "
                      "S=1, N=8, top-1 class; 376,713 forwards on a 224×224 model) with the given options: seconds")
    mode.add_argument("--incremental-plan", nargs="?", const="", metavar="MODEL",
                      help="instead: what exact incremental inference would save on MODEL (default --model or the "
                      "shipped classifier; resnet50: the bench's) at -K and -S — multiply-adds per perturbed copy "
                      "against a full forward, over every position, and per layer")
    mode.add_argument("--agreement", nargs="+", metavar="IMAGE", help="instead: how far each --configs' maps are "
                      "from the first's (K=8, S=4, N=8, top-1), and whether a second run repeats them exactly")


def run(args) -> int:
    from ..perf import memory, mipin, startup, throughput

    if args.deprecated:
        print("infolens: note: `infolens bench` is now `infolens perf` (the same flags)", file=sys.stderr)
    if args.rss:
        return memory.rss_table(args)
    if args.method == "mipin":
        return mipin.maps_per_second(args)
    if args.startup:
        return startup.short_job(args)
    if args.table:
        return throughput.table(args)
    if args.paper:
        return throughput.paper(args)
    if args.agreement:
        return throughput.agreement(args)
    if args.incremental_plan is not None:
        return _incremental_plan(args)
    return throughput.ratio(args)


def _incremental_plan(args) -> int:
    import os

    from ..catalog import DEFAULT_CLASSIFIER, model_file, shipped
    from ..classifier import OnnxClassifier
    from ..errors import InfolensError
    from ..perf.incremental import report
    from ..perf.resnet50 import resnet50_file

    name = args.incremental_plan or args.model
    path = resnet50_file() if name == "resnet50" else model_file(name) if name else shipped(DEFAULT_CLASSIFIER, "model")
    if not os.path.isfile(path):
        raise InfolensError(f"no model file {path} (--incremental-plan)")
    try:  # the layout as explain reads it
        classifier = OnnxClassifier.from_card(path)
    except InfolensError as e:
        if e.param != "model":
            raise
        raise InfolensError(f"{e} (--incremental-plan)") from None
    try:
        lines = report(classifier, args.K, args.S)
    except InfolensError:
        raise
    except (OSError, ValueError) as e:  # the onnx package's shape inference refusing the graph
        raise InfolensError(f"cannot plan {path}: {str(e).splitlines()[0]} (--incremental-plan)") from None
    print("\n".join(lines))
    return 0
