"""`infolens explain IMAGE...`: PMI and IG maps (or a comparison method's) for images, written to --out."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time

from .. import params
from ..errors import InfolensError
from . import options

EXPLAIN_HELP = """\
Explain why an ONNX image classifier decided what it did, with information-theoretic maps in bits
(Yi et al.): each K×K patch is marginalized out by in-filling it from a sampler (by default `ring-mean`,
the mean colour of its surroundings, one in-fill; `--sampler patchsampler`: N draws from the learned
PatchSampler, the paper's "true to the data" map), and the classifier is re-run on every in-filled copy.

  PMI map (per class c):  log2 p(c|x) − log2 p(c|x without the patch)   red supports c, blue opposes it
  IG map (all classes):   KL( p(Y|x) ‖ p(Y|x without the patch) )       how much the patch informs the decision

Each pixel gets the mean over the patches that cover it.  Cost: (#patches × N + 1) classifier forwards,
#patches ≈ (H/S) × (W/S); N = 1 for a deterministic sampler.  Outputs in --out, named after each image:
  <stem>.npz   image (uint8 H×W×3, the model-input-space image), probs, classes, pmi [k,H,W], ig [H,W]
  <stem>.json  labels, probabilities, every parameter and preprocessing value used, forwards, timings
  <stem>_ig.png, <stem>_pmi_<class>.png   overlays with a colour bar in bits
(--method occlusion|pda|rise|mipin|cam write occlusion / woe / rise / mipin / cam maps instead, same file scheme)

Without --model it uses the shipped ImageNet classifier (EfficientNet-Lite0).
A model's card (model.json beside model.onnx) supplies preprocessing and labels; flags override it;
what neither gives is inferred from the graph (layout, size, dtype, output kind: softmax probabilities,
logits, or multi-label sigmoid probabilities)."""

EXPLAIN_EXAMPLES = """\
examples:
  infolens explain photo.jpg                                   # shipped classifier, top-3 classes
  infolens explain a.jpg -K 16 -S 8 --sampler patchsampler     # the PatchSampler, 8 in-fills per patch
  infolens explain cat.jpg --classes 285,281 --sampler gaussian
  infolens explain x.jpg --model vendor.onnx --layout nhwc --channel-order bgr \\
      --mean 103.94,116.78,123.68 --std 1,1,1 --size 224,224 --output-kind probs
exit status: 0 all images explained; 2 bad input (the good images are still explained)"""


def register(sub) -> None:
    ex = sub.add_parser("explain", help="PMI and IG maps for images", description=EXPLAIN_HELP,
                        epilog=EXPLAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.set_defaults(run=run)
    ex.add_argument("images", nargs="*", metavar="IMAGE", help="image files (anything OpenCV decodes) or folders of "
                    "them")
    g = ex.add_argument_group("method")
    options.add_method(g, "pmi/ig (default; one run gives both maps, bits); occlusion: p(c|x) − p(c|x, patch grey); "
                       "pda: weight of evidence in bits with the gaussian sampler; rise: random-mask saliency; mipin: "
                       "one pass through a fitted inverse of the classifier (infolens mipin fit); cam: class activation map, one "
                       "forward, for a classifier ending in global average pooling and a linear layer")
    options.add_sampler(g, None, "how a patch is marginalized (default: ring-mean, the context's mean colour; "
                        "patchsampler: the learned PatchSampler, the paper's \"true to the data\" map; occlusion: "
                        "gray; pda: gaussian; mean/gray/black/blur/ring-mean are deterministic, so N=1 is used)")
    options.add_coupling(g)
    d = params.ExplainConfig()  # the defaults the server and the web viewer share
    options.add_grid(g, K=d.K, N=d.samples, N_help=f"in-fills per patch (default {d.default_samples('pmi')}); with "
                     f"--method rise: masks (default {d.default_samples('rise')})")
    g.add_argument("--classes", default=d.classes, help="classes that get a PMI map: topK or indices like 285,281 "
                   f"(default {d.classes})")
    g.add_argument("--target-se", type=float, metavar="BITS", help="adaptive N: patches whose standard error is "
                   "above this get more in-fills (N more, doubling) until they meet it or reach --max-samples")
    g.add_argument("--max-samples", type=int, help="adaptive N: in-fills per patch at most (default 8 × N)")
    g.add_argument("--inverse", metavar="PATH", help="--method mipin: a fitted inverse (default: <model stem>.mipin.onnx "
                   "beside the model, or the shipped one for the shipped classifier)")
    g.add_argument("--rise-grid", type=int, default=d.rise_grid, help=f"RISE mask grid s×s (default {d.rise_grid})")
    g.add_argument("--rise-p", type=float, default=d.rise_p, help="RISE probability of keeping a cell (default "
                   f"{d.rise_p})")
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
    options.add_incremental(r)
    r.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray (the ray extra): several images are spread over one actor per CPU slot (per GPU "
                   "with --device cuda); one image is split by patch positions across them and merged, the same "
                   "maps as one process. ADDRESS: an existing cluster (auto, ray://host:port); default: a local one")
    r.add_argument("--out", default="out", help="output folder (default ./out)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace existing files in --out that an earlier infolens run did not write")
    r.add_argument("--no-png", action="store_true", help="write only the .npz and .json")
    r.add_argument("--mask-insignificant", action="store_true", help="PNGs: grey out pixels whose map value is within "
                   "two Monte-Carlo standard errors of 0 (|value| < 2 s.e.)")
    options.add_quiet(r, "no progress bar, no per-image summary")


def build_explainer(args):
    """The Explainer the flags describe (classifier, sampler, method settings): a Ray actor calls it too."""
    from ..methods import Explainer, method_class
    from ..samplers import load_sampler

    clf = options.classifier(args)
    default_sampler = method_class(args.method).default_sampler
    sampler = None if default_sampler is None else load_sampler(
        options.sampler_name(args, default_sampler), K=args.K, model=args.sampler_model, device=clf.placement,
        coupling=args.coupling)
    return Explainer(clf, sampler, batch_size=args.batch_size, progress=not args.quiet and args.ray is None,
                     rise_grid=args.rise_grid, rise_p=args.rise_p, target_se=args.target_se,
                     max_samples=args.max_samples, inverse=args.inverse)


def samples(args) -> int:
    return args.N if args.N is not None else params.ExplainConfig.default_samples(args.method)


@contextlib.contextmanager
def _writing(path: str, out: str):
    """The output folder failing mid-run (full, read-only, gone) is one line for this image, naming --out; the
    other images go on.  An error about another file (the input image) stays what it is."""
    try:
        yield
    except OSError as err:
        if err.filename is not None and os.path.dirname(os.path.abspath(err.filename)) != os.path.abspath(out):
            raise
        raise InfolensError(f"cannot write the results into {out}: {err.strerror or err}", "out") from None


def explain_one(args, explainer, path: str, stem: str, out: str, by_content: dict | None = None, compute=None):
    """Explain one image file into `out` under `stem` (with the result lock, refusing foreign files) → (the
    Explanation, its files).  by_content: sha256 → explanation, to reuse one for a file of identical bytes.
    compute(image, notes) → Explanation replaces the explainer's own run (the Ray split)."""
    from ..catalog import file_sha256
    from ..explanation import check_outputs
    from ..images import read_image
    from ..outfiles import result_lock

    by_content = {} if by_content is None else by_content
    with _writing(path, out), result_lock(out, stem):
        check_outputs(out, stem, args.overwrite)
        digest = file_sha256(path) if os.path.isfile(path) else None
        e = by_content.get(digest)
        if e is not None:
            _notice(args, f"{path}: same file content as {e.source}; its explanation is reused")
            e = dataclasses.replace(e, source=path)
        else:
            notes: list[str] = []
            image = read_image(path, background=args.background, frame=args.frame, notes=notes,
                               max_pixels=args.max_pixels)
            if compute is not None:
                e = compute(image, notes)
            else:
                e = explainer.explain(image, classes=args.classes, stride=args.S, samples=samples(args),
                                      seed=args.seed, method=args.method, source=path, notes=notes)
            for note in e.notes:
                _notice(args, f"{path}: {note}")
            if digest:
                by_content[digest] = e
        files = e.save(out, stem, overwrite=args.overwrite, render=not args.no_png,
                       mask_insignificant=args.mask_insignificant)
    return e, files


def run(args) -> int:
    from ..explanation import result_pattern
    from ..outfiles import prepare_dir

    if args.ray is not None and os.path.exists(args.ray):  # `--ray FOLDER`: the folder is an input, Ray is local
        args.images.insert(0, args.ray)
        args.ray = "local"
    try:  # every problem with --out shows before anything is computed
        if not args.images:
            raise InfolensError("no image given: name image files or folders")
        out = prepare_dir(args.out)
        args.images = expand(args.images)
    except InfolensError as err:
        print(f"infolens: error: {params.with_flag(err)}", file=sys.stderr)
        return 2
    inputs = {os.path.realpath(p) for p in args.images}
    out_real = os.path.realpath(out)
    stems: dict[str, int] = {}
    done_paths: set[str] = set()
    todo = []
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
        pattern = result_pattern(stem)
        clash = [p for p in inputs if os.path.dirname(p) == out_real and pattern.fullmatch(os.path.basename(p))]
        todo.append((path, stem, clash[0] if clash else None))
    _note_one_infill(args)
    if args.ray is not None:
        return _run_ray(args, out, todo)
    explainer = build_explainer(args)
    by_content: dict[str, object] = {}  # sha256 of an image file → its explanation: identical files computed once
    failed = 0
    for path, stem, clash in todo:
        try:
            t0 = time.perf_counter()
            if clash:
                raise InfolensError(f"the results of {path} would overwrite the input image {clash}", "out")
            e, files = explain_one(args, explainer, path, stem, out, by_content)
        except InfolensError as err:
            print(f"infolens: error: {error_line(path, err)}", file=sys.stderr)
            failed += 1
            continue
        _report(args, path, e, time.perf_counter() - t0, out, stem, len(files))
    return 2 if failed else 0


def expand(paths: list[str]) -> list[str]:
    """Folders become their image files (sorted, not recursive); files stay as they are."""
    from ..images import IMAGE_SUFFIXES

    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise InfolensError(f"no image files in the folder {p}")
            out += found
        else:
            out.append(p)
    return out


def _report(args, path, e, seconds, out, stem, n_files) -> None:
    if not args.quiet:
        print(_summary(path, e, seconds, out, stem, n_files))


def _summary(path, e, seconds, out, stem, n_files) -> str:
    """The two lines printed for an explained image."""
    top = ", ".join(f"{lab} ({c}) p={e.probs[c]:.3f}" for c, lab in zip(e.classes, e.labels))
    return (f"{path}: {top}\n  {e.forwards} forwards in {seconds:.1f} s → {os.path.join(out, stem)}.* "
            f"({n_files} files)")


def _run_ray(args, out: str, todo: list) -> int:
    """--ray: one image is split by patch positions across the actors and merged here; several images are spread
    over the actors (Ray Data), each written by its actor into --out."""
    import functools

    import numpy as np

    from ..distributed import ray as engine

    setup = functools.partial(build_explainer, args)
    failed = [t for t in todo if t[2]]
    for path, _, clash in failed:
        print(f"infolens: error: {path}: the results would overwrite the input image {clash} (--out)", file=sys.stderr)
    todo = [t for t in todo if not t[2]]
    if len(todo) == 1:
        (path, stem, _), t0 = todo[0], time.perf_counter()
        explainer = setup()
        ray = engine.connect(args.ray)
        n_slots, _ = engine.slots(ray, args.device)

        def compute(image, notes):
            n = explainer.positions(image, args.S, args.method)
            parts = [(image, idx) for idx in np.array_split(np.arange(n), n_slots) if idx.size]
            _notice(args, f"{n} patch positions split into {len(parts)} shards over the Ray actors (each shard runs "
                    "p(Y|x) once more, counted in the forwards)")
            shards = engine.run_parts(parts, setup, functools.partial(_shard, args), args.ray, args.device)
            return explainer.merge(image, shards, args.classes, args.S, samples(args), args.seed, path, args.method,
                                   notes)

        try:
            e, files = explain_one(args, explainer, path, stem, out, compute=compute)
        except InfolensError as err:
            print(f"infolens: error: {error_line(path, err)}", file=sys.stderr)
            return 2
        _report(args, path, e, time.perf_counter() - t0, out, stem, len(files))
        return 2 if failed else 0
    rows = engine.map_items([{"path": p, "stem": s} for p, s, _ in todo], setup,
                            functools.partial(_ray_item, args, out), args.ray, args.device)
    for row in sorted(rows, key=lambda r: r["path"]):
        if row["error"]:
            print(f"infolens: error: {row['error']}", file=sys.stderr)
        elif not args.quiet:
            print(row["line"])
    return 2 if failed or any(r["error"] for r in rows) else 0


def error_line(path: str, err: InfolensError) -> str:
    """One file's error line: the reason and the flag that fixes it, naming the file once (the library's messages
    about a file name it already; the others get it in front)."""
    line = params.with_flag(err)
    return line if path in str(err) else f"{path}: {line}"


def _shard(args, explainer, part):
    image, positions = part
    return explainer.explain_shard(image, positions, args.classes, args.S, samples(args), args.seed, args.method)


def _ray_item(args, out, explainer, item) -> dict:
    """One image on a Ray actor: its files written into --out; a line for the driver to print."""
    path, stem = str(item["path"]), str(item["stem"])
    t0 = time.perf_counter()
    try:
        e, files = explain_one(args, explainer, path, stem, out)
    except InfolensError as err:
        return {"path": path, "error": error_line(path, err), "line": ""}
    return {"path": path, "error": "", "line": _summary(path, e, time.perf_counter() - t0, out, stem, len(files))}


def _note_one_infill(args) -> None:
    """-N or --target-se with a deterministic sampler (the default among them): more in-fills would be copies."""
    from ..methods import method_class
    from ..samplers import HeuristicSampler

    name = options.sampler_name(args, method_class(args.method).default_sampler)
    if (name in HeuristicSampler.NAMES and HeuristicSampler(name, args.K).deterministic
            and (args.N not in (None, 1) or args.target_se is not None)):
        _notice(args, f"the {name} sampler is deterministic: one in-fill per patch, so -N and --target-se change "
                "nothing (--sampler patchsampler draws N)")


def _notice(args, text: str) -> None:
    if not args.quiet:
        print(f"infolens: note: {text}", file=sys.stderr)
