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


def run_layers(args) -> int:
    from .. import params
    from ..mipin.part import MAX_INVERSE_OPS, for_classifier

    if args.model_path and not args.model:
        args.model = args.model_path
    clf = options.classifier(args)
    max_ops = MAX_INVERSE_OPS if args.max_ops is None else params.check("max_ops", args.max_ops)
    _, part = for_classifier(clf, args.map_layer, max_ops)
    shape = part.input_shape
    print(f"{clf.name}: input {shape}, inverse from {part.logits} to the map layer {part.map_tensor} "
          f"{part.map_shape} ({len(part.nodes)} ops)")
    for line in part.lines():
        print("  " + line)
    return 0
