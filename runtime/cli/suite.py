"""`infolens eval suite IMAGE... --out DIR`: maps side by side on images of your own, no labels — the benchmark's
removal study (evaluate/removal.py) on the predicted class, with a lighter preset."""
from __future__ import annotations

import argparse

from . import benchmark, options

# the preset: what `eval benchmark --quick` scores, on the images given
SUITE = {"samplers": "patchsampler,mean,ring-mean", "methods": "occlusion,cam,random,edge",
         "fills": "blur,road,patchsampler", "targets": "pred", "steps": 10, "smooth": 0.0, "shrink": "no", "scales": ""}


def register(evsub) -> None:
    su = evsub.add_parser("suite", help="compare maps on images of your own by removal in both orders (no labels)",
                          description="The removal study of `infolens eval benchmark` on the images given, explaining "
                          "each one's predicted class: PMI and IG under each --samplers entry and each --methods "
                          "entry, removal in both orders under each fill — AUC(MoRF), AUC(LeRF), SRG, Kendall τ "
                          "between the fills' rankings, paired tests against PMI with the first sampler. One JSON per "
                          "image in DIR/removal/ (run the same command again to resume, or to add images); "
                          "DIR/report.md, DIR/results.csv and DIR/srg_pred.png are rebuilt at the end. For labelled "
                          "photos and every protocol, use `infolens eval benchmark`.",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    # the other studies' settings, which the removal study does not read
    su.set_defaults(run=run, studies="removal", quick=False, ray=None, study_photos=20, grids="16:16:4", grid_photos=1,
                    mosaics=1, min_p=0.5, sanity_every=10, sample_counts="1", patch_sizes="16", negative_steps=10,
                    fit_data=[], sanity_crops=256, indist_photos=1, evaluator=None, cell=24,
                    report_only=False)
    su.add_argument("images", nargs="+", metavar="IMAGE")
    su.add_argument("--out", required=True, metavar="DIR", help="the records and the report")
    options.add_model(su, card=False)
    benchmark.add_removal(su, SUITE)
    options.add_run(su)
    options.add_incremental(su)
    options.add_quiet(su, "no progress bar")


def run(args) -> int:
    from ..errors import InfolensError
    from ..evaluate.benchmark import unlabelled

    for key, default in SUITE.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if "true" in args.targets.split(","):
        raise InfolensError("the suite's images have no labels, so only --targets pred: for the true class use "
                            "`infolens eval benchmark --labels`", "targets")
    return benchmark.run_studies(args, unlabelled(args.images), None)
