"""Fine-tune an in-distribution removal evaluator of a shipped classifier (issue #22; Hesse et al., NeurIPS 2024).

    python -m infolens.export.evaluator efficientnet-lite0 --data DIR [--data DIR ...] [--minutes 35] [--out models/]

writes `<out>/<stem>.evaluator.onnx` (the same input and output as the classifier) and its card
`<stem>.evaluator.json`.  The `indist` study of `infolens eval benchmark` scores maps against it.

Why: a removal metric asks the classifier about images it never saw (a flat, black or imputed region), so it
measures the fill as much as the map, and it favours the maps built on the same removal.  This copy of the
classifier is fine-tuned on photos with parts removed, so that removal is in its training distribution:

  * self-distillation — the target of every training image is the *original* classifier's output (its ONNX file)
    on the intact photo, so no labels are needed and the copy learns what the original would say about the whole
    photo from what is left of it: E[p(y | x) | the visible part], the quantity PMI estimates with a sampler
    (Covert, Lundberg & Lee, JMLR 2021, train such a surrogate the same way);
  * removal by a mixture of every fill of the benchmark (fills.FILLS: blur, black, mean, road, patchsampler —
    one chosen uniformly per image), so that no fill, and no map built on one, is the evaluator's own;
  * masks: grid cells of 16, 24 or 32 pixels at a random offset, one cell (half the removed images) or a random
    share up to half of them; 15 % of the images intact, so the copy keeps the original's answer there.

Photos: BSDS500 and COCO128 (`--data`, never the evaluation photos), their training side by data.split; random
224×224 crops at several scales, flipped.  Batch norm keeps the original's statistics (its running means are not
updated: a small batch would only add noise); every weight is trained, Adam, for a wall-time budget.  The card
records the steps run and, on the held-out side's centre crops, how far the copy is from the original on intact
photos, and how much one removed 24-pixel cell moves each model under each fill.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from infolens.catalog import model_file
from infolens.classifier import OnnxClassifier
from infolens.evaluate.fills import FILLS, make_fill
from infolens.export import data
from infolens.export.classifier import export_module, spec
from infolens.measures import information_gain

CELLS = (16, 24, 32)  # cell sides of the training masks, in pixels
SCORE_CELL = 24  # the held-out check removes one cell of this side (the indist study's grid)
INTACT, ONE_CELL = 0.15, 0.5  # shares of the removed-part draws: none removed, one cell removed
FILL_K = 16  # the PatchSampler fill's tile (the benchmark's K)


def removal_mask(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    """bool [H, W]: the pixels removed from one training image (module doc): none, one grid cell, or a random share
    up to half of the cells of a grid of side 16, 24 or 32 at a random offset (cells cut by the border included)."""
    mask = np.zeros((H, W), bool)
    if rng.random() < INTACT:
        return mask
    c = int(rng.choice(CELLS))
    oy, ox = int(rng.integers(c)), int(rng.integers(c))
    ys, xs = np.arange(oy - c, H, c), np.arange(ox - c, W, c)
    cells = [(y, x) for y in ys for x in xs if y + c > 0 and x + c > 0]
    n = 1 if rng.random() < ONE_CELL / (1 - INTACT) else int(rng.integers(1, len(cells) // 2 + 1))
    for i in rng.choice(len(cells), n, replace=False):
        y, x = cells[i]
        mask[max(y, 0):y + c, max(x, 0):x + c] = True
    return mask


class Remover:
    """Removes a mask's pixels from a uint8 image with one fill of FILLS drawn per image (the PatchSampler fill
    with the classifier's shipped sampler at FILL_K, one draw, a fresh stream per image)."""

    def __init__(self, classifier: OnnxClassifier, rng: np.random.Generator):
        self.rng = rng
        self.fills = {name: make_fill(name, classifier, FILL_K, draws=1) for name in FILLS if name != "road"}
        self.classifier = classifier

    def __call__(self, image: np.ndarray, mask: np.ndarray, fill: str | None = None) -> np.ndarray:
        if not mask.any():
            return image
        name = fill or str(self.rng.choice(list(FILLS)))
        seed = int(self.rng.integers(2 ** 31))
        if name == "road":
            f = make_fill("road", self.classifier, seed=seed)
        elif name == "patchsampler":
            f = make_fill(name, self.classifier, FILL_K, sampler=self.fills[name].sampler, draws=1, seed=seed)
        else:
            f = self.fills[name]
        return f.images(image, mask[None])[0, 0]


def random_crops(images: list[np.ndarray], n: int, rng: np.random.Generator, size=data.INPUT_SIZE) -> np.ndarray:
    """uint8 [n, H, W, 3]: an image uniformly, a crop position uniformly, a horizontal flip with probability 1/2."""
    H, W = size
    out = np.empty((n, H, W, 3), np.uint8)
    for i, index in enumerate(rng.integers(len(images), size=n)):
        image = images[index]
        y, x = int(rng.integers(image.shape[0] - H + 1)), int(rng.integers(image.shape[1] - W + 1))
        crop = image[y:y + H, x:x + W]
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def distillation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(target ‖ softmax(logits)) in bits (target: probabilities [B, Y])."""
    t = target.clamp_min(1e-12)
    return (target * (t.log() - torch.log_softmax(logits, dim=1))).sum(dim=1).mean() / np.log(2)


def train(student: torch.nn.Module, teacher: OnnxClassifier, images: list[np.ndarray], seconds: float, batch: int,
          lr: float, seed: int, log=print) -> dict:
    """Fine-tune `student` (in place) for `seconds` of wall time: each step a batch of random crops, each with a
    `removal_mask` removed by a random fill, the target the teacher's probabilities on the intact crops.  Returns
    {"steps", "images", "seconds", "kl_bits_first", "kl_bits_last"} (the mean KL in bits of the first and last 20 steps)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    remove = Remover(teacher, rng)
    student.eval()  # batch norm keeps the original's statistics; dropout off: the copy is a deterministic function
    optimiser = torch.optim.Adam(student.parameters(), lr=lr)
    losses, t0, steps = [], time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        crops = random_crops(images, batch, rng, teacher.pre.size)
        target = torch.from_numpy(teacher.predict_images(crops)).float()
        removed = np.stack([remove(c, removal_mask(rng, *c.shape[:2])) for c in crops])
        loss = distillation_loss(student(torch.from_numpy(teacher.normalize(removed))), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        steps += 1
        if steps % 20 == 0:
            log(f"step {steps}: KL {np.mean(losses[-20:]):.4f} bits ({time.monotonic() - t0:.0f} s)")
    return {"steps": steps, "images": steps * batch, "seconds": round(time.monotonic() - t0, 1),
            "kl_bits_first": float(np.mean(losses[:20])) if losses else None,
            "kl_bits_last": float(np.mean(losses[-20:])) if losses else None}


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) in bits per row of float [n, Y] probabilities (measures.information_gain, row by row)."""
    return np.array([information_gain(a, b[None])[0] for a, b in zip(p, q)])


def held_out_check(original: OnnxClassifier, evaluator: OnnxClassifier, photos: list[np.ndarray],
                   seed: int = 1) -> dict:
    """On the held-out centre crops: the evaluator against the original on intact photos (top-1 agreement, mean KL
    in bits), and per fill, with one SCORE_CELL cell removed at a random place (the same for both models), each
    model's own change, the mean KL(model on the intact photo ‖ model on the removed one) in bits.  A fill the
    original has not seen moves it by its artefacts (black far more than blur); in the evaluator the fills should
    move it alike."""
    rng = np.random.default_rng(seed)
    crops = np.stack(photos)
    H, W = crops.shape[1:3]
    masks = np.zeros((len(crops), H, W), bool)
    for m in masks:
        y, x = rng.integers(H - SCORE_CELL + 1), rng.integers(W - SCORE_CELL + 1)
        m[y:y + SCORE_CELL, x:x + SCORE_CELL] = True
    remove = Remover(original, rng)
    removed = {fill: np.stack([remove(c, m, fill) for c, m in zip(crops, masks)]) for fill in FILLS}
    models = {"original": original, "evaluator": evaluator}
    intact = {name: m.predict_images(crops) for name, m in models.items()}
    return {"photos": len(photos),
            "top1_agreement": float(np.mean(intact["original"].argmax(1) == intact["evaluator"].argmax(1))),
            "intact_kl_bits": float(kl(intact["original"], intact["evaluator"]).mean()),
            "one_cell_kl_bits": {fill: {name: float(kl(intact[name], m.predict_images(removed[fill])).mean())
                                        for name, m in models.items()} for fill in FILLS}}


def main(argv: list[str] | None = None) -> int:
    from infolens.export.classifier import MODELS

    p = argparse.ArgumentParser(prog="python -m infolens.export.evaluator",
                                description="Fine-tune an in-distribution removal evaluator of a shipped classifier.")
    p.add_argument("model", help=f"the classifier, one of: {', '.join(MODELS)}")
    p.add_argument("--data", action="append", required=True, help="a folder of training photos (repeatable)")
    p.add_argument("--out", default="models", help="output folder (default: models)")
    p.add_argument("--minutes", type=float, default=35.0, help="wall-time budget of the training (default: 35)")
    p.add_argument("--batch", type=int, default=16, help="images per step (default: 16)")
    p.add_argument("--lr", type=float, default=5e-5, help="Adam's learning rate (default: 5e-5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = p.parse_args(argv)
    try:
        s = spec(args.model)
        photos = data.load_photos(args.data)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier_path = model_file(s.stem)
    if not os.path.isfile(classifier_path):
        print(f"error: the classifier {s.stem}.onnx is not shipped: export it first "
              f"(python -m infolens.export.classifier {args.model})", file=sys.stderr)
        return 2
    original = OnnxClassifier.from_card(classifier_path)
    train_photos, held_out = data.split(photos)
    if not train_photos or not held_out:
        print(f"error: {len(photos)} photos give {len(train_photos)} to train on and {len(held_out)} held out "
              "(one in ten, by name): add photos (--data)", file=sys.stderr)
        return 2
    student = s.load()
    record = train(student, original, data.training_scales(train_photos), 60 * args.minutes, args.batch, args.lr,
                   args.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{s.stem}.evaluator.onnx"
    export_module(student.eval(), onnx_path, s.size)
    evaluator = OnnxClassifier.from_description(original.describe(), model_path=str(onnx_path))
    check = held_out_check(original, evaluator, [im for _, im in data.input_space(held_out)])
    command = (f"python -m infolens.export.evaluator {args.model} " + " ".join(f"--data {d}" for d in args.data)
               + f" --minutes {args.minutes:g} --batch {args.batch} --lr {args.lr:g} --seed {args.seed}")
    card = {"name": f"{s.stem}.evaluator", "task": "removal-evaluator", "command": command, "classifier": s.stem,
            "classifier_sha256": hashlib.sha256(Path(classifier_path).read_bytes()).hexdigest(),
            "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "training": {"photos": {"train": len(train_photos), "held_out": len(held_out),
                                    "sets": [os.path.basename(os.path.normpath(d)) for d in args.data]},
                         "fills": list(FILLS), "patchsampler_K": FILL_K, "cells": list(CELLS),
                         "intact_share": INTACT, "one_cell_share": ONE_CELL, "batch": args.batch, "lr": args.lr,
                         "seed": args.seed, "torch": torch.__version__, "threads": torch.get_num_threads(),
                         **record},
            "held_out": check}
    onnx_path.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(check, indent=1))
    print(f"wrote {onnx_path} and {onnx_path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
