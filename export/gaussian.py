"""Fit the PDA conditional-Gaussian sampler (Zintgraf et al.) on natural photos and save it for the runtime.

    python -m infolens.export.gaussian --K 8 16 --data ../shared/data/bsds500 --data ../shared/data/coco128 --out models/

writes models/gaussian_k{K}.npz (mean and covariance of the (K+2l)² RGB windows, l = 2, at a stride, of the
training-side photos of the folders in the 224×224 input space — the PatchSampler's training photos, the space it
is scored in), which `load_sampler("gaussian", K)` picks up.  numpy only; no torch needed.
"""
from __future__ import annotations

import argparse
import os
import sys

from infolens.samplers import GaussianSampler

from . import data


def fit(K: int, folders: list[str], out: str, ring: int = 2, stride: int = 4) -> str:
    train, _ = data.split(data.load_photos(folders))
    images = [image for _, image in data.input_space(train)]
    mean, cov = GaussianSampler.fit_windows(images, K, ring, stride)
    sampler = GaussianSampler(K, l=ring, fitted_on=f"{len(images)} training-side photos (export/data.py split) of "
                              f"{', '.join(folders)} in the 224x224 input space, windows at stride {stride}")
    path = os.path.join(out, f"gaussian_k{K}.npz")
    sampler.save(path, mean, cov)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infolens.export.gaussian", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--K", type=int, nargs="+", default=[8, 16], help="patch sizes (default 8 16)")
    ap.add_argument("--data", action="append", required=True, help="photo folder (repeatable); its training side "
                    "is used")
    ap.add_argument("--ring", type=int, default=2, help="conditioning ring width l in pixels (default 2)")
    ap.add_argument("--stride", type=int, default=4, help="window stride when collecting statistics (default 4)")
    ap.add_argument("--out", default="models", help="output folder (default models/)")
    args = ap.parse_args(argv)
    try:
        for K in args.K:
            print(fit(K, args.data, args.out, args.ring, args.stride))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
