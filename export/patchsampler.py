"""Train a PatchSampler (Yi et al. §III-A) with the `logistic_mixture` head of DESIGN §3 and export it to ONNX.

    python -m infolens.export.patchsampler --K 8 --stages 2 --data ../shared/data/bsds500 \\
        --data ../shared/data/coco128 --minutes 75 --out models/

trains on the training side of the photo folders (export/data.py: split by photo name, several input-space
scales), exports `models/patchsampler_k8.onnx`, scores it through onnxruntime on windows of the validation photos
in the classifier's input space (bits per sub-pixel, uniform = 8.0), times it, and writes the card
`models/patchsampler_k8.json`. `python -m infolens.export.sampler_quality` then adds the comparison table.

The ONNX interface (DESIGN §3): inputs `context` uint8 [B, 3K, 3K, 3] and, when T > 1, `stage` int64 [B];
outputs `patch_logits` [B, S], `pixel_logits` [B, S, K, K, M], `loc`, `log_scale`, `coeff` [B, S, K, K, 3, M]
(float32, grey levels); metadata `stages` = the K×K grid of stage indices and `context_features` = the name of the
ring-only tensor that the runtime computes once per position and feeds to every stage call.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

from infolens.samplers import PatchSampler as RuntimeSampler
from infolens.samplers.interface import CONTEXT, META_FEATURES, META_STAGES, MIXTURE_OUTPUTS, STAGE

from . import data
from .patchsampler_net import PatchSampler, log_likelihood, stage_grid

ONNX_IR_VERSION = 10  # the newest onnxruntime 1.31 accepts
ONNX_OPSET = 17
CONTEXT_FEATURES = "context_features"  # the ring-only tensor the runtime computes once per position (DESIGN §3)


def train(model: PatchSampler, images: list[np.ndarray], seconds: float, batch: int, seed: int, lr: float,
          device: str = "cpu", max_steps: int | None = None, progress: bool = True) -> dict:
    """Adam on the exact discretized-logistic NLL of each window's scored pixels, for a wall-time budget.

    Each window gets a uniformly drawn stage t and is scored on the pixels of stage t, so the loss per
    sub-pixel is an unbiased estimate of the joint NLL per sub-pixel. The learning rate warms up over 200 steps
    and decays by a cosine over the time budget (not the step count, which a shared machine makes unknowable).
    Returns steps, seconds and the loss history (bits per sub-pixel, mean of every 50 steps).
    """
    rng = np.random.default_rng(seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    K, T = model.K, model.T
    grid = torch.from_numpy(stage_grid(K, T)).to(device)
    counts = torch.bincount(grid.view(-1), minlength=T).float() * 3
    start, step, history, window = time.time(), 0, [], []
    bar = tqdm(desc=f"PatchSampler K={K} T={T}", disable=not progress, dynamic_ncols=True, unit="step")
    while True:
        done = (time.time() - start) / seconds if seconds > 0 else 1.0
        if done >= 1 or (max_steps is not None and step >= max_steps):
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        windows = torch.from_numpy(data.random_windows(images, K, batch, rng)).to(device)
        stage = torch.from_numpy(rng.integers(T, size=batch)).to(device)
        scored = (grid.unsqueeze(0) == stage.view(-1, 1, 1)).float()
        outputs = model(windows, stage)
        nats = -log_likelihood(outputs, windows[:, K : 2 * K, K : 2 * K], scored)
        loss = (nats / counts[stage]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        window.append(loss.item() / math.log(2))
        if len(window) == 50:
            history.append(round(float(np.mean(window)), 4))
            window = []
            bar.set_postfix(bits=f"{history[-1]:.3f}")
        bar.update()
    bar.close()
    model.eval()
    return {"steps": step, "seconds": round(time.time() - start, 1), "history": history}


def export_onnx(model: PatchSampler, path: str) -> None:
    """Write the interface of DESIGN §3: `context` (+ `stage` when T > 1) → MIXTURE_OUTPUTS, dynamic batch, metadata
    `stages` = JSON K×K grid, `context_features` = the encoder output's name."""
    model = model.cpu().eval()
    K, T = model.K, model.T
    dummy = torch.zeros(2, 3 * K, 3 * K, 3, dtype=torch.uint8)
    inputs, names = ((dummy, torch.zeros(2, dtype=torch.int64)), [CONTEXT, STAGE]) if T > 1 else ((dummy,), [CONTEXT])
    axes = {name: {0: "B"} for name in names + list(MIXTURE_OUTPUTS)}
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (dynamo=False); its deprecation notice is noise.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # The stride-1 slices of the fine path are not constant-folded; the graph is still exact (parity-tested).
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(model, inputs, path, dynamo=False, opset_version=ONNX_OPSET, input_names=names,
                          output_names=list(MIXTURE_OUTPUTS), dynamic_axes=axes)
    proto = onnx.load(path)
    shapes = {"patch_logits": ["B", model.S], "pixel_logits": ["B", model.S, K, K, model.M]}
    for output in proto.graph.output:
        # The tracer loses the static dims behind the reshapes; state the fixed interface instead.
        dims = shapes.get(output.name, ["B", model.S, K, K, 3, model.M])
        shape = output.type.tensor_type.shape
        shape.ClearField("dim")
        for value in dims:
            dim = shape.dim.add()
            if isinstance(value, str):
                dim.dim_param = value
            else:
                dim.dim_value = value
    _name_context_features(proto, model.width)
    for key, value in ((META_STAGES, json.dumps(stage_grid(K, T).tolist())), (META_FEATURES, CONTEXT_FEATURES)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.ir_version = min(proto.ir_version, ONNX_IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def _name_context_features(proto: onnx.ModelProto, width: int) -> None:
    """Rename the encoder's output, the one tensor the `/encoder/` nodes pass to the rest, CONTEXT_FEATURES, and
    declare it float [B, width, 4, 4], so a runtime can cut the graph there (onnx.utils.Extractor)."""
    nodes = proto.graph.node
    inside = [n for n in nodes if n.name.startswith("/encoder/")]
    made = {o for n in inside for o in n.output}
    crossing = sorted({i for n in nodes if not n.name.startswith("/encoder/") for i in n.input if i in made})
    if len(crossing) != 1:
        raise RuntimeError(f"the encoder should hand one tensor to the rest of the graph, found {crossing}")
    for n in nodes:
        for names in (n.input, n.output):
            for k, name in enumerate(names):
                if name == crossing[0]:
                    names[k] = CONTEXT_FEATURES
    proto.graph.value_info.append(onnx.helper.make_tensor_value_info(
        CONTEXT_FEATURES, onnx.TensorProto.FLOAT, ["B", width, 4, 4]))


def cost_ms_per_position(path: str, samples: int = 8, positions: int = 32, repeats: int = 10) -> float:
    """Wall time of everything the runtime's PatchSampler does for one patch position with N = `samples`, in ms:
    its model calls (a split graph's encoder once, stage 0 once, one call per sample for each later stage), the
    uniforms and the drawing — `sample()` on `positions` positions of a seeded random image, as the engine calls
    it, with the runtime's session options; median of `repeats` after 2 warm-up calls.
    """
    sampler = RuntimeSampler(path)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    ys = rng.integers(0, 224 - sampler.K + 1, positions)
    xs = rng.integers(0, 224 - sampler.K + 1, positions)
    times = []
    for repeat in range(repeats + 2):
        rngs = [np.random.default_rng([repeat, p]) for p in range(positions)]
        start = time.perf_counter()
        sampler.sample(image, ys, xs, samples, rngs)
        if repeat >= 2:
            times.append(time.perf_counter() - start)
    return round(float(np.median(times)) / positions * 1000, 3)


def _command(args: argparse.Namespace) -> str:
    """The command line that rebuilds these files, every option spelled out."""
    parts = ["python", "-m", "infolens.export.patchsampler"]
    values = {**vars(args), "pixel": args.pixel or args.width}
    for flag in ("K", "stages", "mixtures", "width", "stem", "pixel", "minutes", "batch", "lr", "seed", "out", "device",
                 "threads", "eval_per_photo"):
        parts += [f"--{flag.replace('_', '-')}", str(values[flag])]
    for folder in args.data:
        parts += ["--data", folder]
    if args.init:  # the run continued from these weights: without them the command trains from scratch
        parts += ["--init", args.init]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infolens.export.patchsampler",
        description="Train a logistic-mixture PatchSampler on the training side of photo folders, export it to "
        "ONNX (DESIGN §3), score it on the validation photos in the input space (bits per sub-pixel, uniform = "
        "8.0), time it, and write OUT/patchsampler_kK.onnx + .json.",
    )
    parser.add_argument("--K", type=int, default=8, help="patch size (power of two ≥ 4); context is 3K×3K")
    parser.add_argument("--stages", type=int, default=2, choices=[1, 2, 4], help="stages T (1: one call)")
    parser.add_argument("--mixtures", type=int, default=5, help="logistic components M per pixel")
    parser.add_argument("--width", type=int, default=64, help="channels of the coarse path and the head")
    parser.add_argument("--stem", type=int, default=32, help="channels of the full-resolution 3×3 convs")
    parser.add_argument("--pixel", type=int, default=None,
                        help="channels of the per-pixel 1×1 convs before the head (default: --width); they run at "
                        "full resolution once per sample, the bulk of a stage call")
    parser.add_argument("--data", action="append", required=True,
                        help="folder of photos, read recursively (repeatable); 1 in 10 photos, by name hash, is "
                        "held out for validation")
    parser.add_argument("--minutes", type=float, default=60, help="training wall time")
    parser.add_argument("--max-steps", type=int, default=None, help="stop earlier after this many steps")
    parser.add_argument("--batch", type=int, default=64, help="windows per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of torch and of the window draw")
    parser.add_argument("--out", default="models/", help="output folder")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="training device")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for training")
    parser.add_argument("--eval-per-photo", type=int, default=100, help="scoring windows per validation photo")
    parser.add_argument("--checkpoint", help="save the trained weights here (torch state dict) before export")
    parser.add_argument("--init", help="start from these weights (a --checkpoint file); --minutes 0 only exports")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    try:
        photos = data.load_photos(args.data)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train_photos, val_photos = data.split(photos)
    images = data.training_scales(train_photos)

    torch.manual_seed(args.seed)
    model = PatchSampler(args.K, args.stages, args.mixtures, args.width, args.stem, pixel=args.pixel)
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu"))
    run = train(model, images, args.minutes * 60, args.batch, args.seed, args.lr, args.device, args.max_steps)
    if args.checkpoint:
        torch.save(model.state_dict(), args.checkpoint)

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"patchsampler_k{args.K}")
    export_onnx(model, stem + ".onnx")
    windows, owner = data.heldout_windows(data.input_space(val_photos), args.K, args.eval_per_photo)
    bits = -RuntimeSampler(stem + ".onnx").log2prob(windows) / (3 * args.K**2)
    per_photo = np.bincount(owner, bits) / np.bincount(owner)
    card = {
        "name": f"patchsampler_k{args.K}",
        "task": "patch-sampler",
        "head": "logistic_mixture",
        "K": args.K, "C": 3, "S": model.S, "M": args.mixtures, "T": args.stages,
        "stages": stage_grid(args.K, args.stages).tolist(),
        "architecture": f"{' '.join(PatchSampler.__doc__.split())} Parameters: "
        f"{sum(p.numel() for p in model.parameters())}; width {args.width}, stem {args.stem}, pixel {model.pixel}.",
        "interface": {
            "inputs": f"context uint8 [B,{3 * args.K},{3 * args.K},3]" + (", stage int64 [B]" if args.stages > 1 else ""),
            "outputs": f"patch_logits [B,1]; pixel_logits [B,1,{args.K},{args.K},{args.mixtures}]; loc, log_scale, "
            f"coeff [B,1,{args.K},{args.K},3,{args.mixtures}] (float32, grey levels; DESIGN §3)",
        },
        "training": {
            "data": args.data,
            "photos": len(photos), "train_photos": len(train_photos), "validation_photos": len(val_photos),
            "split": "validation = SHA-1 of '<folder name>/<path in folder>' ≡ 0 mod 10 (infolens.export.data.split)",
            "scales": f"shorter side {list(data.TRAIN_SIDES)} px where not enlarging: {len(images)} training images",
            "windows": "3K×3K at uniform positions over 0..H−K (zero padding at the border), horizontal flips",
            "steps": run["steps"], "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "seconds": run["seconds"], "device": args.device, "threads": args.threads, "torch": torch.__version__,
            "loss_bits_per_50_steps": run["history"],
        },
        "nll_bits_per_subpixel": {"patchsampler": round(float(bits.mean()), 4), "uniform": 8.0},
        "nll_worst_photo": round(float(per_photo.max()), 4),
        "nll_eval": f"{args.eval_per_photo} windows per validation photo ({len(val_photos)} photos) in the 224×224 "
        "input space (shorter side 224, centre crop, zero-padded by K), positions uniform over all, seed 0; "
        "exact joint likelihood through onnxruntime (infolens.samplers.PatchSampler.log2prob)",
        "cost_ms_per_position": cost_ms_per_position(stem + ".onnx"),
        "cost_measurement": f"onnxruntime {ort.__version__} CPU ({os.cpu_count()} cores, the runtime's session "
        "options), infolens.samplers.PatchSampler.sample on 32 positions with N = 8, all of it (split graph: encoder "
        "once per position, stage 0 once, stage 1 once per sample; uniforms; drawing), median of 10",
        "command": _command(args),
        "licence": "Apache-2.0 (weights); trained on photos whose own licences are in ../shared/data/README.md",
    }
    with open(stem + ".json", "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(json.dumps({k: card[k] for k in ("name", "nll_bits_per_subpixel", "nll_worst_photo", "cost_ms_per_position")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
