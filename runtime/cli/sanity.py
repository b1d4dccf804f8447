"""`infolens eval sanity IMAGE`: cascading weight randomization (Adebayo et al.), map correlations per step."""
from __future__ import annotations

import argparse
import os
import sys

from . import options


def register(evsub) -> None:
    sa = evsub.add_parser("sanity", help="cascading weight randomization (Adebayo et al.): map correlations",
                          description=options.module_doc("infolens.evaluate.sanity"),
                          epilog="outputs in --out: sanity.json, sanity_correlation.png, sanity_maps.png; "
                          "a table (step, layers, correlations, top class) on stdout",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    sa.set_defaults(run=run)
    sa.add_argument("image", metavar="IMAGE", help="image file (anything OpenCV decodes)")
    options.add_classifier(sa.add_argument_group("model (flags win over the model card)"))
    options.add_method(sa, "maps to check (default pmi: the PMI map of the original top class and the IG map)")
    options.add_sampler(sa, None, "how a patch is marginalized (default gray: cheap, the explanation reruns every "
                        "step)")
    options.add_grid(sa, K=16, N=2, N_help="in-fills per patch (default 2; gray is deterministic: 1 used)")
    sa.add_argument("--steps-every", type=int, metavar="N",
                    help="layers randomized per step after the first (default ceil((layers − 1) / 10))")
    sa.add_argument("--out", help="output folder (default out/sanity/<image stem>)")
    options.add_run(sa, seed_help="seed of the explainer and of the random weights")
    options.add_quiet(sa, "no progress bar, no summary on stderr")


def run(args) -> int:
    from ..methods import method_class
    from ..samplers import load_sampler
    from ..evaluate.sanity import cascade, save, table_lines

    from ..outfiles import prepare_dir

    out = prepare_dir(args.out or os.path.join("out", "sanity", os.path.splitext(os.path.basename(args.image))[0]))
    clf = options.classifier(args)
    uses_sampler = method_class(args.method).default_sampler is not None
    sampler = load_sampler(options.sampler_name(args, "gray"), K=args.K, model=args.sampler_model,
                           device=args.device) if uses_sampler else None
    result = cascade(clf, args.image, sampler, stride=args.S, samples=args.N, method=args.method, seed=args.seed,
                     steps_every=args.steps_every, batch_size=args.batch_size, progress=not args.quiet)
    files = save(result, out)
    print("\n".join(table_lines(result)))
    if not args.quiet:
        print(f"  {result['n_layers']} layers, {len(result['steps']) - 1} steps ({result['steps_every']} layers per "
              f"step after the first), {result['forwards']} forwards in {result['seconds']:.1f} s → "
              f"{', '.join(files.values())}", file=sys.stderr)
    return 0
