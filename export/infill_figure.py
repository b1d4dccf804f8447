"""What the runtime's samplers' in-fills look like, in the manner of Yi et al., Figs. 3 and 14:

    python -m infolens.export.infill_figure --K 8 --out docs/infill_k8.png
draws in-fills of the runtime's samplers (load_sampler, the runtime's RNG streams) for patches of scikit-image's
coffee.png (in no training set) in a classifier's 224×224 input space.
"""
from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np

from infolens.images import read_image, to_input_space
from infolens.samplers import pad, windows as cut_windows
from infolens.samplers.rng import streams

from .sampler_quality import named_sampler


# Patch centres (y, x) in coffee.png's 224×224 input space: wood grain, the cup's rim over its red body, the
# spoon's bowl, the saucer's edge against the table.
FIGURE_CENTRES = [(40, 24), (108, 100), (150, 150), (184, 188)]
FIGURE_COLUMNS = [("patchsampler", 3, None), ("patchsampler_categorical", 2, "pixel"), ("gaussian", 1, None),
                  ("mean", 1, None), ("noise", 1, None)]  # (sampler, draws, coupling of the categorical head)
TILE = 192  # pixels per 3K×3K tile after nearest-neighbour upscaling


def infill_figure(K: int, image: np.ndarray, centres_yx=FIGURE_CENTRES, seed: int = 0) -> np.ndarray:
    """uint8 RGB figure: a row per patch centre, the 3K×3K context as it is, then with the patch in-filled by
    each sampler of FIGURE_COLUMNS (the runtime's samplers, streams(seed, row)); red ticks mark the patch."""
    ys = np.array([min(max(y - K // 2, 0), image.shape[0] - K) for y, _ in centres_yx], np.int64)
    xs = np.array([min(max(x - K // 2, 0), image.shape[1] - K) for _, x in centres_yx], np.int64)
    context = cut_windows(pad(image, K), ys, xs, 3 * K)  # [P, 3K, 3K, 3]
    tiles, titles = [context], ["context (original)"]
    for name, n, coupling in FIGURE_COLUMNS:
        fills = named_sampler(name, K, coupling).sample(image, ys, xs, n, streams(seed, np.arange(len(ys))))
        short = {"patchsampler": "new", "patchsampler_categorical": "old", "mean": "mean (patch's own)"}.get(name, name)
        for i in range(n):
            tile = context.copy()
            tile[:, K : 2 * K, K : 2 * K] = fills[:, i]
            tiles.append(tile)
            titles.append(f"{short} #{i + 1}" if n > 1 else short)
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
    """scikit-image's coffee.png (in none of the training sets) in a 224×224 classifier input space."""
    import skimage  # the train extra's; only the figure needs it

    path = os.path.join(os.path.dirname(skimage.__file__), "data", "coffee.png")
    return to_input_space(read_image(path), (224, 224), "shorter-side-crop")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infolens.export.infill_figure",
                                 description="In-fills of the runtime's samplers for patches of coffee.png.")
    ap.add_argument("--K", type=int, default=8, help="patch size (a shipped PatchSampler's)")
    ap.add_argument("--out", default=None, help="PNG path (default docs/infill_kK.png)")
    ap.add_argument("--seed", type=int, default=0, help="key of the samplers' RNG streams")
    args = ap.parse_args(argv)
    out = args.out or os.path.join("docs", f"infill_k{args.K}.png")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    cv2.imwrite(out, infill_figure(args.K, coffee(), seed=args.seed)[..., ::-1])
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
