"""`infolens eval benchmark --images DIR --labels CSV --out DIR`: the faithfulness benchmark on labelled photos."""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from . import options


# flags whose default --quick changes (None on the command line: not given)
DEFAULTS = {"limit": None, "studies": "removal,pointing,negative,sanity,cause,samples,patch", "samplers": None,
            "methods": "occlusion,pda,rise,mipin,cam,random,edge", "fills": "blur,black,mean,road,patchsampler",
            "targets": "pred,true", "mosaics": 100, "steps": 50, "smooth": 8.0, "shrink": "yes", "scales": "8"}
QUICK = {"limit": 20, "studies": "removal,pointing", "samplers": "patchsampler,mean,ring-mean",
         "methods": "occlusion,cam,random,edge", "fills": "blur,road,patchsampler", "targets": "pred", "mosaics": 20,
         "steps": 10, "smooth": 0.0, "shrink": "no", "scales": ""}


def register(evsub) -> None:
    p = evsub.add_parser("benchmark", help="the paper's evaluation of every method on labelled photos",
                         description="For the photos of the --labels CSV (columns file, class_index), the classifier's "
                         "top-1/top-5 and these studies (--studies): removal — PMI and IG under each --samplers entry "
                         "and each --methods entry (with the random and edge controls, and each map smoothed), "
                         "explained for the predicted and the true class, removal in both orders under each fill: "
                         "AUC(MoRF), AUC(LeRF) and SRG = their difference, Kendall τ between the fills' rankings, "
                         "ROAD's protocol (Figs. 12, 13); pointing — the grid pointing game on 2×2 mosaics, no "
                         "removal; negative — p(class) as negative-PMI pixels are removed "
                         "(Fig. 10); sanity — cascading randomization for every method (Figs. 15, 24); cause — why IG stays "
                         "correlated on a fully random model; samples — the "
                         "effect of N (Fig. 23); patch — the effect of K (Fig. 22). auc and negative run on every "
                         "photo, the others on --study-photos of them. One JSON per photo and study in DIR/<study>/ — "
                         "run the same command again to resume; the report (report.md, CSVs, plots) is rebuilt at the "
                         "end. --quick: a first look at a model and photos of your own in about 15 minutes on 2 cores.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run)
    p.add_argument("--images", required=True, metavar="DIR", help="the photos")
    p.add_argument("--labels", required=True, metavar="CSV", help="file,class_index[,name] per photo")
    p.add_argument("--out", required=True, metavar="DIR", help="the per-photo results (DIR/<study>/*.json)")
    p.add_argument("--report", metavar="DIR", help="where report.md, results.csv and the plots go (default: --out)")
    p.add_argument("--limit", type=int, help="this many photos, evenly spaced over the labels file (default: all)")
    options.add_model(p, card=False)
    p.add_argument("--samplers", help="PMI/IG samplers, each NAME or NAME=MODEL_FILE; PMI with the first is the "
                   "reference of the paired tests (default: patchsampler, the first categorical PatchSampler, "
                   "gaussian, mean, noise, black)")
    p.add_argument("--methods", help="comparison methods, and the controls random (a uniform-noise map) and edge (the "
                   f"photo's Sobel energy: no classifier) (default {DEFAULTS['methods']})")
    options.add_grid(p, K=16, N=4)
    p.add_argument("--rise-masks", type=int, default=1000, help="RISE masks (default 1000)")
    p.add_argument("--steps", type=int, help="removal steps of every fill but road, which takes ROAD's 10 (default "
                   f"{DEFAULTS['steps']})")
    p.add_argument("--fills", help=f"what removed pixels become (evaluate/fills.py; default {DEFAULTS['fills']})")
    p.add_argument("--fill-draws", type=int, default=4, metavar="D",
                   help="patchsampler fill: in-fill draws each curve point averages (default %(default)s)")
    p.add_argument("--smooth", type=float, metavar="SIGMA",
                   help="control: every map is also scored after a Gaussian smoothing of σ = SIGMA pixels (0: not; "
                   f"default {DEFAULTS['smooth']})")
    p.add_argument("--shrink", choices=["yes", "no"], help="removal, pointing: also score the candidate that shrinks "
                   "each pixel of a map by its own standard error, v·v²/(v² + se²) (default "
                   f"{DEFAULTS['shrink']})")
    p.add_argument("--scales", metavar="K,K,…", help="removal, pointing: the multi-scale candidate — PMI and IG with the "
                   "first sampler also at these patch sizes (S = K), averaged with the maps at -K ('' for none; "
                   f"default {DEFAULTS['scales']})")
    p.add_argument("--targets", help="removal: the classes explained — pred (the predicted top-1) and/or true (the "
                   f"label) (default {DEFAULTS['targets']})")
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
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="spread the photos over Ray actors "
                   "(the ray extra; default a local cluster)")
    options.add_run(p)
    options.add_quiet(p, "no progress bar")


def run(args) -> int:
    from ..evaluate.benchmark import default_samplers, read_labels, run_benchmark
    from ..evaluate.studies import build
    from ..catalog import DEFAULT_CLASSIFIER, shipped
    from ..classifier import OnnxClassifier
    from .. import params
    from ..errors import InfolensError
    from ..outfiles import prepare_dir

    if not os.path.isdir(args.images):
        raise InfolensError(f"images folder not found: {args.images}", "images")
    params.check("study_photos", args.study_photos)
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK[key] if args.quick else default)
    photos = read_labels(args.labels, args.images, args.limit)
    prepare_dir(args.out)
    clf = OnnxClassifier.from_card(args.model or shipped(DEFAULT_CLASSIFIER, "model"), device=args.device,
                                   **options.gpu(args))
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
                    tuple(_ints(args.scales, "scales")) if args.scales.strip() else ())
    command = "infolens eval " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else ""
    if args.report:
        prepare_dir(args.report)
    report = run_benchmark(studies, photos, args.out, not args.quiet, command, args.ray, args.report,
                           args.study_photos)
    accuracy = (f"{report['photos']} photos: top-1 {100 * report['top1']:.1f} %, top-5 {100 * report['top5']:.1f} %; "
                if report["photos"] else "")
    print(f"{accuracy}report: {os.path.join(args.report or args.out, 'report.md')}")
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
