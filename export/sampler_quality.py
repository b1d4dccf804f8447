"""How well the shipped PatchSampler models held-out patches, against the baselines, and what its in-fills look like.

    python -m infolens.export.sampler_quality --K 8 16 [--data builtin-heldout|DIR] [--windows 2000] [--seed 0] [--write-cards]
prints the negative log-likelihood of the held-out centre sub-pixels, in bits per sub-pixel, of

    patchsampler  the ONNX PatchSampler through onnxruntime (the number its training run wrote into the card);
    gaussian      PDA's conditional Gaussian (gaussian_kK.npz, ring l = 2): the joint Gaussian density of the
                  K·K·3 patch given its ring at the true integer values, times one unit bin per sub-pixel (no
                  mass is moved for the sampler's clipping to 0..255);
    gaussian_marginals  the same Gaussian's per-sub-pixel marginals, binned as for `mean`: each sub-pixel on its
                  own, as the PatchSampler predicts them;
    mean          a Gaussian per sub-pixel, binned to the 256 integer values (tails into 0 and 255), centred at
                  the per-channel mean of the visible context (the 3K×3K window without its centre, zero padding
                  excluded), one σ per channel fitted by maximum likelihood on training windows;
    histogram     the per-channel histogram of the training windows' centre sub-pixels, +1 per bin: no context;
    uniform       8 bits, the `noise` sampler;

all on the same windows: patchsampler.heldout_windows, the draw the training run scores its model on.
--write-cards adds the table and the protocol to models/patchsampler_kK.json.

    python -m infolens.export.sampler_quality figure --K 8 --out docs/infill_k8.png
draws in-fills of the runtime's samplers (load_sampler, the engine's RNG streams) for patches of the held-out
photo coffee.png in a classifier's 224×224 input space, in the manner of Yi et al., Figs. 3 and 14.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys

import cv2
import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from infolens.catalog import models_dir
from infolens.engine import streams
from infolens.images import read_image, to_input_space
from infolens.samplers import GaussianSampler, load_sampler, pad, windows as cut_windows

from .data import builtin_dir, load_images
from .patchsampler import EVAL_SEED, centres, evaluate as patchsampler_bits, heldout_windows

FLOOR = 1e-12  # the probability floor of patchsampler.nll_bits, for the binned baselines too
TRAIN_WINDOWS = 5000


def draw(images: list, K: int, n: int, seed: int = EVAL_SEED) -> tuple[np.ndarray, np.ndarray]:
    """heldout_windows(images, K, n, seed), uint8 [n, 3K, 3K, 3], and which of their pixels lie inside the
    image, bool [n, 3K, 3K] (False on the zero padding).

    Unaugmented draws depend on the image sizes only, so the same draw on all-ones images marks the inside.
    """
    arrays = [im[1] if isinstance(im, tuple) else im for im in images]
    ones = [np.ones((*a.shape[:2], 1), np.uint8) for a in arrays]
    return heldout_windows(arrays, K, n, seed), heldout_windows(ones, K, n, seed)[..., 0] == 1


def gaussian_nll_bits(x: np.ndarray, mu: np.ndarray, chol: np.ndarray) -> float:
    """Mean over P of −log2 N(x | mu, chol·cholᵀ) / D: x, mu [P, D], chol lower-triangular [D, D]."""
    D = x.shape[1]
    z = solve_triangular(chol, (x - mu).T, lower=True)  # [D, P]
    nats = 0.5 * (D * math.log(2 * math.pi) + (z * z).sum(0)) + np.log(np.diag(chol)).sum()
    return float(nats.mean() / math.log(2) / D)


def gaussian_bits(sampler: GaussianSampler, windows: np.ndarray, K: int) -> tuple[float, float]:
    """Bits per sub-pixel of the PDA Gaussian on the centres of 3K×3K windows: of its joint density, and of its
    per-sub-pixel marginals binned as for `mean` (what a model that predicts every sub-pixel on its own, as the
    PatchSampler does, can get from the same Gaussian).

    The (K+2l)² middle of a window cut from the image zero-padded by K is the window the runtime cuts from the
    image zero-padded by l, so the ring is exactly the one `sample` conditions on.
    """
    l = sampler.l
    mu, chol = sampler.conditional(windows[:, K - l : 2 * K + l, K - l : 2 * K + l])
    x = centres(windows, K).reshape(len(windows), -1)
    marginal_sd = np.sqrt((chol * chol).sum(1))
    return gaussian_nll_bits(x.astype(np.float64), mu, chol), float(binned_gaussian_bits(x, mu, marginal_sd).mean())


def context_mean(windows: np.ndarray, inside: np.ndarray, K: int) -> np.ndarray:
    """float64 [n, 3]: per-channel mean of the visible context (inside the image, outside the centre K×K);
    127.5 where none is visible."""
    visible = inside.copy()
    visible[:, K : 2 * K, K : 2 * K] = False
    count = visible.sum((1, 2))[:, None]
    total = (windows * visible[..., None]).sum((1, 2), dtype=np.float64)
    return np.where(count > 0, total / np.maximum(count, 1), 127.5)


def binned_gaussian_bits(values: np.ndarray, mu: np.ndarray, sigma) -> np.ndarray:
    """−log2 P(v) per value: uint8 values under N(mu, sigma²) binned to the integers 0..255 (bins of width 1, the
    tails below 0.5 and above 254.5 going to 0 and 255); mu and sigma broadcast against values."""
    v = values.astype(np.float64)
    lo = np.where(v == 0, -np.inf, (v - 0.5 - mu) / sigma)
    hi = np.where(v == 255, np.inf, (v + 0.5 - mu) / sigma)
    # A bin above the mean as a difference of upper tails: no cancellation far out in the tail.
    p = np.where(lo > 0, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))
    return -np.log2(np.maximum(p, FLOOR))


def fit_sigma(windows: np.ndarray, inside: np.ndarray, K: int) -> np.ndarray:
    """float64 [3]: the maximum-likelihood σ per channel of the `mean` baseline on these (training) windows."""
    mu = context_mean(windows, inside, K)[:, None, None, :]
    target = centres(windows, K)
    sigma = []
    for c in range(3):
        t, m = target[..., c], mu[..., c]
        fit = minimize_scalar(lambda s: binned_gaussian_bits(t, m, math.exp(s)).mean(),
                              bounds=(math.log(0.3), math.log(256)), method="bounded", options={"xatol": 1e-4})
        sigma.append(math.exp(fit.x))
    return np.array(sigma)


def mean_bits(windows: np.ndarray, inside: np.ndarray, K: int, sigma: np.ndarray) -> float:
    """Bits per sub-pixel of the `mean` baseline with per-channel σ [3]."""
    mu = context_mean(windows, inside, K)[:, None, None, :]
    return float(binned_gaussian_bits(centres(windows, K), mu, sigma).mean())


def fit_histogram(windows: np.ndarray, K: int) -> np.ndarray:
    """float64 [3, 256]: per-channel distribution of the windows' centre sub-pixels, Laplace-smoothed (+1 per bin)."""
    target = centres(windows, K).reshape(-1, 3)
    counts = np.stack([np.bincount(target[:, c], minlength=256) for c in range(3)]) + 1.0
    return counts / counts.sum(1, keepdims=True)


def histogram_bits(windows: np.ndarray, K: int, hist: np.ndarray) -> float:
    """Bits per sub-pixel of a context-free per-channel histogram [3, 256]."""
    target = centres(windows, K).reshape(-1, 3).astype(np.int64)
    return float(-np.log2(hist[np.arange(3), target]).mean())


def nll_table(K: int, heldout: list, train: list, model: str, gaussian: str, n: int = 2000,
              seed: int = EVAL_SEED, n_train: int = TRAIN_WINDOWS) -> tuple[dict[str, float], dict]:
    """Bits per sub-pixel of every model on the same n held-out windows, rounded to 4 decimals, and what the
    baselines fitted (σ of `mean`, grey levels)."""
    windows, inside = draw(heldout, K, n, seed)
    train_windows, train_inside = draw(train, K, n_train, seed)
    sigma = fit_sigma(train_windows, train_inside, K)
    joint, marginals = gaussian_bits(GaussianSampler.load(gaussian), windows, K)
    bits = {
        "patchsampler": patchsampler_bits(model, K, windows),
        "gaussian": joint,
        "gaussian_marginals": marginals,
        "mean": mean_bits(windows, inside, K, sigma),
        "histogram": histogram_bits(windows, K, fit_histogram(train_windows, K)),
        "uniform": 8.0,
    }
    return {k: round(v, 4) for k, v in bits.items()}, {"mean_sigma_rgb": [round(s, 2) for s in sigma]}


def protocol(K: int, heldout: list, train: list, n: int, seed: int, n_train: int, fitted: dict) -> str:
    """The evaluation protocol in words, for the card."""
    heldout_names, train_names = (", ".join(name for name, _ in images) for images in (heldout, train))
    sigma = ", ".join(f"{s:g}" for s in fitted["mean_sigma_rgb"])
    return (
        f"Bits per sub-pixel: mean -log2 p(true value) over the {K}x{K}x3 centre of {n} unaugmented {3 * K}x{3 * K} "
        f"windows (patchsampler.heldout_windows, seed {seed}) of the held-out images ({heldout_names}), the same "
        "windows for every model. patchsampler: this ONNX file through onnxruntime, probabilities floored at 1e-12. "
        f"gaussian: gaussian_k{K}.npz (PDA, ring 2, cut from the zero-padded image as the runtime does), the joint "
        "Gaussian density of the patch given its ring times one unit bin per sub-pixel (no mass moved for clipping "
        "to 0..255). gaussian_marginals: the same conditional Gaussian's per-sub-pixel marginals, binned as for "
        "mean: each sub-pixel predicted on its own, as the PatchSampler does. mean: a Gaussian per sub-pixel "
        "binned to the integers 0..255 (tails into 0 and 255), centred at the per-channel mean of the visible "
        "context (the window without its centre, zero padding excluded), "
        f"sigma per channel (R, G, B = {sigma}) fitted by maximum likelihood on {n_train} unaugmented windows of "
        f"the training images ({train_names}, seed {seed}). histogram: per-channel histogram of those training "
        "windows' centre sub-pixels, +1 per bin, context-free. uniform: 8 bits, the noise sampler."
    )


def write_card(path: str, table: dict, text: str, command: str) -> None:
    """Merge the table into the card's nll_bits_per_subpixel (other keys kept, after the table's) and record the
    protocol (nll_eval) and this command (nll_command) beside it."""
    with open(path) as f:
        card = json.load(f)
    old = card.get("nll_bits_per_subpixel", {})
    card["nll_bits_per_subpixel"] = {**table, **{k: v for k, v in old.items() if k not in table}}
    card["nll_eval"] = text
    card.pop("nll_command", None)
    ordered = {}
    for key, value in card.items():
        ordered[key] = value
        if key == "nll_eval":
            ordered["nll_command"] = command
    with open(path, "w") as f:
        json.dump(ordered, f, indent=2)
        f.write("\n")


# Patch centres (y, x) in coffee.png's 224×224 input space: wood grain, the cup's rim over its red body, the
# spoon's bowl, the saucer's edge against the table.
FIGURE_CENTRES = [(40, 24), (108, 100), (150, 150), (184, 188)]
FIGURE_COLUMNS = [("patchsampler", 3, "pixel"), ("patchsampler", 2, "none"), ("gaussian", 1, None), ("mean", 1, None),
                  ("noise", 1, None)]  # (sampler, draws, PatchSampler coupling)
TILE = 192  # pixels per 3K×3K tile after nearest-neighbour upscaling


def infill_figure(K: int, image: np.ndarray, centres_yx=FIGURE_CENTRES, seed: int = 0) -> np.ndarray:
    """uint8 RGB figure: a row per patch centre, the 3K×3K context as it is, then with the patch in-filled by
    each sampler of FIGURE_COLUMNS (load_sampler, streams(seed, row)) and by the PatchSampler's expected value;
    red ticks beside each tile mark the patch."""
    ys = np.array([min(max(y - K // 2, 0), image.shape[0] - K) for y, _ in centres_yx], np.int64)
    xs = np.array([min(max(x - K // 2, 0), image.shape[1] - K) for _, x in centres_yx], np.int64)
    context = cut_windows(pad(image, K), ys, xs, 3 * K)  # [P, 3K, 3K, 3]
    tiles, titles = [context], ["context (original)"]

    def add(fill, title):
        tile = context.copy()
        tile[:, K : 2 * K, K : 2 * K] = fill
        tiles.append(tile)
        titles.append(title)

    for name, n, coupling in FIGURE_COLUMNS:
        sampler = load_sampler(name, K, coupling=coupling or "pixel")
        fills = sampler.sample(image, ys, xs, n, streams(seed, np.arange(len(ys))))
        for i in range(n):
            label = f"{name} #{i + 1}" + (f", {coupling}" if coupling else "")
            add(fills[:, i], label if n > 1 else {"mean": "mean (patch's own)"}.get(name, name))
        if coupling == "pixel":
            # What the model predicts, without the per-sub-pixel sampling noise: the mean of each categorical.
            expectation = sampler.probs(image, ys, xs) @ np.arange(256, dtype=np.float32)
            add(np.clip(np.rint(expectation), 0, 255).astype(np.uint8), "patchsampler E[x]")
    scale, gap, head = TILE // (3 * K), 10, 30
    side = 3 * K * scale
    out = np.full((head + len(ys) * (side + gap), gap + len(tiles) * (side + gap), 3), 255, np.uint8)
    for col, (tile, title) in enumerate(zip(tiles, titles)):
        x0 = gap + col * (side + gap)
        cv2.putText(out, title, (x0, head - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for row in range(len(ys)):
            y0 = head + row * (side + gap)
            out[y0 : y0 + side, x0 : x0 + side] = cv2.resize(tile[row], (side, side), interpolation=cv2.INTER_NEAREST)
            a, b = K * scale, 2 * K * scale  # the patch's span inside the tile
            out[y0 - 4 : y0 - 1, x0 + a : x0 + b] = (220, 0, 0)
            out[y0 + a : y0 + b, x0 - 4 : x0 - 1] = (220, 0, 0)
    return out


def coffee() -> np.ndarray:
    """scikit-image's coffee.png (held out from PatchSampler training) in a 224×224 classifier input space."""
    return to_input_space(read_image(os.path.join(builtin_dir(), "coffee.png")), (224, 224), "shorter-side-crop")


def _figure_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m infolens.export.sampler_quality figure",
                                 description="In-fills of the runtime's samplers for patches of coffee.png.")
    ap.add_argument("--K", type=int, default=8, help="patch size (a shipped PatchSampler's)")
    ap.add_argument("--out", default=None, help="PNG path (default docs/infill_kK.png)")
    ap.add_argument("--seed", type=int, default=0, help="key of the samplers' RNG streams")
    args = ap.parse_args(argv)
    out = args.out or os.path.join("docs", f"infill_k{args.K}.png")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    cv2.imwrite(out, infill_figure(args.K, coffee(), seed=args.seed)[..., ::-1])
    print(out)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["figure"]:
        _figure_main(argv[1:])
        return
    ap = argparse.ArgumentParser(prog="python -m infolens.export.sampler_quality",
                                 description="Held-out NLL, in bits per sub-pixel, of the PatchSampler and its "
                                 "baselines on the same windows (`figure --help`: the in-fill figure).")
    ap.add_argument("--K", type=int, nargs="+", default=[8], help="patch sizes (default 8)")
    ap.add_argument("--data", default="builtin-heldout", help="held-out images: 'builtin-heldout' or a folder")
    ap.add_argument("--train-data", default="builtin", help="images the baselines are fitted on (default builtin)")
    ap.add_argument("--windows", type=int, default=2000, help="held-out windows (default 2000, as the cards)")
    ap.add_argument("--train-windows", type=int, default=TRAIN_WINDOWS, help="training windows for the baselines")
    ap.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the window draws (the cards': 0)")
    ap.add_argument("--models", default=None, help="folder of patchsampler_kK.onnx/.json and gaussian_kK.npz "
                    "(default: the shipped models)")
    ap.add_argument("--write-cards", action="store_true", help="write the table into patchsampler_kK.json")
    args = ap.parse_args(argv)
    folder = args.models or models_dir()
    heldout, train = load_images(args.data), load_images(args.train_data)
    for K in args.K:
        stem = os.path.join(folder, f"patchsampler_k{K}")
        table, fitted = nll_table(K, heldout, train, stem + ".onnx", os.path.join(folder, f"gaussian_k{K}.npz"),
                                  args.windows, args.seed, args.train_windows)
        print(f"K={K}: bits per sub-pixel on {args.windows} held-out windows of {args.data} (seed {args.seed})")
        for name, bits in table.items():
            print(f"  {name:<18} {bits:7.4f}")
        print(f"  (mean: sigma R, G, B = {', '.join(map(str, fitted['mean_sigma_rgb']))})")
        if args.write_cards:
            command = shlex.join(["python", "-m", "infolens.export.sampler_quality", "--K", str(K), "--data", args.data,
                                  "--train-data", args.train_data, "--windows", str(args.windows),
                                  "--train-windows", str(args.train_windows), "--seed", str(args.seed),
                                  "--write-cards"])
            text = protocol(K, heldout, train, args.windows, args.seed, args.train_windows, fitted)
            write_card(stem + ".json", table, text, command)
            print(f"  written to {stem}.json")


if __name__ == "__main__":
    main()
