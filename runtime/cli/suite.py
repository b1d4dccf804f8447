"""`infolens eval suite IMAGE... --out DIR`: samplers and methods compared by deletion/insertion AUC."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import InfolensError
from . import options


def register(evsub) -> None:
    su = evsub.add_parser("suite", help="compare samplers and methods by deletion/insertion AUC (paper Fig. 13)",
                          description="Explain every image with PMI/IG under each --samplers entry and with each "
                          "comparison --methods entry, score each map's deletion and insertion AUC for the image's top "
                          "class, and write DIR/suite.csv (one row per image × map × sampler, with forwards and "
                          "seconds), DIR/summary.md (means ± standard errors) and plots (deletion_auc.png like the "
                          "paper's Fig. 13, deletion_curves.png, example_maps.png).",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    su.set_defaults(run=run)
    su.add_argument("images", nargs="+", metavar="IMAGE")
    su.add_argument("--out", required=True, metavar="DIR", help="report folder")
    options.add_model(su, card=False)
    su.add_argument("--samplers", default="patchsampler,gaussian,mean,noise,black",
                    help="samplers for PMI/IG, each NAME or NAME=MODEL_FILE (e.g. another PatchSampler); the first "
                    "is the reference of the paired differences (default patchsampler,gaussian,mean,noise,black)")
    su.add_argument("--maps", default="pmi,ig", help="which maps of the sampler runs are scored (default pmi,ig)")
    su.add_argument("--resume", action="store_true", help="continue DIR/suite.csv of an earlier run: the runs (image "
                    "× sampler or method) that already have their rows are skipped, so new samplers may be added")
    su.add_argument("--methods", default="occlusion,pda,rise",
                    help="comparison methods (default occlusion,pda,rise; '' for none)")
    options.add_grid(su, K=16, N=8)
    su.add_argument("--rise-masks", type=int, default=1000, help="RISE masks (default 1000)")
    options.add_coupling(su)
    options.add_fill(su, "blur")
    options.add_steps(su, 100, "deletion/insertion steps")
    options.add_run(su)
    options.add_quiet(su, "no progress bars")


def run(args) -> int:
    from ..catalog import DEFAULT_CLASSIFIER, shipped
    from ..classifier import OnnxClassifier
    from ..outfiles import prepare_dir
    from ..evaluate.suite import METHOD_DEFAULTS, parse_sampler, run_suite

    samplers = [s for s in args.samplers.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    for s in samplers:
        parse_sampler(s)
    maps = [m for m in args.maps.split(",") if m]
    if not maps or set(maps) - {"pmi", "ig"}:
        raise InfolensError(f"bad maps {args.maps!r}: choose pmi, ig or pmi,ig", "maps")
    for m in methods:
        if m not in METHOD_DEFAULTS:
            raise InfolensError(f"unknown method {m!r}: choose from {', '.join(METHOD_DEFAULTS)}", "methods")
    prepare_dir(args.out)
    clf = OnnxClassifier.from_card(args.model or shipped(DEFAULT_CLASSIFIER, "model"), device=args.device,
                                   **options.gpu(args))
    command = "infolens eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else ""
    stride = args.K if args.S is None else args.S
    rows = run_suite(clf, args.images, args.out, samplers, methods, args.K, stride, args.N, args.rise_masks,
                     args.fill, args.steps, args.seed, args.batch_size, not args.quiet, command, args.coupling,
                     maps, args.resume, args.fill_draws)
    print(open(os.path.join(args.out, "summary.md")).read())
    return 0 if len({r["image"] for r in rows}) == len(args.images) else 2
