"""How well the PatchSamplers model patches of photos they never saw, against the baselines.

    python -m infolens.export.sampler_quality --K 8 16 --data ../shared/data/bsds500 --data ../shared/data/coco128 \
        [--per-photo 100] [--seed 0] [--report docs/sampler_quality.json] [--write-cards]
prints the negative log-likelihood of the true centre patch, in bits per sub-pixel (uniform = 8.0), on windows of
the validation photos of the folders (export/data.py: 1 photo in 10 by name hash, never trained on), in the
classifier's 224×224 input space (shorter side 224, centre crop, zero-padded by K, positions uniform over all),
overall and per photo, of

    patchsampler  the shipped logistic-mixture PatchSampler: its exact joint likelihood through onnxruntime
                  (infolens.samplers.PatchSampler.log2prob, every stage scored with the true earlier pixels);
    patchsampler_categorical  the first, categorical PatchSampler (every sub-pixel independent), if shipped;
    gaussian      PDA's conditional Gaussian (gaussian_kK.npz, ring l = 2): the joint Gaussian density of the
                  K·K·3 patch given its ring at the true integer values, times one unit bin per sub-pixel (no
                  mass is moved for the sampler's clipping to 0..255);
    gaussian_marginals  the same Gaussian's per-sub-pixel marginals, binned as for `mean`: each sub-pixel on its own;
    mean          a Gaussian per sub-pixel, binned to the 256 integer values (tails into 0 and 255), centred at
                  the per-channel mean of the visible context (the 3K×3K window without its centre, zero padding
                  excluded), one σ per channel fitted by maximum likelihood on training-side windows;
    histogram     the per-channel histogram of training-side centre sub-pixels, +1 per bin: no context;
    uniform       8 bits, the `noise` sampler;

all on the same windows. --write-cards adds the table to models/patchsampler_kK.json; --report writes every
number, per photo too, as JSON.  What the in-fills look like: export/infill_figure.py.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from infolens.catalog import models_dir
from infolens.samplers import GaussianSampler, PatchSampler, load_sampler
from infolens.samplers.patchsampler import PROB_FLOOR

from . import data

FLOOR = PROB_FLOOR  # probability floor of the binned baselines, as of the categorical PatchSampler
TRAIN_PER_PHOTO = 10  # training-side windows per photo for fitting the `mean` and `histogram` baselines
CATEGORICAL = "patchsampler_k{K}_categorical.onnx"  # the first PatchSampler, kept to compare against


def centres(windows: np.ndarray, K: int) -> np.ndarray:
    """The hidden K×K patch of each window: uint8 [B, 3K, 3K, C] → [B, K, K, C]."""
    return windows[:, K : 2 * K, K : 2 * K]


def draw(photos: list, K: int, per_photo: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """data.heldout_windows(photos, K, per_photo, seed): windows uint8 [n, 3K, 3K, 3] and the photo of each, int64
    [n]; and which window pixels lie inside the image, bool [n, 3K, 3K] (False on the zero padding).

    The draw depends on the image sizes only, so the same draw on all-ones images marks the inside.
    """
    ones = [(name, np.ones((*image.shape[:2], 1), np.uint8)) for name, image in photos]
    windows, owner = data.heldout_windows(photos, K, per_photo, seed)
    return windows, owner, data.heldout_windows(ones, K, per_photo, seed)[0][..., 0] == 1


def gaussian_nll_bits(x: np.ndarray, mu: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """−log2 N(x | mu, chol·cholᵀ) / D per row, float64 [P]: x, mu [P, D], chol lower-triangular [D, D]."""
    D = x.shape[1]
    z = solve_triangular(chol, (x - mu).T, lower=True)  # [D, P]
    nats = 0.5 * (D * math.log(2 * math.pi) + (z * z).sum(0)) + np.log(np.diag(chol)).sum()
    return nats / math.log(2) / D


def gaussian_bits(sampler: GaussianSampler, windows: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Bits per sub-pixel of the PDA Gaussian on the centres of 3K×3K windows, per window [n]: of its joint
    density, and of its per-sub-pixel marginals binned as for `mean`.

    The (K+2l)² middle of a window cut from the image zero-padded by K is the window the runtime cuts from the
    image zero-padded by l, so the ring is exactly the one `sample` conditions on.
    """
    l = sampler.l
    mu, chol = sampler.conditional(windows[:, K - l : 2 * K + l, K - l : 2 * K + l])
    x = centres(windows, K).reshape(len(windows), -1)
    marginal_sd = np.sqrt((chol * chol).sum(1))
    return gaussian_nll_bits(x.astype(np.float64), mu, chol), binned_gaussian_bits(x, mu, marginal_sd).mean(1)


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


def mean_bits(windows: np.ndarray, inside: np.ndarray, K: int, sigma: np.ndarray) -> np.ndarray:
    """Bits per sub-pixel of the `mean` baseline with per-channel σ [3], per window [n]."""
    mu = context_mean(windows, inside, K)[:, None, None, :]
    return binned_gaussian_bits(centres(windows, K), mu, sigma).mean((1, 2, 3))


def fit_histogram(windows: np.ndarray, K: int) -> np.ndarray:
    """float64 [3, 256]: per-channel distribution of the windows' centre sub-pixels, Laplace-smoothed (+1 per bin)."""
    target = centres(windows, K).reshape(-1, 3)
    counts = np.stack([np.bincount(target[:, c], minlength=256) for c in range(3)]) + 1.0
    return counts / counts.sum(1, keepdims=True)


def histogram_bits(windows: np.ndarray, K: int, hist: np.ndarray) -> np.ndarray:
    """Bits per sub-pixel of a context-free per-channel histogram [3, 256], per window [n]."""
    target = centres(windows, K).reshape(len(windows), -1, 3).astype(np.int64)
    return -np.log2(hist[np.arange(3), target]).mean((1, 2))


def patchsampler_bits(path: str, windows: np.ndarray, K: int) -> np.ndarray:
    """Bits per sub-pixel of the ONNX PatchSampler at `path` (either head), per window [n]: its exact joint
    −log2 p(centre | context) / 3K², through onnxruntime."""
    return -PatchSampler(path).log2prob(windows) / (3 * K * K)


def nll_table(K: int, heldout: list, train: list, folder: str, per_photo: int = 100, seed: int = 0,
              train_per_photo: int = TRAIN_PER_PHOTO) -> tuple[dict, dict, dict]:
    """Every model's bits per sub-pixel on the same windows of the held-out photos (input space).

    Returns (overall mean per model, rounded to 4 decimals; per photo {name: {model: bits}}; what the baselines
    fitted). Models: the PatchSamplers of `folder` (patchsampler_kK.onnx and, if present, the categorical one),
    gaussian_kK.npz of `folder` and the context-free baselines fitted on `train` photos.
    """
    windows, owner, inside = draw(heldout, K, per_photo, seed)
    train_windows, _, train_inside = draw(train, K, train_per_photo, seed)
    sigma = fit_sigma(train_windows, train_inside, K)
    bits = {"patchsampler": patchsampler_bits(os.path.join(folder, f"patchsampler_k{K}.onnx"), windows, K)}
    categorical = os.path.join(folder, CATEGORICAL.format(K=K))
    if os.path.isfile(categorical):
        bits["patchsampler_categorical"] = patchsampler_bits(categorical, windows, K)
    bits["gaussian"], bits["gaussian_marginals"] = gaussian_bits(
        GaussianSampler.load(os.path.join(folder, f"gaussian_k{K}.npz")), windows, K)
    bits["mean"] = mean_bits(windows, inside, K, sigma)
    bits["histogram"] = histogram_bits(windows, K, fit_histogram(train_windows, K))
    bits["uniform"] = np.full(len(windows), 8.0)
    counts = np.bincount(owner, minlength=len(heldout))
    means = {model: np.bincount(owner, b, len(heldout)) / counts for model, b in bits.items()}
    per_photo_bits = {name: {model: round(float(m[i]), 4) for model, m in means.items()}
                      for i, (name, _) in enumerate(heldout)}
    table = {model: round(float(b.mean()), 4) for model, b in bits.items()}
    return table, per_photo_bits, {"mean_sigma_rgb": [round(s, 2) for s in sigma]}


def summary(table: dict, per_photo: dict) -> dict:
    """The worst photo of each model, and on how many photos the PatchSampler beats the Gaussian."""
    worst = {model: max(per_photo, key=lambda name: per_photo[name][model]) for model in table}
    return {"worst_photo": {model: [name, per_photo[name][model]] for model, name in worst.items()},
            "patchsampler_beats_gaussian_on": f"{sum(v['patchsampler'] < v['gaussian'] for v in per_photo.values())} "
                                              f"of {len(per_photo)} photos"}


def protocol(K: int, folders: list, heldout: list, train: list, per_photo: int, seed: int, fitted: dict,
             train_per_photo: int = TRAIN_PER_PHOTO) -> str:
    """The evaluation protocol in words, for the card."""
    sigma = ", ".join(f"{s:g}" for s in fitted["mean_sigma_rgb"])
    return (
        f"Bits per sub-pixel: -log2 p(true {K}x{K}x3 centre | context) / {3 * K * K}, averaged over {per_photo} "
        f"windows of each of the {len(heldout)} validation photos of {', '.join(folders)} (1 photo in 10 by SHA-1 "
        "of its name, never trained on), in the 224x224 input space (shorter side 224, centre crop), zero-padded by "
        f"K, positions uniform over all (data.heldout_windows, seed {seed}); the same windows for every model. "
        "patchsampler: exact joint likelihood of the ONNX file through onnxruntime, every stage scored with the "
        "true earlier pixels. patchsampler_categorical: the first PatchSampler, sub-pixels independent, "
        "probabilities floored at 1e-12. gaussian: gaussian_kK.npz (PDA, ring 2), joint Gaussian density of the "
        "patch given its ring times one unit bin per sub-pixel. gaussian_marginals: its per-sub-pixel marginals, "
        "binned. mean: per-sub-pixel Gaussian binned to 0..255 around the visible context's mean colour, "
        f"sigma (R, G, B = {sigma}) fitted on {train_per_photo} windows of each of the {len(train)} training-side "
        "photos (input space, same seed). histogram: per-channel histogram "
        "of those training windows' centres, +1 per bin. uniform: 8 bits."
    )


def write_card(path: str, table: dict, text: str, command: str, extra: dict) -> None:
    """Replace the card's nll_bits_per_subpixel by the table and record the worst photos, the protocol
    (nll_eval) and this command (nll_command); other keys are kept in place."""
    with open(path) as f:
        card = json.load(f)
    card.update({"nll_bits_per_subpixel": table, **extra, "nll_eval": text, "nll_command": command})
    card.pop("nll_worst_photo", None)  # the training run's own figure, superseded by worst_photo
    with open(path, "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")


def named_sampler(name: str, K: int, coupling: str | None = None):
    """A runtime sampler by name (load_sampler's); `patchsampler_categorical` is the first, categorical
    PatchSampler, shipped beside the current one to compare against."""
    if name == "patchsampler_categorical":
        return load_sampler("patchsampler", K, model=os.path.join(models_dir(), CATEGORICAL.format(K=K)),
                            coupling=coupling or "pixel")
    return load_sampler(name, K)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m infolens.export.sampler_quality",
                                 description="Held-out NLL, in bits per sub-pixel, of the PatchSamplers and their "
                                 "baselines on the same windows of validation photos in the input space.")
    ap.add_argument("--K", type=int, nargs="+", default=[8, 16], help="patch sizes (default 8 16)")
    ap.add_argument("--data", action="append", required=True,
                    help="photo folder (repeatable): its validation side is scored, its training side fits the "
                    "context-free baselines (export/data.py split)")
    ap.add_argument("--per-photo", type=int, default=100, help="windows per validation photo (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the window draws (the cards': 0)")
    ap.add_argument("--models", default=None, help="folder of patchsampler_kK*.onnx, gaussian_kK.npz and the "
                    "cards (default: the shipped models)")
    ap.add_argument("--report", default=None, help="write every number, per photo too, to this JSON file")
    ap.add_argument("--write-cards", action="store_true", help="write the table into patchsampler_kK.json")
    args = ap.parse_args(argv)
    folder = args.models or models_dir()
    try:
        train, heldout = (data.input_space(p) for p in data.split(data.load_photos(args.data)))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {}
    for K in args.K:
        table, per_photo, fitted = nll_table(K, heldout, train, folder, args.per_photo, args.seed)
        extra = summary(table, per_photo)
        print(f"K={K}: bits per sub-pixel, {args.per_photo} windows on each of {len(heldout)} validation photos")
        for name, bits in table.items():
            print(f"  {name:<26} {bits:7.4f}   worst photo {extra['worst_photo'][name][1]:7.4f} "
                  f"({extra['worst_photo'][name][0]})")
        print(f"  patchsampler beats the Gaussian on {extra['patchsampler_beats_gaussian_on']}")
        text = protocol(K, args.data, heldout, train, args.per_photo, args.seed, fitted)
        report[f"K={K}"] = {"table": table, **extra, "protocol": text, "per_photo": per_photo}
        if args.write_cards:
            command = ["python", "-m", "infolens.export.sampler_quality", "--K", str(K), "--per-photo",
                       str(args.per_photo), "--seed", str(args.seed), "--write-cards"]
            for d in args.data:
                command += ["--data", d]
            write_card(os.path.join(folder, f"patchsampler_k{K}.json"), table, text, shlex.join(command), extra)
            print(f"  written to {folder}/patchsampler_k{K}.json")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
