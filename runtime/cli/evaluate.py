"""`infolens eval deletion|insertion|negative EXPLANATION.npz`: replay a saved explanation against its model."""
from __future__ import annotations

import argparse
import os
import sys

from .. import outfiles
from ..errors import InfolensError
from . import options


def _add_saved(p) -> None:
    """The options of every command that replays a saved explanation with the models it recorded."""
    p.add_argument("--model", metavar="M.onnx", help="the explanation's classifier, when it is neither at the "
                   "recorded path, nor beside the explanation, nor a shipped model (found by sha256)")
    p.add_argument("--sampler-model", metavar="PATH", help="PatchSampler for a patchsampler fill (default: the "
                   "explanation's, found like --model, else the shipped one for its K)")
    options.add_run(p, device=None, seed_help="seed of the patchsampler fill", gpu_options=False)


def register(evsub) -> None:
    from ..evaluate.curves import __doc__ as protocol
    from ..explanation import MAPS

    for mode, what in (("deletion", "removes the highest-ranked pixels first: a faithful map makes p(class) fall "
                                    "fast (low AUC is good)"),
                       ("insertion", "starts from the fill and puts the highest-ranked pixels back first: a faithful "
                                     "map makes p(class) rise fast (high AUC is good)")):
        d = evsub.add_parser(mode, help=f"{mode} curve and AUC", description=f"{mode.capitalize()} curve: {what}."
                             f"\n\n{protocol}", formatter_class=argparse.RawDescriptionHelpFormatter)
        d.set_defaults(run=run_curve)
        d.add_argument("explanation", metavar="EXPLANATION.npz", help="an `infolens explain` result (.npz + .json)")
        d.add_argument("--map", choices=list(MAPS), default="pmi",
                       help="which map of the explanation orders the pixels (default pmi)")
        d.add_argument("--class", dest="cls", type=int, help="class whose probability is tracked (default: the "
                       "explanation's top class; with --map pmi also the map used)")
        options.add_fill(d, "blur")
        options.add_steps(d, 100)
        d.add_argument("--json", metavar="OUT", help="write auc, curve, fractions, fill, steps, class, map here")
        _add_saved(d)
    ng = evsub.add_parser("negative", help="remove negative-PMI pixels, watch the top class rise (paper Fig. 10)",
                          description="Negative evidence (paper Fig. 10): removes the pixels whose PMI for the "
                          "explanation's top class is negative, most negative first, in --steps steps, replacing them "
                          "with --fill (default: PatchSampler in-fill), and records p(top class) and the top-1 "
                          "probability. If the negative evidence is real, p(top class) rises. Writes "
                          "<stem>_negative.json and <stem>_negative.png (matplotlib).")
    ng.set_defaults(run=run_negative)
    ng.add_argument("explanation", metavar="EXPLANATION.npz", help="an `infolens explain` result with PMI maps")
    options.add_steps(ng, 20)
    options.add_fill(ng, "patchsampler")
    ng.add_argument("--out", help="output folder (default: the explanation's folder)")
    _add_saved(ng)


def run_curve(args) -> int:
    from ..evaluate.curves import evaluate

    if args.json:  # before any computation: where the record goes
        if os.path.abspath(args.json) in {os.path.abspath(os.path.splitext(args.explanation)[0] + e)
                                          for e in (".npz", ".json")}:
            raise InfolensError("the record would overwrite the explanation itself", "json")
        if os.path.isdir(args.json):
            raise InfolensError(f"{args.json} is a folder; name the record's file", "json")
        _writable_dir(os.path.dirname(args.json) or ".", "json")
    result = evaluate(args.explanation, args.eval_command, args.map, args.cls, args.fill, args.steps,
                      args.batch_size, args.seed, args.sampler_model, args.device, args.model, args.fill_draws)
    print(f"AUC {result['auc']:.6f}")
    print(f"  {args.eval_command} of p({result['label']} [{result['class']}]) by the {args.map} map, fill "
          f"{args.fill}, {args.steps} steps, {result['forwards']} forwards in {result['seconds']:.1f} s",
          file=sys.stderr)
    if args.json:
        outfiles.write_json(args.json, result)
    return 0


def run_negative(args) -> int:
    from ..evaluate.curves import negative_evidence, plot_negative

    out = _writable_dir(args.out or os.path.dirname(os.path.abspath(args.explanation)), "out")
    rec = negative_evidence(args.explanation, args.steps, args.fill, args.seed, args.batch_size, args.sampler_model,
                            args.device, args.model, args.fill_draws)
    stem = os.path.join(out, os.path.splitext(os.path.basename(args.explanation))[0] + "_negative")
    outfiles.write_json(stem + ".json", rec)
    plot_negative(rec, stem + ".png")
    print(f"p({rec['label']} [{rec['class']}]) {rec['curve'][0]:.4f} → {rec['curve'][-1]:.4f} (max "
          f"{max(rec['curve']):.4f}) after removing the {rec['negative_pixels']} negative-PMI pixels "
          f"({100 * rec['fractions'][-1]:.1f}% of the image), fill {rec['fill']}; {stem}.json/.png")
    return 0


def _writable_dir(path: str, param: str) -> str:
    """outfiles.prepare_dir, its error naming `param` (the flag that chose the folder)."""
    try:
        return outfiles.prepare_dir(path)
    except InfolensError as e:
        raise InfolensError(str(e), param) from None
