"""The grid pointing game (Böhle, Fritz & Schiele, CVPR 2022): a faithfulness protocol that removes nothing, so no
fill can favour a method.

  * Qualifying photos: a photo qualifies when the classifier gets it right with p ≥ `min_p` (0.5) *shown alone at
    the quadrant's size*: the photo in the classifier's input space (H×W), shrunk to its quadrant (⌊H/2⌋×⌊W/2⌋,
    cv2.INTER_AREA) and enlarged back to H×W (cv2.INTER_LINEAR) — the same pixels the mosaic shows, at the
    classifier's input size.
  * Mosaics: 2×2, quadrant q = 0 top left, 1 top right, 2 bottom left, 3 bottom right, each a qualifying photo
    shrunk to its quadrant; four photos of four different classes, drawn with a seeded generator (a photo may appear
    in several mosaics); listed in OUT/pointing/mosaics.csv.
  * Score of a map for quadrant q's class: the share of the map's positive mass inside quadrant q (1 = all of it,
    0.25 = chance; 0 for a map with no positive value).  One explanation of a mosaic gives all four classes' maps
    from the same forwards.  A class-independent map (IG, the edge and random controls) is the same for the four
    classes, so its mean over the quadrants is 0.25 exactly: the game measures class-specific evidence.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from .. import outfiles
from .benchmark import Study
from .report import csv_text
from .stats import REFERENCE, compare, fmt_ci, fmt_p, fmt_signed
from .maps import make_maps, plain_label
from .removal import METHOD_DEFAULTS, map_set


def boxes(H: int, W: int) -> list[tuple[int, int, int, int]]:
    """The four quadrants (y0, y1, x0, x1) of an H×W image, in reading order."""
    h, w = H // 2, W // 2
    return [(0, h, 0, w), (0, h, w, W), (h, H, 0, w), (h, H, w, W)]


def shown_alone(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3]: `image` at its quadrant's size (INTER_AREA), enlarged back to H×W (INTER_LINEAR)."""
    H, W = image.shape[:2]
    small = cv2.resize(image, (W // 2, H // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR)


def mosaic(images: list[np.ndarray]) -> np.ndarray:
    """uint8 [H, W, 3]: four input-space images of size H×W, each shrunk (INTER_AREA) into its quadrant."""
    H, W = images[0].shape[:2]
    out = np.empty_like(images[0])
    for img, (y0, y1, x0, x1) in zip(images, boxes(H, W)):
        out[y0:y1, x0:x1] = cv2.resize(img, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def pointing_score(values: np.ndarray, quadrant: int) -> float:
    """The share of the positive mass of `values` (float [H, W]) inside `quadrant` (0..3); 0 without positive mass."""
    pos = np.clip(np.asarray(values, np.float64), 0, None)
    total = pos.sum()
    y0, y1, x0, x1 = boxes(*pos.shape)[quadrant]
    return float(pos[y0:y1, x0:x1].sum() / total) if total > 0 else 0.0


def qualify(classifier, photos: list[tuple[str, int, str]], min_p: float = 0.5,
            batch_size: int = 64) -> list[tuple[str, int, float]]:
    """(path, class, p(class) shown alone) of the photos the classifier gets right with p ≥ min_p at the quadrant's
    size (module doc)."""
    out = []
    for b0 in range(0, len(photos), batch_size):
        chunk = photos[b0:b0 + batch_size]
        probs = classifier.predict_images(np.stack([shown_alone(classifier.load_image(p)) for p, _, _ in chunk]))
        for (path, cls, _), p in zip(chunk, probs):
            if int(np.argmax(p)) == cls and p[cls] >= min_p:
                out.append((path, int(cls), float(p[cls])))
    return out


def draw_mosaics(pool: list[tuple[str, int, float]], n: int, seed: int) -> list[list[tuple[str, int]]]:
    """n mosaics of four photos of four different classes from `pool`, seeded; [] when the pool has fewer than four
    classes."""
    if len({c for _, c, _ in pool}) < 4:
        return []
    rng = np.random.default_rng([seed, 4])
    out = []
    while len(out) < n:
        pick = [pool[i] for i in rng.choice(len(pool), 4, replace=False)]
        if len({c for _, c, _ in pick}) == 4:
            out.append([(p, c) for p, c, _ in pick])
    return out


def per_mosaic(records: list[dict]) -> list[dict]:
    """Each map's score on each mosaic, the mean over its four quadrants: rows {"map", "sampler", "image", "score"}."""
    per = {}
    for r in records:
        for row in r["rows"]:
            per.setdefault((row["map"], row["sampler"], r["mosaic"]), []).append(row["score"])
    return [{"map": m, "sampler": s, "image": i, "score": float(np.mean(v))} for (m, s, i), v in per.items()]


class PointingStudy(Study):
    """samplers, methods (METHODS names and the controls), K, stride, samples, rise_masks, smooth, shrink, scales,
    seed: as the removal study's; mosaics: how many; min_p: the qualifying probability."""

    name, unit = "pointing", "mosaic"

    def __init__(self, classifier, samplers, methods=METHOD_DEFAULTS, K=16, stride=16, samples=4, rise_masks=1000,
                 smooth=8.0, mosaics=100, min_p=0.5, shrink=True, scales=(), seed=0, batch_size=64):
        super().__init__(classifier, samplers=samplers, methods=methods, K=K, stride=stride, samples=samples,
                         rise_masks=rise_masks, smooth=smooth, mosaics=mosaics, min_p=min_p, shrink=shrink,
                         scales=scales, seed=seed, batch_size=batch_size)
        from .. import params

        params.check("mosaics", mosaics)
        params.check("min_p", min_p)
        self.maps = map_set(self, samplers, methods, K, stride, samples, rise_masks, seed, smooth, shrink, scales)
        self.mosaics, self.min_p, self.seed = mosaics, min_p, seed
        self.pool_size, self.listing = None, []

    def settings(self) -> dict:
        return {"model": os.path.basename(self.classifier.model_path), **self.maps.settings(),
                "mosaics": self.mosaics, "min_p": self.min_p}

    def items(self, photos, study_photos, folder):
        pool = qualify(self.classifier, photos, self.min_p, self.batch_size)
        self.pool_size, self.photos_seen = len(pool), len(photos)
        drawn = draw_mosaics(pool, self.mosaics, self.seed)
        if not drawn:
            from ..errors import InfolensError

            raise InfolensError(f"the pointing game needs qualifying photos of 4 classes: {len(pool)} of "
                                f"{len(photos)} photos qualified (p ≥ {self.min_p} for their label shown at the "
                                "quadrant's size); use more photos or a lower threshold", "min_p")
        listing = [{"mosaic": f"mosaic_{i:04d}", **{f"q{q}": os.path.basename(p) for q, (p, _) in enumerate(m)},
                    **{f"class_q{q}": c for q, (_, c) in enumerate(m)}} for i, m in enumerate(drawn)]
        self.listing = listing
        if listing:
            outfiles.write_atomic(os.path.join(folder, "mosaics.csv"),
                                  lambda f: f.write(csv_text(listing, list(listing[0])).encode()))
        return [(f"mosaic_{i:04d}", {"paths": "\n".join(p for p, _ in m), "classes": ",".join(str(c) for _, c in m),
                                     "key": i}) for i, m in enumerate(drawn)]

    def run(self, item):
        import time

        t0 = time.perf_counter()
        paths, classes = str(item["paths"]).split("\n"), [int(c) for c in str(item["classes"]).split(",")]
        image = mosaic([self.classifier.load_image(p) for p in paths])
        probs = self.classifier.predict_images(image[None])[0]
        top4 = set(np.argsort(-probs)[:4].tolist())
        rows = []
        for m in make_maps(self, image, classes, int(item["key"]), self.maps):
            for q, c in enumerate(classes):
                rows.append({"map": m.name, "sampler": m.sampler, "quadrant": q, "class": c,
                             "score": pointing_score(m.per_class[None if None in m.per_class else c], q)})
        return {"mosaic": f"mosaic_{int(item['key']):04d}", "files": [os.path.basename(p) for p in paths],
                "classes": classes, "p_classes": [float(probs[c]) for c in classes],
                "in_top4": sum(c in top4 for c in classes), "rows": rows,
                "seconds": round(time.perf_counter() - t0, 2)}

    headline_label = "pointing"

    def headline(self, records):
        return [r for r in per_mosaic(records) if plain_label(r["sampler"]) == r["sampler"]]

    def section(self, records, out_dir) -> list[str]:
        rows = [{**r, "fill": "-", "target": "-"} for r in per_mosaic(records)]
        outfiles.write_atomic(os.path.join(out_dir, "pointing.csv"), lambda f: f.write(csv_text(
            [{"mosaic": r["mosaic"], **row} for r in records for row in r["rows"]],
            ["mosaic", "map", "sampler", "quadrant", "class", "score"]).encode()))
        if self.listing:
            outfiles.write_atomic(os.path.join(out_dir, "mosaics.csv"),
                                  lambda f: f.write(csv_text(self.listing, list(self.listing[0])).encode()))
        result = compare(rows, "score", "-", "-")
        pool = f"{self.pool_size} of {self.photos_seen} photos qualified" if self.pool_size is not None else ""
        lines = ["## The grid pointing game (no removal)", "",
                 f"{len(records)} 2×2 mosaics of four photos of four classes (listed in `mosaics.csv`); a photo qualifies when the classifier gets it right with p ≥ {self.min_p} shown alone at "
                 f"the quadrant's size{' — ' + pool if pool else ''}. Score: the share of the map's positive mass "
                 "inside the quadrant of the explained class (1 perfect, 0.25 chance), averaged over the four "
                 "quadrants of a mosaic; mean and 95 % interval over mosaics, Δ and p paired against "
                 f"{REFERENCE[0]} / {REFERENCE[1]} (Wilcoxon). Class-independent maps (IG, edge, random) score 0.25 "
                 "by construction. On the mosaic itself the four classes are among the classifier's top 4 in "
                 f"{np.mean([r['in_top4'] for r in records]):.2f} of 4 cases on average. Per mosaic and quadrant: "
                 "`pointing.csv`.", "",
                 "| rank | map | sampler | score [95 % CI] | Δ | p |", "|---|---|---|---|---|---|"]
        for i, key in enumerate(sorted(result, key=lambda k: -result[k]["mean"]), 1):
            e = result[key]
            lines.append(f"| {i} | {key[0]} | {key[1]} | {fmt_ci(e)} | {fmt_signed(e['diff'])} | {fmt_p(e['p'])} |")
        return lines + [""]
