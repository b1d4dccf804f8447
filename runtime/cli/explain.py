"""`infolens explain IMAGE...`: PMI and IG maps (or a comparison method's) for images, written to --out."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from .. import params
from ..errors import InfolensError
from . import options

EXPLAIN_HELP = """\
Explain why an ONNX image classifier decided what it did, with information-theoretic maps in bits
(Yi et al.): each K×K patch is marginalized out by drawing N in-fills from a sampler (by default the
learned PatchSampler), and the classifier is re-run on every in-filled copy.

  PMI map (per class c):  log2 p(c|x) − log2 p(c|x without the patch)   red supports c, blue opposes it
  IG map (all classes):   KL( p(Y|x) ‖ p(Y|x without the patch) )       how much the patch informs the decision

Each pixel gets the mean over the patches that cover it.  Cost: (#patches × N + 1) classifier forwards,
#patches ≈ (H/S) × (W/S).  Outputs in --out, named after each image:
  <stem>.npz   image (uint8 H×W×3, the model-input-space image), probs, classes, pmi [k,H,W], ig [H,W]
  <stem>.json  labels, probabilities, every parameter and preprocessing value used, forwards, timings
  <stem>_ig.png, <stem>_pmi_<class>.png   overlays with a colour bar in bits
(--method occlusion|pda|rise|mipin write occlusion / woe / rise / mipin maps instead, same file scheme)

Without --model it uses the shipped ImageNet classifier (EfficientNet-Lite0) and PatchSampler.
A model's card (model.json beside model.onnx) supplies preprocessing and labels; flags override it;
what neither gives is inferred from the graph (layout, size, dtype, output kind: softmax probabilities,
logits, or multi-label sigmoid probabilities)."""

EXPLAIN_EXAMPLES = """\
examples:
  infolens explain photo.jpg                                   # shipped models, top-3 classes
  infolens explain a.jpg b.png -K 16 -S 8 -N 16 --out maps/    # finer grid, more samples
  infolens explain cat.jpg --classes 285,281 --sampler gaussian
  infolens explain x.jpg --model vendor.onnx --layout nhwc --channel-order bgr \\
      --mean 103.94,116.78,123.68 --std 1,1,1 --size 224,224 --output-kind probs
exit status: 0 all images explained; 2 bad input (the good images are still explained)"""


def register(sub) -> None:
    ex = sub.add_parser("explain", help="PMI and IG maps for images", description=EXPLAIN_HELP,
                        epilog=EXPLAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.set_defaults(run=run)
    ex.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything OpenCV decodes)")
    g = ex.add_argument_group("method")
    options.add_method(g, "pmi/ig (default; one run gives both maps, bits); occlusion: p(c|x) − p(c|x, patch grey); "
                       "pda: weight of evidence in bits with the gaussian sampler; rise: random-mask saliency; mipin: "
                       "one pass through a fitted inverse of the classifier (infolens mipin fit)")
    options.add_sampler(g, None, "how a patch is marginalized (default: patchsampler; occlusion: gray; pda: "
                        "gaussian; mean/gray/black/blur are deterministic, so N=1 is used)")
    options.add_coupling(g)
    options.add_grid(g, K=8, N=None, N_help="in-fills per patch (default 8); with --method rise: masks (default 1000)")
    g.add_argument("--classes", default="top3", help="classes that get a PMI map: topK or indices like 285,281 "
                   "(default top3)")
    g.add_argument("--target-se", type=float, metavar="BITS", help="adaptive N: patches whose standard error is "
                   "above this get more in-fills (N more, doubling) until they meet it or reach --max-samples")
    g.add_argument("--max-samples", type=int, help="adaptive N: in-fills per patch at most (default 8 × N)")
    g.add_argument("--inverse", metavar="PATH", help="--method mipin: a fitted inverse (default: <model stem>.mipin.onnx "
                   "beside the model, or the shipped one for the shipped classifier)")
    g.add_argument("--rise-grid", type=int, default=7, help="RISE mask grid s×s (default 7)")
    g.add_argument("--rise-p", type=float, default=0.5, help="RISE probability of keeping a cell (default 0.5)")
    options.add_classifier(ex.add_argument_group("model (flags win over the model card)"))
    i = ex.add_argument_group("input files")
    i.add_argument("--background", type=options.floats, default=[255.0], metavar="V|R,G,B",
                   help="colour that transparent pixels are composited on, 0..255 (default 255: white; a note says "
                   "when an image has transparency)")
    i.add_argument("--frame", type=int, default=0, help="frame of an animated GIF or multi-page TIFF to explain, "
                   "0-based (default 0; a note says when a file has several)")
    r = ex.add_argument_group("run")
    options.add_run(r)
    r.add_argument("--batch-backend", choices=options.choices("batch_backend"), default="auto",
                   help="host: in-fills composited in C++ into a host batch; composer: an ONNX graph composes the "
                   "batch on the classifier's device and IO binding hands it over, so only in-fills cross the bus "
                   "(on the CPU about 7 %% slower, same maps); auto (default): composer on cuda, host on the cpu")
    r.add_argument("--out", default="out", help="output folder (default ./out)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace existing files in --out that an earlier infolens run did not write")
    r.add_argument("--no-png", action="store_true", help="write only the .npz and .json")
    r.add_argument("--mask-insignificant", action="store_true", help="PNGs: grey out pixels whose map value is within "
                   "two Monte-Carlo standard errors of 0 (|value| < 2 s.e.)")
    options.add_quiet(r, "no progress bar, no per-image summary")


def run(args) -> int:
    from ..catalog import file_sha256
    from ..explanation import check_outputs, result_pattern
    from ..images import read_image
    from ..methods import Explainer, method_class
    from ..outfiles import prepare_dir, result_lock
    from ..samplers import load_sampler

    try:  # every problem with --out shows before anything is computed
        out = prepare_dir(args.out)
    except InfolensError as err:
        print(f"infolens: error: {params.with_flag(err)}", file=sys.stderr)
        return 2
    clf = options.classifier(args)
    default_sampler = method_class(args.method).default_sampler
    sampler = None if default_sampler is None else load_sampler(args.sampler or default_sampler, K=args.K,
                                                                model=args.sampler_model, device=clf.placement,
                                                                coupling=args.coupling)
    explainer = Explainer(clf, sampler, batch_size=args.batch_size, progress=not args.quiet, rise_grid=args.rise_grid,
                          rise_p=args.rise_p, target_se=args.target_se, max_samples=args.max_samples,
                          inverse=args.inverse)
    n = args.N if args.N is not None else (1000 if args.method == "rise" else 8)
    inputs = {os.path.realpath(p) for p in args.images}
    out_real = os.path.realpath(out)
    stems: dict[str, int] = {}
    done_paths: set[str] = set()
    by_content: dict[str, object] = {}  # sha256 of an image file → its explanation: identical files computed once
    failed = 0
    for path in args.images:
        real = os.path.realpath(path)
        if real in done_paths:
            _notice(args, f"{path}: given more than once; explained once")
            continue
        done_paths.add(real)
        stem = os.path.splitext(os.path.basename(path))[0]
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:  # two images with one name in one call must not overwrite each other's maps
            stem = f"{stem}-{stems[stem]}"
        try:
            t0 = time.perf_counter()
            pattern = result_pattern(stem)
            clash = [p for p in inputs if os.path.dirname(p) == out_real and pattern.fullmatch(os.path.basename(p))]
            if clash:
                raise InfolensError(f"the results of {path} would overwrite the input image {clash[0]}", "out")
            with result_lock(out, stem):
                check_outputs(out, stem, args.overwrite)
                digest = file_sha256(path) if os.path.isfile(path) else None
                e = by_content.get(digest)
                if e is not None:
                    _notice(args, f"{path}: same file content as {e.source}; its explanation is reused")
                    e = dataclasses.replace(e, source=path)
                else:
                    notes: list[str] = []
                    image = read_image(path, background=args.background, frame=args.frame, notes=notes)
                    e = explainer.explain(image, classes=args.classes, stride=args.S, samples=n, seed=args.seed,
                                          method=args.method, source=path, notes=notes)
                    for note in e.notes:
                        _notice(args, f"{path}: {note}")
                    if digest:
                        by_content[digest] = e
                files = e.save(out, stem, overwrite=args.overwrite, render=not args.no_png,
                               mask_insignificant=args.mask_insignificant)
        except InfolensError as err:
            print(f"infolens: error: {path}: {params.with_flag(err)}", file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            top = ", ".join(f"{lab} ({c}) p={e.probs[c]:.3f}" for c, lab in zip(e.classes, e.labels))
            print(f"{path}: {top}\n  {e.forwards} forwards in {time.perf_counter() - t0:.1f} s → "
                  f"{os.path.join(out, stem)}.* ({len(files)} files)")
    return 2 if failed else 0


def _notice(args, text: str) -> None:
    if not args.quiet:
        print(f"infolens: note: {text}", file=sys.stderr)
