"""What several commands share: the one-line-error parser, value types, and each common option declared once (the
commands call these with their own defaults)."""
from __future__ import annotations

import argparse
import sys

from .. import params


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def module_doc(name: str) -> str:
    """A module's docstring, read from its source without importing it: the help text of a command whose module
    imports heavy packages (the onnx package alone costs 0.8 s of every start)."""
    import ast
    import importlib.util

    with open(importlib.util.find_spec(name).origin) as f:
        return ast.get_docstring(ast.parse(f.read()))


def choices(param: str) -> tuple:
    return params.PARAMS[param].allowed()


def floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def size(text: str) -> list[int]:
    try:
        hw = [int(v) for v in text.split(",")]
    except ValueError:
        hw = []
    if len(hw) != 2:
        raise argparse.ArgumentTypeError(f"expected H,W, got {text!r}")
    return hw


def add_grid(p, K: int, N: int, N_help: str = "") -> None:
    """-K, -S, -N."""
    p.add_argument("-K", type=int, default=K, help=f"patch size in pixels (default {K})")
    p.add_argument("-S", type=int, default=None, help="stride in pixels (default K: non-overlapping patches)")
    p.add_argument("-N", type=int, default=N, help=N_help or f"in-fills per patch (default {N})")


def add_method(p, help: str) -> None:
    p.add_argument("--method", default=params.ExplainConfig().method, choices=choices("method"), help=help)


def add_sampler(p, default: str | None, help: str) -> None:
    """--sampler and --sampler-model."""
    p.add_argument("--sampler", choices=choices("sampler"), default=default, help=help)
    p.add_argument("--sampler-model", metavar="PATH", help="PatchSampler .onnx (either head, staged or not; or "
                   "gaussian .npz) instead of the shipped one for K; given without --sampler, it is the sampler")


def sampler_name(args, default: str | None) -> str | None:
    """The sampler the flags ask for: --sampler; else what --sampler-model holds (a .npz: gaussian; else
    patchsampler), so that a model given alone is used; else `default`."""
    if args.sampler:
        return args.sampler
    if args.sampler_model:
        return "gaussian" if str(args.sampler_model).endswith(".npz") else "patchsampler"
    return default


def add_coupling(p) -> None:
    p.add_argument("--coupling", choices=choices("coupling"), default="pixel",
                   help="categorical-head PatchSampler: a pixel's 3 channels share one random number (default pixel: "
                   "no colour speckle, same per-channel distributions) or not (none: the reference's independent "
                   "sampling); a logistic-mixture PatchSampler couples the channels itself and ignores this")


def add_model(p, card: bool = True) -> None:
    """--model (and --card), and --max-pixels for the images it is given."""
    p.add_argument("--model", metavar="M.onnx", help="classifier (default: shipped efficientnet_lite0.onnx; its card "
                   "gives the preprocessing)")
    if card:
        p.add_argument("--card", metavar="M.json", help="model card (default: M.json beside M.onnx, if present)")
    add_max_pixels(p)


def add_classifier(p) -> None:
    """--model, --card and every preprocessing and output flag (flags win over the card); `classifier(args)` reads
    them."""
    add_model(p)
    p.add_argument("--layout", type=str.upper, choices=choices("layout"), help="input layout (default: inferred)")
    p.add_argument("--channel-order", type=str.upper, choices=choices("channel_order"), help="default RGB")
    p.add_argument("--scale", type=float, help="pixel multiplier before mean/std (e.g. 0.00392 for 1/255; default 1)")
    p.add_argument("--mean", type=floats, help="per-channel mean after scaling, a,b,c (default 0)")
    p.add_argument("--std", type=floats, help="per-channel std after scaling, a,b,c (default 1)")
    p.add_argument("--size", type=size, help="input H,W (default: from the graph)")
    p.add_argument("--resize", choices=choices("resize"), help="how images reach --size: shorter-side-crop (scale to "
                   "cover, centre crop; default), stretch (ignore aspect), letterbox (fit inside, pad with "
                   "--pad-value), none (images must have the size)")
    p.add_argument("--interpolation", choices=choices("interpolation"), help="resize filter (OpenCV's; default auto: "
                   "area when shrinking, linear when enlarging)")
    p.add_argument("--crop-fraction", type=float, metavar="F", help="shorter-side-crop: scale to cover --size / F, "
                   "then crop the centre (0.875: resize 256, crop 224; default 1)")
    p.add_argument("--pad-value", type=floats, metavar="V|R,G,B", help="letterbox padding colour, 0..255 (default 0)")
    p.add_argument("--grayscale", choices=choices("grayscale"), help="single-channel models: how RGB becomes grey, "
                   "then --scale/--mean/--std: bt601 (default; exactly OpenCV's cvtColor), pil (exactly PIL's "
                   "convert('L')), bt709, average")
    p.add_argument("--output-kind", choices=choices("output_kind"),
                   help="probs: softmax probabilities; logits: scores to softmax; sigmoid: multi-label, an independent "
                   "probability per class (IG sums the classes' binary KLs); sigmoid-logits: scores to pass through a "
                   "sigmoid (default auto: from the graph's last op and probe outputs; asks when they cannot tell)")
    p.add_argument("--input-name", help="graph input (default: the only one)")
    p.add_argument("--output-name", help="graph output with class scores (default: the first)")


def add_max_pixels(p, beyond: str = "a larger one is refused, not decoded") -> None:
    p.add_argument("--max-pixels", type=int, default=params.MAX_PIXELS, metavar="N",
                   help=f"an image file's pixels (width × height) at most, read from its header before it is "
                   f"decoded: {beyond} (default {params.MAX_PIXELS:,})")


def classifier(args):
    """The OnnxClassifier the flags of add_classifier describe (the shipped one without --model)."""
    from ..catalog import DEFAULT_CLASSIFIER, shipped
    from ..classifier import OnnxClassifier

    return OnnxClassifier.from_card(
        args.model or shipped(DEFAULT_CLASSIFIER, "model"), args.card, layout=args.layout, size=args.size,
        channel_order=args.channel_order, scale=args.scale, mean=args.mean, std=args.std, resize=args.resize,
        interpolation=args.interpolation, crop_fraction=args.crop_fraction, pad_value=args.pad_value,
        grayscale=args.grayscale, output_kind=args.output_kind, input_name=args.input_name,
        output_name=args.output_name, device=args.device, batch_backend=getattr(args, "batch_backend", "auto"),
        incremental=getattr(args, "incremental", "off"),
        max_pixels=args.max_pixels, **gpu(args))


def add_incremental(p) -> None:
    p.add_argument("--incremental", choices=choices("incremental"), default="off",
                   help="exact incremental inference: each perturbed copy recomputes only the region its patch "
                   "changes, layer by layer, from the photo's activations (the same maps within float rounding). "
                   "on; auto: where the model can and its plan predicts at least 1.5× fewer multiply-adds at this K "
                   "(`infolens perf --incremental-plan` shows it); off (default). The JSON records what ran")


def add_run(p, device: str | None = "cpu", seed_help: str = "random seed; same seed, same maps",
            gpu_options: bool = True) -> None:
    """--batch-size, --device, the GPU options (`gpu(args)` reads them), --seed."""
    p.add_argument("--batch-size", type=int, default=64, help="classifier images per call (default 64)")
    p.add_argument("--seed", type=int, default=0, help=f"{seed_help} (default 0)")
    add_device(p, device, gpu_options)


def add_device(p, device: str | None = "cpu", gpu_options: bool = True) -> None:
    """--device and the GPU options (`gpu(args)` reads them)."""
    p.add_argument("--device", choices=choices("device"), default=device,
                   help=f"ONNX Runtime device (default {device or 'the explanation’s'})")
    if not gpu_options:
        return
    p.add_argument("--provider", choices=choices("provider"), default="default",
                   help="--device cuda: tensorrt runs the classifier on TensorRT (engines cached under "
                   "~/.cache/infolens/trt), CUDA taking what it does not (default: CUDA)")
    p.add_argument("--fp16", action="store_true", help="run the classifier in float16 (refused when log2 p of the top "
                   "3 classes of the probe images, or of the explained classes, moves by more than --fp16-tolerance; "
                   "the JSON records how far it moved)")
    p.add_argument("--fp16-tolerance", type=float, default=0.1, metavar="BITS",
                   help="--fp16: largest change of a log2 probability accepted, in bits (default 0.1)")
    p.add_argument("--cuda-graph", action="store_true", help="--device cuda: replay each perturbation batch as a "
                   "CUDA graph (fixed shapes: the last batch is padded)")
    p.add_argument("--allow-cpu-fallback", dest="cpu_fallback", action="store_true",
                   help="--device cuda: let ops without a CUDA kernel run on the CPU (default: such an op is an error)")


def gpu(args) -> dict:
    """The OnnxClassifier keywords of add_run's GPU options (their defaults for a command without them)."""
    return {k: getattr(args, k, d) for k, d in (("provider", "default"), ("fp16", False), ("fp16_tolerance", 0.1),
                                                 ("cuda_graph", False), ("cpu_fallback", False))}


def add_fill(p, default: str) -> None:
    p.add_argument("--fill", choices=choices("fill"), default=default,
                   help=f"what replaces removed pixels (default {default}; evaluate/fills.py)")
    p.add_argument("--fill-draws", type=int, default=4, metavar="D",
                   help="patchsampler fill: independent in-fill draws each curve point averages (default 4)")


def add_steps(p, default: int, help: str = "number of steps") -> None:
    p.add_argument("--steps", type=int, default=default, help=f"{help} (default {default})")


def add_quiet(p, help: str = "no progress bar") -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=help)
