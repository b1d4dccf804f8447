"""Train a PatchSampler (Yi et al. §III-A) and export it to ONNX with its model card.

A PatchSampler maps the 3K×3K context of a K×K patch (centre hidden) to a categorical
distribution over the 256 values of every centre sub-pixel:
    context uint8 [B, 3K, 3K, C]  →  probs float32 [B, K, K, C, 256] (softmax over the last axis).

    python -m infolens.export.patchsampler --K 8 --channels 3 --data builtin --width 64 \\
        --steps 3600 --batch 32 --seed 0 --out models/
trains on the images of `--data`, exports `models/patchsampler_k8.onnx`, evaluates it through
onnxruntime on held-out windows (bits per sub-pixel; a uniform model scores 8.0), times it, and
writes the card `models/patchsampler_k8.json`.

    python -m infolens.export.patchsampler evaluate --K 8 --write-cards
is `python -m infolens.export.sampler_quality`: the held-out NLL of the shipped sampler against the baselines.
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

from .data import load_images, random_windows

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_SEED = 0  # the same held-out windows for every model of a given K
ONNX_IR_VERSION = 10  # the newest onnxruntime 1.31 accepts
ONNX_OPSET = 17


class PatchSampler(nn.Module):
    """Context uint8 NHWC [B, 3K, 3K, C] → probs float32 [B, K, K, C, 256].

    Reference layout (DESIGN §3) with CPU-sized layers: x/255 → ImageNet mean/std → zero the
    centre K×K; a constant mask channel is appended so every later layer knows exactly where
    the hole is (a zeroed pixel is otherwise just a mean-coloured one). Then two 3×3 convs at
    full resolution (width/2) → 2×2 average pool, stride 2 → crop K//4 on each side, which
    leaves a K×K map over the central 2K×2K → 3×3 convs (width) with dilations 1, 2, …, K/4
    and residual connections, so each output cell sees the whole context at a fraction of the
    reference's K×K kernels → 1×1 heads → softmax over 256 values per sub-pixel.
    The logits are free 256-way logits plus a Gaussian log-density with a predicted mean and
    standard deviation (≥ 0.5 grey levels) per sub-pixel: the smooth unimodal part is learnt
    within a few hundred steps (held-out 5.8 instead of 6.9 bits after 300 steps at K=8), the
    free part adds any other shape, and the sum is still one 1×1 conv after export.
    LeakyReLU(0.2) after every conv but the heads.
    """

    def __init__(self, K: int, C: int = 3, width: int = 64):
        super().__init__()
        if K < 4 or K & (K - 1):
            raise ValueError(f"K must be a power of two ≥ 4, got {K}")
        self.K, self.C, self.width = K, C, width
        stem = max(width // 2, 8)
        mask = torch.ones(1, 1, 3 * K, 3 * K)
        mask[..., K : 2 * K, K : 2 * K] = 0
        self.register_buffer("mask", mask)
        # Grey (C=1) takes the mean of ImageNet's RGB statistics.
        mean = IMAGENET_MEAN if C == 3 else [sum(IMAGENET_MEAN) / 3] * C
        std = IMAGENET_STD if C == 3 else [sum(IMAGENET_STD) / 3] * C
        self.register_buffer("mean", torch.tensor(mean).view(1, C, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, C, 1, 1) * 255)
        self.act = nn.LeakyReLU(0.2)
        self.stem = nn.Sequential(
            nn.Conv2d(C + 1, stem, 3, padding=1), self.act, nn.Conv2d(stem, stem, 3, padding=1), self.act
        )
        self.pool = nn.AvgPool2d(2, 2)
        self.expand = nn.Conv2d(stem, width, 3, padding=1)
        dilations = [2**i for i in range(int(math.log2(K)) - 1)] + [1]
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in dilations)
        self.head = nn.Conv2d(width, 256 * C, 1)
        # Starts as a Gaussian centred on mid-grey with a standard deviation of 20 grey levels.
        self.location_scale = nn.Conv2d(width, 2 * C, 1)
        nn.init.zeros_(self.location_scale.weight)
        nn.init.zeros_(self.location_scale.bias)
        # Gaussian log-density in natural parameters: a·u − b·u²/2 (+ const) with u the value
        # scaled to [-1, 1], a = m/σ², b = 1/σ². It is linear in (a, b), so it joins the head as
        # 2C fixed input columns and export folds it into one 1×1 conv: no per-value work.
        u = torch.linspace(-1, 1, 256)
        basis = torch.zeros(C, 256, 2 * C)
        for c in range(C):
            basis[c, :, c], basis[c, :, C + c] = u, -u * u / 2
        self.register_buffer("basis", basis.reshape(256 * C, 2 * C, 1, 1))

    def logits(self, context: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3K, 3K, C] → logits float32 [B, K, K, C, 256]."""
        K, C = self.K, self.C
        x = context.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std * self.mask
        x = torch.cat([x, self.mask.expand(x.shape[0], 1, 3 * K, 3 * K)], dim=1)
        x = self.pool(self.stem(x))[..., K // 4 : K // 4 + K, K // 4 : K // 4 + K]
        x = self.act(self.expand(x))
        for conv in self.body:
            x = x + self.act(conv(x))
        location, log_sigma = self.location_scale(x).chunk(2, dim=1)  # [B, C, K, K] each, u units
        # σ ≥ 0.5 grey levels keeps |logits| < 1e5, so float32 rounding stays below 0.01 in a logit.
        log_sigma = torch.clamp(log_sigma, min=math.log(0.5 / 20))
        precision = torch.exp(-2 * (math.log(20 / 127.5) + log_sigma))
        features = torch.cat([x, location * precision, precision], dim=1)
        weight = torch.cat([self.head.weight, self.basis], dim=1)
        x = nn.functional.conv2d(features, weight, self.head.bias)  # channel c·256 + value
        return x.view(-1, C, 256, K, K).permute(0, 3, 4, 1, 2)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3K, 3K, C] → probs float32 [B, K, K, C, 256], each last-axis row summing to 1."""
        return torch.softmax(self.logits(context), dim=-1)


def centres(windows: np.ndarray, K: int) -> np.ndarray:
    """The hidden K×K patch of each window: uint8 [B, 3K, 3K, C] → [B, K, K, C]."""
    return windows[:, K : 2 * K, K : 2 * K]


def nll_bits(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log2-likelihood per sub-pixel: probs [..., 256], targets uint8 [...] (same leading shape).

    8.0 for a uniform model; probabilities are floored at 1e-12 so one zero can't make it infinite.
    """
    p = np.take_along_axis(probs, targets[..., None].astype(np.int64), axis=-1)
    return float(-np.log2(np.maximum(p, 1e-12)).mean())


def train(
    model: PatchSampler,
    images: list,
    steps: int,
    batch: int,
    seed: int,
    lr: float = 4e-3,
    device: str = "cpu",
    progress: bool = True,
) -> list[float]:
    """Adam on the cross-entropy of the centre sub-pixels, cosine-decayed lr; returns per-step losses in nats.

    Windows come fresh from `random_windows` (augmented) every step, from a numpy Generator seeded
    with `seed`. Training itself draws no torch random numbers, so a run is reproducible on one
    device and thread count once the model was built after `torch.manual_seed`.
    """
    rng = np.random.default_rng(seed)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    losses = []
    bar = tqdm(range(steps), desc=f"PatchSampler K={model.K}", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        windows = torch.from_numpy(random_windows(images, model.K, batch, rng)).to(device)
        target = windows[:, model.K : 2 * model.K, model.K : 2 * model.K].long()
        loss = nn.functional.cross_entropy(model.logits(windows).reshape(-1, 256), target.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if len(losses) % 10 == 0:
            bar.set_postfix(bits=f"{np.mean(losses[-10:]) / math.log(2):.3f}")
    model.eval()
    return losses


def export_onnx(model: PatchSampler, path: str) -> None:
    """Write the fixed interface: input `context` uint8 [B, 3K, 3K, C] (dynamic B), output `probs`."""
    model = model.cpu().eval()
    dummy = torch.zeros(2, 3 * model.K, 3 * model.K, model.C, dtype=torch.uint8)
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (dynamo=False); its deprecation notice is noise.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            path,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["context"],
            output_names=["probs"],
            dynamic_axes={"context": {0: "B"}, "probs": {0: "B"}},
        )
    proto = onnx.load(path)
    # The tracer loses the static dims behind the reshape; state the fixed interface instead.
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, ["B", model.K, model.K, model.C, 256]):
        dim.Clear()
        if isinstance(value, str):
            dim.dim_param = value
        else:
            dim.dim_value = value
    proto.ir_version = min(proto.ir_version, ONNX_IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def session(path: str, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session with `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def heldout_windows(images: list, K: int, n: int, seed: int = EVAL_SEED) -> np.ndarray:
    """The n unaugmented windows, uint8 [n, 3K, 3K, C], that every model of a given K is scored on."""
    return random_windows(images, K, n, np.random.default_rng(seed), augment=False)


def evaluate(path: str, K: int, windows: np.ndarray, batch: int = 50) -> float:
    """Bits per sub-pixel of the ONNX sampler at `path` on the centres of `windows` (a uniform model scores 8.0)."""
    sess = session(path)
    bits = 0.0
    for start in range(0, len(windows), batch):
        chunk = windows[start : start + batch]
        bits += nll_bits(sess.run(["probs"], {"context": chunk})[0], centres(chunk, K)) * len(chunk)
    return bits / len(windows)


def cost_ms_per_position(path: str, K: int, C: int, batch: int = 32, threads: int = 2, repeats: int = 20) -> float:
    """Median wall time of one onnxruntime forward of `batch` positions, divided by `batch`, in ms.

    threads=2 matches the classifier budget it is compared with (EfficientNet-Lite0 on both cores).
    """
    sess = session(path, threads)
    context = np.random.default_rng(0).integers(0, 256, (batch, 3 * K, 3 * K, C), dtype=np.uint8)
    for _ in range(3):
        sess.run(["probs"], {"context": context})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sess.run(["probs"], {"context": context})
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) / batch * 1000, 3)


def _command(args: argparse.Namespace) -> str:
    """The command line that rebuilds these files, every option spelled out."""
    parts = ["python", "-m", "infolens.export.patchsampler"]
    for flag in ("K", "channels", "data", "width", "steps", "batch", "lr", "seed", "out", "device", "threads"):
        parts += [f"--{flag}", str(getattr(args, flag))]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:
        from .sampler_quality import main as evaluate_main  # imported on use: evaluate imports this module

        evaluate_main(argv[1:])
        return
    parser = argparse.ArgumentParser(
        prog="python -m infolens.export.patchsampler",
        description="Train a PatchSampler on natural images, export it to ONNX "
        "(context uint8 [B,3K,3K,C] -> probs float32 [B,K,K,C,256]), measure its held-out NLL "
        "(bits per sub-pixel, uniform = 8.0) and CPU cost, and write the model card "
        "OUT/patchsampler_kK.onnx + .json.",
    )
    parser.add_argument("--K", type=int, default=8, help="patch size (power of two ≥ 4); context is 3K×3K")
    parser.add_argument("--channels", type=int, default=3, choices=[3], help="colour channels (RGB only for now)")
    parser.add_argument(
        "--data",
        default="builtin",
        help="'builtin' (scikit-image's natural photos, chelsea and coffee held out) or a folder of images",
    )
    parser.add_argument("--width", type=int, default=64, help="feature channels after the pool (stem uses half)")
    parser.add_argument("--steps", type=int, default=1500, help="Adam steps")
    parser.add_argument("--batch", type=int, default=32, help="windows per step")
    parser.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (cosine decay to 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of torch and of the window sampler")
    parser.add_argument("--out", default="models/", help="output folder")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="training device")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for training")
    parser.add_argument("--eval-windows", type=int, default=2000, help="held-out windows for the NLL")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    train_images = load_images(args.data)
    heldout_images = load_images("builtin-heldout")

    torch.manual_seed(args.seed)  # the initial weights
    model = PatchSampler(args.K, args.channels, args.width)
    start = time.time()
    losses = train(model, train_images, args.steps, args.batch, args.seed, args.lr, args.device)
    seconds = time.time() - start

    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"patchsampler_k{args.K}")
    export_onnx(model, stem + ".onnx")
    windows = heldout_windows(heldout_images, args.K, args.eval_windows)
    nll = {"patchsampler": round(evaluate(stem + ".onnx", args.K, windows), 4), "uniform": 8.0}
    cost = cost_ms_per_position(stem + ".onnx", args.K, args.channels)
    tail = max(1, len(losses) // 20)
    card = {
        "name": f"patchsampler_k{args.K}",
        "task": "patch-sampler",
        "K": args.K,
        "C": args.channels,
        "width": args.width,
        "architecture": (
            f"{' '.join(model.__doc__.split(chr(10), 1)[1].split())} "
            f"Parameters: {sum(p.numel() for p in model.parameters())}. Cheaper than the reference "
            "(conv K×K ×(2+log2 K), 256 filters, conv(256·C, K) head) so that a CPU runtime can "
            "afford it: dilated 3×3 convs give the same field of view, the 1×1 head keeps the "
            "256-way output cheap."
        ),
        "interface": {
            "input": f"context uint8 [B,{3 * args.K},{3 * args.K},{args.channels}]",
            "output": f"probs float32 [B,{args.K},{args.K},{args.channels},256]",
        },
        "training": {
            "data": [name for name, _ in train_images],
            "heldout": [name for name, _ in heldout_images],
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "seed": args.seed,
            "seconds": round(seconds, 1),
            "device": args.device,
            "threads": args.threads,
            "torch": torch.__version__,
            "final_loss": round(float(np.mean(losses[-tail:])) / math.log(2), 4),
            "final_loss_unit": f"bits per sub-pixel, training cross-entropy averaged over the last {tail} steps",
        },
        "nll_bits_per_subpixel": nll,
        "nll_eval": f"{args.eval_windows} unaugmented windows from the held-out images, seed {EVAL_SEED}, "
        "through onnxruntime on the exported file",
        "cost_ms_per_position": cost,
        "cost_measurement": f"onnxruntime {ort.__version__} CPU, batch 32, 2 intra-op threads, median of 20 runs, "
        "softmax and the float32 output included",
        "command": _command(args),
        "licence": "Apache-2.0",
    }
    with open(stem + ".json", "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(json.dumps({k: card[k] for k in ("name", "nll_bits_per_subpixel", "cost_ms_per_position")}))


if __name__ == "__main__":
    main()
