"""The `infolens` command: `infolens explain IMAGE...` and `infolens models`."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import params
from .errors import InfolensError

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
(--method occlusion|pda|rise write occlusion / woe / rise maps instead, for comparison, same file scheme)

Without --model it uses the shipped ImageNet classifier (EfficientNet-Lite0) and PatchSampler.
A model's card (model.json beside model.onnx) supplies preprocessing and labels; flags override it;
what neither gives is inferred from the graph (layout, size, dtype, probabilities vs logits)."""

EXPLAIN_EXAMPLES = """\
examples:
  infolens explain photo.jpg                                   # shipped models, top-3 classes
  infolens explain a.jpg b.png -K 16 -S 8 -N 16 --out maps/    # finer grid, more samples
  infolens explain cat.jpg --classes 285,281 --sampler gaussian
  infolens explain x.jpg --model vendor.onnx --layout nhwc --channel-order bgr \\
      --mean 103.94,116.78,123.68 --std 1,1,1 --size 224,224 --output-kind probs
exit status: 0 all images explained; 2 bad input (the good images are still explained)"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _size(text: str) -> list[int]:
    try:
        hw = [int(v) for v in text.split(",")]
    except ValueError:
        hw = []
    if len(hw) != 2:
        raise argparse.ArgumentTypeError(f"expected H,W, got {text!r}")
    return hw


def _choices(param: str) -> tuple:
    return params.PARAMS[param].choices


def build_parser() -> argparse.ArgumentParser:
    from .explanation import MAPS
    from .samplers import SAMPLERS

    top = _Parser(prog="infolens", description="Information-theoretic explanations (PMI, IG in bits) for any "
                  "ONNX image classifier, on ONNX Runtime.", formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version="infolens 0.1.0")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ex = sub.add_parser("explain", help="PMI and IG maps for images", description=EXPLAIN_HELP,
                        epilog=EXPLAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything OpenCV decodes)")
    g = ex.add_argument_group("method")
    g.add_argument("--method", default="pmi", choices=["pmi", "ig", "occlusion", "pda", "rise"],
                   help="pmi/ig (default; one run gives both maps, bits); occlusion: p(c|x) − p(c|x, patch grey); "
                   "pda: weight of evidence in bits with the gaussian sampler; rise: random-mask saliency")
    g.add_argument("--sampler", choices=SAMPLERS,
                   help="how a patch is marginalized (default: patchsampler; occlusion: gray; pda: gaussian; "
                   "mean/gray/black/blur are deterministic, so N=1 is used)")
    g.add_argument("--sampler-model", metavar="PATH",
                   help="PatchSampler .onnx (either head, staged or not; or gaussian .npz) instead of the shipped "
                   "one for K")
    g.add_argument("--coupling", choices=_choices("coupling"), default="pixel",
                   help="categorical-head PatchSampler: a pixel's 3 channels share one random number (default pixel: "
                   "no colour speckle, same per-channel distributions) or not (none: the reference's independent "
                   "sampling); a logistic-mixture PatchSampler couples the channels itself and ignores this")
    g.add_argument("-K", type=int, default=8, help="patch size in pixels (default 8; shipped PatchSamplers: 8, 16)")
    g.add_argument("-S", type=int, default=None, help="stride in pixels (default K: non-overlapping patches)")
    g.add_argument("-N", type=int, help="in-fills per patch (default 8); with --method rise: masks (default 1000)")
    g.add_argument("--classes", default="top3", help="classes that get a PMI map: topK or indices like 285,281 "
                   "(default top3)")
    g.add_argument("--seed", type=int, default=0, help="random seed; same seed, same maps (default 0)")
    g.add_argument("--rise-grid", type=int, default=7, help="RISE mask grid s×s (default 7)")
    g.add_argument("--rise-p", type=float, default=0.5, help="RISE probability of keeping a cell (default 0.5)")
    m = ex.add_argument_group("model (flags win over the model card)")
    m.add_argument("--model", metavar="M.onnx", help="classifier (default: shipped efficientnet_lite0.onnx)")
    m.add_argument("--card", metavar="M.json", help="model card (default: M.json beside M.onnx, if present)")
    m.add_argument("--layout", type=str.upper, choices=_choices("layout"), help="input layout (default: inferred)")
    m.add_argument("--channel-order", type=str.upper, choices=_choices("channel_order"), help="default RGB")
    m.add_argument("--scale", type=float, help="pixel multiplier before mean/std (e.g. 0.00392 for 1/255; default 1)")
    m.add_argument("--mean", type=_floats, help="per-channel mean after scaling, a,b,c (default 0)")
    m.add_argument("--std", type=_floats, help="per-channel std after scaling, a,b,c (default 1)")
    m.add_argument("--size", type=_size, help="input H,W (default: from the graph)")
    m.add_argument("--resize", choices=["shorter-side-crop", "stretch", "none"],
                   help="how images reach --size (default shorter-side-crop)")
    m.add_argument("--output-kind", choices=_choices("output_kind"), help="default auto (detected)")
    m.add_argument("--input-name", help="graph input (default: the only one)")
    m.add_argument("--output-name", help="graph output with class scores (default: the first)")
    r = ex.add_argument_group("run")
    r.add_argument("--batch-size", type=int, default=64, help="classifier images per call (default 64)")
    r.add_argument("--device", choices=_choices("device"), default="cpu", help="ONNX Runtime device (default cpu)")
    r.add_argument("--out", default="out", help="output folder (default ./out)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace existing files in --out that an earlier infolens run did not write")
    r.add_argument("--no-png", action="store_true", help="write only the .npz and .json")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no per-image summary")
    ev = sub.add_parser("eval", help="faithfulness of saved explanations (deletion / insertion AUC)",
                        description="Check a saved explanation against the model it explains.")
    evsub = ev.add_subparsers(dest="eval_command", required=True, parser_class=_Parser)
    # Options of every eval command that replays a saved explanation with the models it recorded
    saved = argparse.ArgumentParser(add_help=False)
    saved.add_argument("--model", metavar="M.onnx", help="the explanation's classifier, when it is neither at the "
                       "recorded path, nor beside the explanation, nor a shipped model (found by sha256)")
    saved.add_argument("--sampler-model", metavar="PATH", help="PatchSampler for a patchsampler fill (default: the "
                       "explanation's, found like --model, else the shipped one for its K)")
    saved.add_argument("--batch-size", type=int, default=64, help="classifier images per call (default 64)")
    saved.add_argument("--device", choices=_choices("device"), help="default: the explanation's")
    saved.add_argument("--seed", type=int, default=0, help="seed of the patchsampler fill (default 0)")
    for mode, what in (("deletion", "removes the highest-ranked pixels first: a faithful map makes p(class) fall "
                                    "fast (low AUC is good)"),
                       ("insertion", "starts from the fill and puts the highest-ranked pixels back first: a faithful "
                                     "map makes p(class) rise fast (high AUC is good)")):
        from .evaluate import __doc__ as protocol

        d = evsub.add_parser(mode, help=f"{mode} curve and AUC", description=f"{mode.capitalize()} curve: {what}."
                             f"\n\n{protocol}", formatter_class=argparse.RawDescriptionHelpFormatter, parents=[saved])
        d.add_argument("explanation", metavar="EXPLANATION.npz", help="an `infolens explain` result (.npz + .json)")
        d.add_argument("--map", choices=list(MAPS), default="pmi",
                       help="which map of the explanation orders the pixels (default pmi)")
        d.add_argument("--class", dest="cls", type=int, help="class whose probability is tracked (default: the "
                       "explanation's top class; with --map pmi also the map used)")
        d.add_argument("--fill", choices=["blur", "black", "mean", "patchsampler"], default="blur",
                       help="what replaces removed pixels (default blur)")
        d.add_argument("--steps", type=int, default=100, help="number of steps (default 100)")
        d.add_argument("--json", metavar="OUT", help="write auc, curve, fractions, fill, steps, class, map here")
    ng = evsub.add_parser("negative", help="remove negative-PMI pixels, watch the top class rise (paper Fig. 10)",
                          description="Negative evidence (paper Fig. 10): removes the pixels whose PMI for the "
                          "explanation's top class is negative, most negative first, in --steps steps, replacing them "
                          "with --fill (default: PatchSampler in-fill), and records p(top class) and the top-1 "
                          "probability. If the negative evidence is real, p(top class) rises. Writes "
                          "<stem>_negative.json and <stem>_negative.png (matplotlib).", parents=[saved])
    ng.add_argument("explanation", metavar="EXPLANATION.npz", help="an `infolens explain` result with PMI maps")
    ng.add_argument("--steps", type=int, default=20, help="number of steps (default 20)")
    ng.add_argument("--fill", choices=["patchsampler", "blur", "black", "mean"], default="patchsampler",
                    help="what replaces removed pixels (default patchsampler)")
    ng.add_argument("--out", help="output folder (default: the explanation's folder)")
    su = evsub.add_parser("suite", help="compare samplers and methods by deletion/insertion AUC (paper Fig. 13)",
                          description="Explain every image with PMI/IG under each --samplers entry and with each "
                          "comparison --methods entry, score each map's deletion and insertion AUC for the image's top "
                          "class, and write DIR/suite.csv (one row per image × map × sampler, with forwards and "
                          "seconds), DIR/summary.md (means ± standard errors) and plots (deletion_auc.png like the "
                          "paper's Fig. 13, deletion_curves.png, example_maps.png).",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    su.add_argument("images", nargs="+", metavar="IMAGE")
    su.add_argument("--out", required=True, metavar="DIR", help="report folder")
    su.add_argument("--model", metavar="M.onnx", help="classifier (default: shipped efficientnet_lite0.onnx; its "
                    "card gives the preprocessing)")
    su.add_argument("--samplers", default="patchsampler,gaussian,mean,noise,black",
                    help="samplers for PMI/IG, each NAME or NAME=MODEL_FILE (e.g. another PatchSampler); the first "
                    "is the reference of the paired differences (default patchsampler,gaussian,mean,noise,black)")
    su.add_argument("--maps", default="pmi,ig", help="which maps of the sampler runs are scored (default pmi,ig)")
    su.add_argument("--resume", action="store_true", help="continue DIR/suite.csv of an earlier run: the runs "
                    "(image × sampler or method) that already have their rows are skipped, so new samplers may be added")
    su.add_argument("--methods", default="occlusion,pda,rise",
                    help="comparison methods (default occlusion,pda,rise; '' for none)")
    su.add_argument("-K", type=int, default=16, help="patch size (default 16)")
    su.add_argument("-S", type=int, default=16, help="stride (default 16)")
    su.add_argument("-N", type=int, default=8, help="in-fills per patch (default 8)")
    su.add_argument("--rise-masks", type=int, default=1000, help="RISE masks (default 1000)")
    su.add_argument("--coupling", choices=_choices("coupling"), default="pixel",
                    help="PatchSampler channel coupling (see infolens explain --help; default pixel)")
    su.add_argument("--fill", choices=["blur", "black", "mean", "patchsampler"], default="blur",
                    help="deletion/insertion fill (default blur)")
    su.add_argument("--steps", type=int, default=100, help="deletion/insertion steps (default 100)")
    su.add_argument("--seed", type=int, default=0)
    su.add_argument("--batch-size", type=int, default=64)
    su.add_argument("--device", choices=_choices("device"), default="cpu")
    su.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    from .sanity import __doc__ as sanity_protocol

    sa = evsub.add_parser("sanity", help="cascading weight randomization (Adebayo et al.): map correlations",
                          description=sanity_protocol,
                          epilog="outputs in --out: sanity.json, sanity_correlation.png, sanity_maps.png; "
                          "a table (step, layers, correlations, top class) on stdout",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    sa.add_argument("image", metavar="IMAGE", help="image file (anything OpenCV decodes)")
    sa.add_argument("--model", metavar="M.onnx", help="classifier (default: shipped efficientnet_lite0.onnx)")
    sa.add_argument("--card", metavar="M.json", help="model card (default: M.json beside M.onnx, if present)")
    sa.add_argument("--resize", choices=["shorter-side-crop", "stretch", "none"],
                    help="how the image reaches the input size (default: the card's, else shorter-side-crop)")
    sa.add_argument("--method", default="pmi", choices=["pmi", "ig", "occlusion", "pda", "rise"],
                    help="maps to check (default pmi: the PMI map of the original top class and the IG map)")
    sa.add_argument("--sampler", choices=SAMPLERS, default="gray",
                    help="how a patch is marginalized (default gray: cheap, the explanation reruns every step)")
    sa.add_argument("--sampler-model", metavar="PATH", help="PatchSampler .onnx (or gaussian .npz) for --sampler")
    sa.add_argument("-K", type=int, default=16, help="patch size in pixels (default 16)")
    sa.add_argument("-S", type=int, default=None, help="stride in pixels (default K)")
    sa.add_argument("-N", type=int, default=2, help="in-fills per patch (default 2; gray is deterministic: 1 used)")
    sa.add_argument("--seed", type=int, default=0, help="seed of the explainer and of the random weights (default 0)")
    sa.add_argument("--steps-every", type=int, metavar="N",
                    help="layers randomized per step after the first (default ceil((layers − 1) / 10))")
    sa.add_argument("--out", help="output folder (default out/sanity/<image stem>)")
    sa.add_argument("--batch-size", type=int, default=64, help="classifier images per call (default 64)")
    sa.add_argument("--device", choices=_choices("device"), default="cpu", help="ONNX Runtime device (default cpu)")
    sa.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary on stderr")
    mo = sub.add_parser("models", help="list the shipped models and their cards",
                        description="List the shipped models (ONNX files with JSON cards) and their cards.")
    mo.add_argument("--full", action="store_true", help="print every card in full (JSON)")
    return top


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import cv2

    # OpenCV logs a WARN line per broken image file besides failing; our one-line error says it better.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        if args.command == "models":
            return _models(args.full)
        return _eval(args) if args.command == "eval" else _explain(args)
    except InfolensError as e:
        print(f"infolens: error: {params.with_flag(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infolens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `infolens models | head`
        sys.stderr.close()
        return 0


def _classifier(args):
    from .classifier import OnnxClassifier
    from .catalog import DEFAULT_CLASSIFIER, shipped

    model = args.model or shipped(DEFAULT_CLASSIFIER, "model")
    return OnnxClassifier.from_card(
        model, args.card, layout=args.layout, size=args.size, channel_order=args.channel_order, scale=args.scale,
        mean=args.mean, std=args.std, resize=args.resize, output_kind=args.output_kind, input_name=args.input_name,
        output_name=args.output_name, device=args.device)


def _explain(args) -> int:
    from .engine import Explainer
    from .samplers import load_sampler

    clf = _classifier(args)
    default_sampler = {"occlusion": "gray", "pda": "gaussian"}.get(args.method, "patchsampler")
    sampler = None if args.method == "rise" else load_sampler(args.sampler or default_sampler, K=args.K,
                                                             model=args.sampler_model, device=args.device,
                                                             coupling=args.coupling)
    explainer = Explainer(clf, sampler, batch_size=args.batch_size,
                          progress=not args.quiet, rise_grid=args.rise_grid, rise_p=args.rise_p)
    n = args.N if args.N is not None else (1000 if args.method == "rise" else 8)
    inputs = {os.path.abspath(p) for p in args.images}
    stems: dict[str, int] = {}
    failed = 0
    for path in args.images:
        stem = os.path.splitext(os.path.basename(path))[0]
        stems[stem] = stems.get(stem, 0) + 1
        if stems[stem] > 1:  # two images with one name in one call must not overwrite each other's maps
            stem = f"{stem}-{stems[stem]}"
        try:
            t0 = time.perf_counter()
            e = explainer.explain(path, classes=args.classes, stride=args.S, samples=n, seed=args.seed,
                                  method=args.method)
            clash = [p for p in e.outputs(args.out, stem).values() if os.path.abspath(p) in inputs]
            if clash:
                raise InfolensError(f"output {clash[0]} would overwrite an input image", "out")
            files = e.save(args.out, stem, overwrite=args.overwrite, render=not args.no_png)
        except InfolensError as err:
            print(f"infolens: error: {path}: {params.with_flag(err)}", file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            top = ", ".join(f"{lab} ({c}) p={e.probs[c]:.3f}" for c, lab in zip(e.classes, e.labels))
            print(f"{path}: {top}\n  {e.forwards} forwards in {time.perf_counter() - t0:.1f} s → "
                  f"{os.path.join(args.out, stem)}.* ({len(files)} files)")
    return 2 if failed else 0


def _eval(args) -> int:
    from .evaluate import evaluate

    if args.eval_command == "sanity":
        return _sanity(args)
    if args.eval_command == "negative":
        return _negative(args)
    if args.eval_command == "suite":
        return _suite(args)

    if args.json and os.path.exists(args.json) and os.path.abspath(args.json) == os.path.abspath(args.explanation):
        raise InfolensError("the record would overwrite the explanation itself", "json")
    result = evaluate(args.explanation, args.eval_command, args.map, args.cls, args.fill, args.steps,
                      args.batch_size, args.seed, args.sampler_model, args.device, args.model)
    print(f"AUC {result['auc']:.6f}")
    print(f"  {args.eval_command} of p({result['label']} [{result['class']}]) by the {args.map} map, fill "
          f"{args.fill}, {args.steps} steps, {result['forwards']} forwards in {result['seconds']:.1f} s",
          file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def _suite(args) -> int:
    from .catalog import DEFAULT_CLASSIFIER, shipped
    from .classifier import OnnxClassifier
    from .suite import METHOD_DEFAULTS, parse_sampler, run_suite

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
    clf = OnnxClassifier.from_card(args.model or shipped(DEFAULT_CLASSIFIER, "model"), device=args.device)
    command = "infolens eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else ""
    rows = run_suite(clf, args.images, args.out, samplers, methods, args.K, args.S, args.N, args.rise_masks,
                     args.fill, args.steps, args.seed, args.batch_size, not args.quiet, command, args.coupling,
                     maps, args.resume)
    print(open(os.path.join(args.out, "summary.md")).read())
    return 0 if len({r["image"] for r in rows}) == len(args.images) else 2


def _negative(args) -> int:
    from .evaluate import negative_evidence, plot_negative

    rec = negative_evidence(args.explanation, args.steps, args.fill, args.seed, args.batch_size, args.sampler_model,
                            args.device, args.model)
    out = args.out or os.path.dirname(os.path.abspath(args.explanation))
    stem = os.path.join(out, os.path.splitext(os.path.basename(args.explanation))[0] + "_negative")
    os.makedirs(out, exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(rec, f, indent=1)
    plot_negative(rec, stem + ".png")
    print(f"p({rec['label']} [{rec['class']}]) {rec['curve'][0]:.4f} → {rec['curve'][-1]:.4f} (max "
          f"{max(rec['curve']):.4f}) after removing the {rec['negative_pixels']} negative-PMI pixels "
          f"({100 * rec['fractions'][-1]:.1f}% of the image), fill {rec['fill']}; {stem}.json/.png")
    return 0


def _sanity(args) -> int:
    from .catalog import DEFAULT_CLASSIFIER, shipped
    from .classifier import OnnxClassifier
    from .samplers import load_sampler
    from .sanity import cascade, save, table_lines

    clf = OnnxClassifier.from_card(args.model or shipped(DEFAULT_CLASSIFIER, "model"), args.card,
                                   resize=args.resize, device=args.device)
    sampler = None if args.method == "rise" else load_sampler(args.sampler, K=args.K, model=args.sampler_model,
                                                             device=args.device)
    result = cascade(clf, args.image, sampler, stride=args.S, samples=args.N, method=args.method, seed=args.seed,
                     steps_every=args.steps_every, batch_size=args.batch_size, progress=not args.quiet)
    out = args.out or os.path.join("out", "sanity", os.path.splitext(os.path.basename(args.image))[0])
    files = save(result, out)
    print("\n".join(table_lines(result)))
    if not args.quiet:
        print(f"  {result['n_layers']} layers, {len(result['steps']) - 1} steps ({result['steps_every']} layers per "
              f"step after the first), {result['forwards']} forwards in {result['seconds']:.1f} s → "
              f"{', '.join(files.values())}", file=sys.stderr)
    return 0


def _models(full: bool) -> int:
    from .catalog import list_cards, models_dir

    cards = list_cards()
    if not cards:
        print(f"no shipped models in {models_dir()}")
        return 0
    for path, card in cards:
        print(f"{os.path.basename(path)}  {os.path.getsize(path) / 1e6:.1f} MB  {card.get('task', '(no card)')}")
        if full:
            print("  " + json.dumps(card, indent=2).replace("\n", "\n  "))
            continue
        for line in _card_lines(card):
            print("  " + line)
    print(f"({models_dir()}; `infolens models --full` prints the whole cards)")
    return 0


def _card_lines(card: dict) -> list[str]:
    lines = []
    if "input" in card and isinstance(card["input"], dict):
        i = card["input"]
        lines.append(f"input   {i.get('layout')} {'x'.join(map(str, i.get('size', [])))} {i.get('channel_order')} "
                     f"{i.get('dtype')}: (pixel*{i.get('scale')} - {i.get('mean')}) / {i.get('std')}, "
                     f"resize {i.get('resize')}")
    if "labels" in card:
        kind = card.get("output", {}).get("kind", "auto")
        lines.append(f"output  {kind}, {len(card['labels'])} labels ({', '.join(card['labels'][:3])}, …)")
    if "K" in card:
        nll = card.get("nll_bits_per_subpixel", {})
        head = card.get("head", "categorical")  # the first cards predate the key
        shape = f"M={card.get('M')} T={card.get('T')}" if head == "logistic_mixture" else f"width {card.get('width')}"
        lines.append(f"K={card['K']} {head} head, {shape}; held-out NLL {nll.get('patchsampler')} bits/sub-pixel "
                     f"(uniform {nll.get('uniform')}); {card.get('cost_ms_per_position')} ms per position")
    source = card.get("source") if isinstance(card.get("source"), dict) else {}
    command = source.get("command") or card.get("command")
    if command:
        lines.append(f"made by {command}  [{source.get('licence') or card.get('licence')}]")
    return lines


if __name__ == "__main__":
    sys.exit(main())
