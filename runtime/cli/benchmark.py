"""`infolens eval benchmark --images DIR --labels CSV --out DIR`: the faithfulness benchmark on labelled photos."""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from . import options


# flags whose default --quick changes (None on the command line: not given)
DEFAULTS = {"limit": None, "studies": "removal,grids,pointing,indist,negative,sanity,cause,samples,patch,mipin",
            "samplers": None,
            "methods": "occlusion,pda,rise,mipin,cam,random,edge", "fills": "blur,black,mean,road,patchsampler",
            "targets": "pred", "mosaics": 100, "steps": 10, "smooth": 8.0, "shrink": "yes", "scales": ""}
QUICK = {"limit": 20, "studies": "removal,pointing", "samplers": "patchsampler,mean,ring-mean",
         "methods": "occlusion,cam,random,edge", "fills": "blur,road,patchsampler", "targets": "pred", "mosaics": 20,
         "steps": 10, "smooth": 0.0, "shrink": "no", "scales": ""}


def register(evsub) -> None:
    p = evsub.add_parser("benchmark", help="the paper's evaluation of every method on labelled photos",
                         description="For the photos of the --labels CSV (columns file, class_index), the classifier's "
                         "top-1/top-5 and these studies (--studies): removal — PMI and IG under each --samplers entry "
                         "and each --methods entry (with the random and edge controls; on --extra-photos of them each "
                         "map also smoothed, and the candidates), explained for the --targets classes, removal in both "
                         "orders under each fill: AUC(MoRF), AUC(LeRF) and SRG = their difference, Kendall τ between "
                         "the fills' rankings, ROAD's protocol (Figs. 12, 13); grids — the same at the --grids, on "
                         "--grid-photos of the photos; pointing — the grid pointing game on 2×2 mosaics, no removal; "
                         "negative — p(class) as negative-PMI pixels are removed (Fig. 10); sanity — cascading "
                         "randomization for every method (Figs. 15, 24); cause — why IG stays correlated on a fully "
                         "random model; samples — the effect of N (Fig. 23); patch — the effect of K (Fig. 22); mipin "
                         "— MIP-IN's class sensitivity, completeness, minimality and sanity with refitted inverses. "
                         "removal and negative run on every photo, sanity, cause, samples, patch and mipin on "
                         "--study-photos of them. One JSON per photo and study in DIR/<study>/ — run the same command "
                         "again to resume; the report (report.md, CSVs, plots) is rebuilt at the end. --quick: a first "
                         "look at a model and photos of your own in about 15 minutes on 2 cores.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run)
    p.add_argument("--images", required=True, metavar="DIR", help="the photos")
    p.add_argument("--labels", required=True, metavar="CSV", help="file,class_index[,name] per photo")
    p.add_argument("--out", required=True, metavar="DIR", help="the per-photo results (DIR/<study>/*.json)")
    p.add_argument("--report", metavar="DIR", help="where report.md, results.csv and the plots go (default: --out)")
    p.add_argument("--limit", type=int, help="this many photos, evenly spaced over the labels file (default: all)")
    options.add_model(p, card=False)
    add_removal(p, DEFAULTS)
    p.add_argument("--grids", default="16:8:8,8:4:4", metavar="K:S:N,…",
                   help="grids: the grids of the removal study at other grids (default %(default)s: the CLI's and "
                   "the PatchSampler's best scale)")
    p.add_argument("--grid-photos", type=int, default=50, metavar="N",
                   help="grids: photos, evenly spaced (default %(default)s)")
    p.add_argument("--indist-photos", type=int, default=50, metavar="N",
                   help="indist: photos, evenly spaced (default %(default)s)")
    p.add_argument("--evaluator", metavar="FILE", help="indist: the fine-tuned evaluator (default: "
                   "<model>.evaluator.onnx beside the classifier; python -m infolens.export.evaluator makes one)")
    p.add_argument("--cell", type=int, default=24, metavar="PIXELS",
                   help="indist: side of the cells removed one at a time (default %(default)s)")
    p.add_argument("--mosaics", type=int, help=f"pointing: 2×2 mosaics (default {DEFAULTS['mosaics']})")
    p.add_argument("--min-p", type=float, default=0.5, help="pointing: a photo qualifies when the classifier gives "
                   "its label at least this probability shown alone at the quadrant's size (default %(default)s)")
    p.add_argument("--studies", help=f"which studies, comma-separated (default: all — {DEFAULTS['studies']})")
    p.add_argument("--quick", action="store_true", help="a first look at your own model and photos in about 15 "
                   "minutes on 2 cores: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()) +
                   " (flags given explicitly win)")
    p.add_argument("--study-photos", type=int, default=20, metavar="N",
                   help="photos of the sanity, cause, samples and patch studies, evenly spaced (default %(default)s)")
    p.add_argument("--sanity-every", type=int, default=10, metavar="L",
                   help="sanity: layers randomized per cascade step after the first (default %(default)s)")
    p.add_argument("--sample-counts", default="1,2,4,8,16", metavar="N,N,…",
                   help="samples: the N values (default %(default)s)")
    p.add_argument("--patch-sizes", default="8,16,32", metavar="K,K,…", help="patch: the K values (default %(default)s)")
    p.add_argument("--negative-steps", type=int, default=10, help="negative: removal steps (default %(default)s)")
    p.add_argument("--fit-data", action="append", metavar="DIR", help="mipin: photos the randomized models' "
                   "inverses are fitted on, never the evaluated ones (repeatable; default: bsds500 and coco128 beside "
                   "the folder that holds --images)")
    p.add_argument("--sanity-crops", type=int, default=256, metavar="N",
                   help="mipin: crops each refitted inverse is fitted on (default %(default)s)")
    p.add_argument("--report-only", action="store_true", help="measure nothing: rebuild the report from the records "
                   "in --out (of a run that is not finished, say); the exit code is 2 while items are missing")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="spread the photos over Ray actors "
                   "(the ray extra; default a local cluster)")
    options.add_run(p)
    options.add_incremental(p)
    options.add_quiet(p, "no progress bar")


def add_removal(p, defaults: dict) -> None:
    """The removal study's options (the benchmark's and the suite's); `defaults`: the values shown in the help for
    the options left None on the command line."""
    p.add_argument("--samplers", help="PMI/IG samplers, each NAME or NAME=MODEL_FILE; PMI with the first is the "
                   "reference of the paired tests (default: " + (defaults["samplers"] or "patchsampler, the first "
                   "categorical PatchSampler, gaussian, mean, ring-mean, noise, black") + ")")
    p.add_argument("--methods", help="comparison methods, and the controls random (a uniform-noise map) and edge (the "
                   f"photo's Sobel energy: no classifier) (default {defaults['methods']})")
    options.add_grid(p, K=16, N=4)
    p.add_argument("--rise-masks", type=int, default=1000, help="RISE masks (default 1000)")
    p.add_argument("--steps", type=int, help="removal steps of every fill but road, which takes ROAD's 10 (default "
                   f"{defaults['steps']})")
    p.add_argument("--fills", help=f"what removed pixels become (evaluate/fills.py; default {defaults['fills']})")
    p.add_argument("--fill-draws", type=int, default=4, metavar="D",
                   help="patchsampler fill: in-fill draws each curve point averages (default %(default)s)")
    p.add_argument("--smooth", type=float, metavar="SIGMA",
                   help="control: every map is also scored after a Gaussian smoothing of σ = SIGMA pixels (0: not; "
                   f"default {defaults['smooth']})")
    p.add_argument("--shrink", choices=["yes", "no"], help="removal, pointing: also score the candidate that shrinks "
                   "each pixel of a map by its own standard error, v·v²/(v² + se²) (default "
                   f"{defaults['shrink']})")
    p.add_argument("--scales", metavar="K,K,…", help="removal, pointing: the multi-scale candidate — PMI and IG with the "
                   "first sampler also at these patch sizes (S = K), averaged with the maps at -K ('' for none; "
                   f"default {defaults['scales'] or repr('')})")
    p.add_argument("--extra-photos", type=int, default=50, metavar="N",
                   help="removal: the smoothed copies and the candidates are scored on N of the photos, evenly spaced "
                   "(the plain maps on all) (default %(default)s)")
    p.add_argument("--targets", help="removal: the classes explained — pred (the predicted top-1) and/or true (the "
                   f"label) (default {defaults['targets']})")


def run(args) -> int:
    from ..evaluate.benchmark import read_labels

    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK[key] if args.quick else default)
    _check_images(args.images)
    if args.fit_data is None:
        data = os.path.dirname(os.path.dirname(os.path.abspath(args.images)))
        args.fit_data = [d for d in (os.path.join(data, "bsds500"), os.path.join(data, "coco128")) if os.path.isdir(d)]
    return run_studies(args, read_labels(args.labels, args.images, args.limit), args.report)


def _check_images(folder: str) -> None:
    from ..errors import InfolensError

    if not os.path.isdir(folder):
        raise InfolensError(f"images folder not found: {folder}", "images")


def run_studies(args, photos, report_dir: str | None) -> int:
    """The studies args.studies on `photos` (read_labels' or unlabelled's), from the parsed options; exit code 0 when
    every item was measured, else 2."""
    from ..evaluate.benchmark import default_samplers, run_benchmark
    from ..evaluate.studies import build
    from ..catalog import DEFAULT_CLASSIFIER, shipped
    from ..classifier import OnnxClassifier
    from .. import params
    from ..errors import InfolensError
    from ..outfiles import prepare_dir

    params.check("study_photos", args.study_photos)
    prepare_dir(args.out)
    clf = OnnxClassifier.from_card(args.model or shipped(DEFAULT_CLASSIFIER, "model"), device=args.device,
                                   max_pixels=args.max_pixels, incremental=args.incremental, **options.gpu(args))
    samplers = args.samplers.split(",") if args.samplers else default_samplers(args.K)
    targets = [t for t in args.targets.split(",") if t]
    if not targets or set(targets) - {"pred", "true"}:
        raise InfolensError(f"targets takes pred and/or true, got {args.targets!r}", "targets")
    studies = build([s for s in args.studies.split(",") if s], clf, samplers,
                    [m for m in args.methods.split(",") if m], args.K, args.K if args.S is None else args.S, args.N,
                    args.rise_masks, args.steps, tuple(f for f in args.fills.split(",") if f), args.seed,
                    args.batch_size, args.sanity_every, _ints(args.sample_counts, "sample_counts"),
                    _ints(args.patch_sizes, "patch_sizes"), args.negative_steps, args.fill_draws, args.smooth,
                    args.mosaics, tuple(targets), args.min_p, args.shrink == "yes",
                    tuple(_ints(args.scales, "scales")) if args.scales.strip() else (), args.extra_photos,
                    args.grid_photos, _grids(args.grids), args.fit_data, args.sanity_crops,
                    args.indist_photos, args.evaluator, args.cell)
    # the report names the command that measures, not the one that only rebuilt it
    command = ("infolens eval " + shlex.join(a for a in sys.argv[2:] if a != "--report-only")
               if sys.argv[1:2] == ["eval"] else "")
    if report_dir:
        prepare_dir(report_dir)
    report = run_benchmark(studies, photos, args.out, not args.quiet, command, args.ray, report_dir,
                           args.study_photos, not args.report_only)
    accuracy = (f"{report['photos']} photos: top-1 {100 * report['top1']:.1f} %, top-5 {100 * report['top5']:.1f} %; "
                if report["photos"] else "")
    print(f"{accuracy}report: {os.path.join(report_dir or args.out, 'report.md')}")
    return 0 if report["complete"] else 2


def _ints(text: str, param: str) -> list[int]:
    from ..errors import InfolensError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise InfolensError(f"{param} takes positive integers separated by commas, got {text!r}", param)
    return values


def _grids(text: str) -> list[tuple[int, int, int]]:
    from ..errors import InfolensError

    grids = []
    for part in text.split(","):
        values = part.split(":")
        if len(values) != 3 or not all(v.strip().isdigit() and int(v) > 0 for v in values):
            raise InfolensError(f"grids takes K:S:N triples of positive integers separated by commas, got {text!r}",
                                "grids")
        grids.append(tuple(int(v) for v in values))
    return grids
