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
from torch.nn import functional as F
from tqdm import tqdm

from infolens.samplers import PatchSampler as RuntimeSampler
from infolens.samplers.interface import CONTEXT, META_FEATURES, META_STAGES, MIXTURE_OUTPUTS, STAGE

from . import data

ONNX_IR_VERSION = 10  # the newest onnxruntime 1.31 accepts
ONNX_OPSET = 17
CONTEXT_FEATURES = "context_features"  # the ring-only tensor the runtime computes once per position (DESIGN §3)
MIN_LOG_SCALE = math.log(0.05)  # σ ≥ 0.05 grey levels: a bin then holds > 0.99 of a component, no sharper is needed


def stage_grid(K: int, T: int) -> np.ndarray:
    """int64 [K, K] stage of every patch pixel: T=1 all 0; T=2 checkerboard (i+j) % 2; T=4 the four cells of
    every 2×2 block (2·(i % 2) + j % 2), so each later pixel has already-drawn neighbours on every side."""
    i, j = np.meshgrid(np.arange(K), np.arange(K), indexing="ij")
    grids = {1: np.zeros((K, K), np.int64), 2: (i + j) % 2, 4: 2 * (i % 2) + j % 2}
    if T not in grids:
        raise ValueError(f"stages must be 1, 2 or 4, got {T}")
    return grids[T].astype(np.int64)


class ContextEncoder(nn.Module):
    """The coarse path over the ring: uint8 context [B, 3K, 3K, 3] → features float32 [B, width, 4, 4].

    The context scaled to about ±2 and multiplied by the ring mask, with that mask, through a stride-f patchify
    conv to a 12×12 grid (f = K/4) and dilated residual 3×3 convs of `width` channels (dilations 1, 2, 4, 1: the
    field covers the whole window); the middle 4×4 cells, the patch's, are kept. It sees neither the centre nor
    the stage, so one call serves every stage and sample of a position (exported as `context_features`).
    """

    def __init__(self, K: int, width: int):
        super().__init__()
        self.f = K // 4
        ring = torch.ones(1, 1, 3 * K, 3 * K)
        ring[..., K : 2 * K, K : 2 * K] = 0
        self.register_buffer("ring", ring)
        self.act = nn.LeakyReLU(0.2)
        self.patchify = nn.Conv2d(4, width, self.f, stride=self.f)
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in (1, 2, 4, 1))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        x = _scaled(context) * self.ring
        coarse = self.act(self.patchify(torch.cat([x, self.ring.expand_as(x[:, :1])], dim=1)))
        for conv in self.body[:2]:
            coarse = coarse + self.act(conv(coarse))
        # The last two convs only where they reach the patch's 4×4 cells (rows and columns 4..7): the dilation-4
        # conv on 6×6 cells around them, the last on those 4×4 (zero padding as before; 41 % of the body's work)
        third, last = self.body[2:]
        near = F.conv2d(F.pad(coarse, (4, 4, 4, 4))[..., 3:17, 3:17], third.weight, third.bias, dilation=4)
        near = coarse[..., 3:9, 3:9] + self.act(near)
        return near[..., 1:5, 1:5] + self.act(F.conv2d(near, last.weight, last.bias))


def _scaled(context: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, H, W] at about ±2."""
    return (context.permute(0, 3, 1, 2).float() - 127.5) / 64.0


class PatchSampler(nn.Module):
    """uint8 context [B, 3K, 3K, 3] (+ stage int64 [B]) → the logistic-mixture parameters of DESIGN §3.

    Split so that the expensive part runs once per position: a `ContextEncoder` over the ring (blind to the centre
    and the stage) gives `context_features` for the patch's 4×4 cells; the stage call adds what the centre pixels
    of earlier stages say, through a stride-f conv over the centre (inputs: those pixels, their mask, the mask of
    the pixels being scored) and one 3×3 conv over the 4×4 cells, both residual, so every cell knows the whole
    patch's revealed pixels; upsampled to K×K. A fine path at full resolution over the patch and 2 pixels around it
    (two 3×3 convs of `stem` channels) sees the revealed pixels next to each pixel. Hidden pixels enter nothing:
    every input is multiplied by the mask of the pixels it may see (the ring, and the centre pixels of stages < t).
    Concatenated, two 1×1 convs (`pixel` channels, default `width`), then a 1×1 head giving per pixel and hypothesis M mixture logits, 3M
    locations, 3M log-scales and 3M coupling coefficients. LeakyReLU(0.2) throughout. Locations are 127.5 + 64·raw;
    log-scales start at log 8 and are floored at log 0.05; the coupling coefficients are 2·tanh(raw), starting at
    α = γ = 1, β = 0 (not bounded to ±1: DESIGN §3). S = 1 patch hypothesis: `patch_logits` is 0.
    """

    def __init__(self, K: int, T: int = 2, M: int = 5, width: int = 64, stem: int = 32, S: int = 1,
                 pixel: int | None = None):
        super().__init__()
        if K < 4 or K & (K - 1):
            raise ValueError(f"K must be a power of two ≥ 4, got {K}")
        if S != 1:
            raise ValueError("only S = 1 patch hypothesis is implemented (DESIGN §3: S > 1 bought 0.01 bits)")
        pixel = pixel or width
        self.K, self.T, self.M, self.S, self.width, self.stem_width, self.pixel = K, T, M, S, width, stem, pixel
        self.f = K // 4
        self.register_buffer("grid", torch.from_numpy(stage_grid(K, T)).view(1, 1, K, K))
        act = nn.LeakyReLU(0.2)
        self.act = act
        self.encoder = ContextEncoder(K, width)
        self.centre = nn.Conv2d(5, width, self.f, stride=self.f)
        self.join = nn.Conv2d(width, width, 3, padding=1)
        self.fine = nn.Sequential(nn.Conv2d(5, stem, 3), act, nn.Conv2d(stem, stem, 3), act)
        self.mix = nn.Sequential(nn.Conv2d(width + stem, pixel, 1), act, nn.Conv2d(pixel, pixel, 1), act)
        self.head = nn.Conv2d(pixel, 10 * M, 1)
        with torch.no_grad():
            for conv in (self.centre, self.join):  # residual branches start closed: the stage call adds nothing yet
                conv.weight.zero_()
                conv.bias.zero_()
            self.head.weight.mul_(0.1)
            bias = self.head.bias.view(10, M)
            bias.zero_()
            bias[4:7] = math.log(8.0)  # log-scales R, G, B
            bias[7] = bias[9] = math.atanh(0.5)  # α = γ = 1
            bias[1:4] += torch.linspace(-0.5, 0.5, M)  # spread the components' locations

    def masks(self, stage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible and scored centre pixel masks, float [B, 1, K, K], for stage int64 [B]."""
        t = stage.view(-1, 1, 1, 1)
        return (self.grid < t).float(), (self.grid == t).float()

    def forward(self, context: torch.Tensor, stage: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """context uint8 [B, 3K, 3K, 3], stage int64 [B] (None: stage 0) → patch_logits [B, S], pixel_logits
        [B, S, K, K, M], loc, log_scale, coeff [B, S, K, K, 3, M], float32."""
        K, M, B = self.K, self.M, context.shape[0]
        if stage is None:
            stage = torch.zeros(B, dtype=torch.int64, device=context.device)
        features = self.encoder(context)
        visible, scored = self.masks(stage)
        window = F.pad(visible, (2, 2, 2, 2), value=1.0)  # the ring's 2 pixels around the patch are visible
        fine_in = _scaled(context[:, K - 2 : 2 * K + 2, K - 2 : 2 * K + 2]) * window
        fine_in = torch.cat([fine_in, window, F.pad(scored, (2, 2, 2, 2))], dim=1)
        centre_in = fine_in[..., 2 : K + 2, 2 : K + 2]
        h = features + self.act(self.centre(centre_in))
        h = h + self.act(self.join(h))
        # The first 1×1 mixing conv of [upsampled coarse cells, fine] is split by its input channels: the coarse
        # half runs on the 4×4 cells before they are upsampled, not on K×K copies (the same function; upsampling
        # 96 channels and concatenating were a quarter of a stage call).
        first, W, f = self.mix[0], self.width, self.f
        coarse = F.interpolate(F.conv2d(h, first.weight[:, :W], first.bias), scale_factor=f, mode="nearest")
        fine = F.conv2d(self.fine(fine_in), first.weight[:, W:])
        h = self.head(self.mix[1:](coarse + fine))  # mix[1:]: its activation, then the rest; [B, 10M, K, K]
        h = h.view(B, 10, M, K, K).permute(0, 3, 4, 1, 2)  # [B, K, K, 10, M]
        pixel_logits = h[..., 0, :].unsqueeze(1)
        loc = (127.5 + 64.0 * h[..., 1:4, :]).unsqueeze(1)
        log_scale = torch.clamp(h[..., 4:7, :], min=MIN_LOG_SCALE).unsqueeze(1)
        coeff = (2 * torch.tanh(h[..., 7:10, :])).unsqueeze(1)
        patch_logits = (pixel_logits[:, :, 0, 0, 0] * 0.0)  # S = 1: a constant 0 that keeps the batch dimension
        return patch_logits, pixel_logits, loc, log_scale, coeff


def _log_bin(v: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log L(v; μ, σ) of DESIGN §3 in nats (discretized logistic, edge bins take the tails), stable in float32:
    a bin above the mean is a difference of upper tails; where a bin's mass underflows, its density times 1."""
    inv = torch.exp(-log_scale)
    c = v - mu
    hi, lo = inv * (c + 0.5), inv * (c - 0.5)
    upper = lo > 0
    mass = torch.where(upper, torch.sigmoid(-lo) - torch.sigmoid(-hi), torch.sigmoid(hi) - torch.sigmoid(lo))
    mid = inv * c
    log_density = mid - log_scale - 2 * F.softplus(mid)
    inner = torch.where(mass > 1e-6, torch.log(mass.clamp_min(1e-12)), log_density)
    return torch.where(v < 0.5, hi - F.softplus(hi), torch.where(v > 254.5, -F.softplus(lo), inner))


def log_likelihood(outputs: tuple[torch.Tensor, ...], patch: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Natural log of p(patch's scored pixels) under the outputs, float [B].

    patch uint8/float [B, K, K, 3]; scored float [B, K, K] (1 = pixel of this stage); outputs as forward().
    """
    patch_logits, pixel_logits, loc, log_scale, coeff = outputs
    x = patch.float().unsqueeze(1).unsqueeze(-1)  # [B, 1, K, K, 3, 1]
    r, g = x[..., 0, :], x[..., 1, :]
    mu_r = loc[..., 0, :]
    mu_g = loc[..., 1, :] + coeff[..., 0, :] * r
    mu_b = loc[..., 2, :] + coeff[..., 1, :] * r + coeff[..., 2, :] * g
    mu = torch.stack([mu_r, mu_g, mu_b], dim=-2)
    per_component = _log_bin(x, mu, log_scale).sum(-2) + torch.log_softmax(pixel_logits, dim=-1)  # [B,S,K,K,M]
    per_pixel = torch.logsumexp(per_component, dim=-1) * scored.unsqueeze(1)
    return torch.logsumexp(torch.log_softmax(patch_logits, dim=-1) + per_pixel.sum((2, 3)), dim=-1)


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
