"""The PatchSampler network (Yi et al. §III-A) with the `logistic_mixture` head of DESIGN §3, in PyTorch: the
context encoder over the ring, the pixel decoder per stage, and the exact log-likelihood it is trained on.
export/patchsampler.py trains it and exports it to ONNX."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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
