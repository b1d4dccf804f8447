"""`infolens mipin layers MODEL`: the part of a classifier that MIP-IN inverts, and its map layer."""
from __future__ import annotations

import argparse

from . import options

LAYERS_HELP = """\
MIP-IN (Deng et al.) inverts the top of a classifier, layer by layer, from the logits down to a map layer.
Walking back from the logits (the input of a final Softmax), each line is a tensor that lies on every path from
the image to the logits, with its shape, the inverse ops from it up to the logits, and the ops that make the
line above from it.  The walk stops at the first such tensor that keeps at least 1/16 of the input's height and
width (the map layer), at the first unsupported op, or at a budget of inverse ops."""


def register(sub) -> None:
    mi = sub.add_parser("mipin", help="MIP-IN: learned inverse networks (layers)",
                        description="MIP-IN (Deng et al.): one-pass maps from a learned inverse of the classifier.")
    misub = mi.add_subparsers(dest="mipin_command", required=True, parser_class=options.Parser)
    la = misub.add_parser("layers", help="the inverted part of a classifier and its map layer",
                          description=LAYERS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    la.set_defaults(run=run_layers)
    la.add_argument("model_path", metavar="MODEL", nargs="?", help="classifier .onnx or a shipped model's name "
                    "(default: the shipped efficientnet_lite0)")
    la.add_argument("--map-layer", metavar="TENSOR", help="stop at this tensor instead (one of the lines printed)")
    la.add_argument("--max-ops", type=int, default=None, help="budget of inverse ops (default 80)")
    options.add_classifier(la.add_argument_group("model (flags win over the model card)"))
    la.set_defaults(device="cpu")
    fi = misub.add_parser("fit", help="fit the inverse of a classifier on photos and save it beside the model",
                          description=FIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    fi.set_defaults(run=run_fit, device="cpu")
    fi.add_argument("model_path", metavar="MODEL", nargs="?", help="classifier .onnx or a shipped model's name "
                    "(default: the shipped efficientnet_lite0)")
    fi.add_argument("--data", action="append", required=True, metavar="DIR",
                    help="folder of photos (recursively; repeat the flag for several); never your test images")
    fi.add_argument("--out", metavar="PATH", help="where the inverse goes (default: <model stem>.mipin.onnx beside "
                    "the model; its card beside it as .mipin.json)")
    fi.add_argument("--crops", type=int, default=512, help="random-resized crops to fit on (default 512)")
    fi.add_argument("--holdout", type=float, default=0.2, help="share of the crops held out for R² (default 0.2)")
    fi.add_argument("--ridge", type=float, default=0.1, help="ridge strength relative to the mean feature energy; "
                    "dense inverses are pulled toward the forward weights' pseudo-inverse (default 0.1)")
    fi.add_argument("--seed", type=int, default=0, help="crops and held-out split (default 0)")
    fi.add_argument("--map-layer", metavar="TENSOR", help="stop at this tensor (see `infolens mipin layers`)")
    fi.add_argument("--max-ops", type=int, default=None, help="budget of inverse ops (default 80)")
    fi.add_argument("--overwrite", action="store_true", help="replace an existing inverse")
    options.add_quiet(fi)
    options.add_classifier(fi.add_argument_group("model (flags win over the model card)"))


FIT_HELP = """\
Fit MIP-IN's inverse network on a classifier's own activations (DESIGN §8; our reconstruction, see
runtime/mipin/fit.py): random-resized crops of the photos in --data go through the classifier with the inverted
part's tensors tapped; then, from the logits down to the map layer, every inverse layer is fitted in closed form
(ridge) on the signal the layers above send it, masked by each crop's ReLU pattern exactly as at inference.
Writes the inverse (ONNX) and its card (classifier sha256, taps, map layer, held-out R² per layer, data, seed);
`infolens explain --method mipin` then uses it.  numpy and ONNX Runtime only: no torch."""


def run_fit(args) -> int:
    import os
    import sys
    import time

    from .. import params
    from ..mipin.crops import photo_files, random_crops
    from ..mipin.fit import fit, save
    from ..errors import InfolensError
    from ..methods.mipin import SUFFIX
    from ..mipin.part import MAX_INVERSE_OPS, for_classifier
    from ..outfiles import prepare_dir

    clf = _classifier(args)
    out = args.out or os.path.splitext(clf.model_path)[0] + SUFFIX
    if not out.endswith(".onnx"):
        raise InfolensError(f"the inverse's file must end in .onnx, got {out}", "out")
    prepare_dir(os.path.dirname(os.path.abspath(out)))
    if os.path.exists(out) and not args.overwrite:
        raise InfolensError(f"{out} exists (overwrite to replace it)", "overwrite")
    params.check("crops", args.crops)
    max_ops = MAX_INVERSE_OPS if args.max_ops is None else params.check("max_ops", args.max_ops)
    t0 = time.perf_counter()
    files = photo_files(args.data)
    _, part = for_classifier(clf, args.map_layer, max_ops)
    crops = random_crops(clf, files, args.crops, args.seed, not args.quiet)
    model, record = fit(clf, part, crops, args.ridge, args.holdout, args.seed, not args.quiet)
    record["seconds_total"] = time.perf_counter() - t0
    record["command"] = "infolens mipin fit " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["mipin", "fit"] else ""
    record["photos"] = len(files)
    save(model, record, clf, out, args.data)
    print(f"{out}: map layer {part.map_tensor} {record['map_shape']}, {len(part.nodes)} ops inverted, "
          f"{args.crops} crops of {len(files)} photos, {record['seconds_total']:.0f} s; held-out R² per fitted tensor:")
    for t, v in record["r2"].items():
        print(f"  {v:6.3f}  {t}")
    return 0


def run_layers(args) -> int:
    from .. import params
    from ..mipin.part import MAX_INVERSE_OPS, for_classifier

    clf = _classifier(args)
    max_ops = MAX_INVERSE_OPS if args.max_ops is None else params.check("max_ops", args.max_ops)
    _, part = for_classifier(clf, args.map_layer, max_ops)
    shape = part.input_shape
    print(f"{clf.name}: input {shape}, inverse from {part.logits} to the map layer {part.map_tensor} "
          f"{part.map_shape} ({len(part.nodes)} ops)")
    for line in part.lines():
        print("  " + line)
    return 0


def _classifier(args):
    """The classifier named by MODEL (or --model) and the model flags."""
    args.model = args.model or args.model_path
    return options.classifier(args)
