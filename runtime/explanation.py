"""The result of one explanation, and its files: <stem>.npz (arrays), <stem>.json (the rest), PNG overlays."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import InfolensError

NPZ_ARRAYS = ("image", "probs", "classes", "pmi", "ig")
MARKER = "infolens_explanation"  # written into every JSON so a rerun knows which files it may replace


@dataclass
class Explanation:
    """PMI and IG maps of one image.

    image   uint8 [H, W, 3] RGB — the classifier-input-space image that was explained.
    probs   float64 [Y] — p(Y|x).
    classes int64 [k] — classes with a PMI map;  labels: their names.
    pmi     float32 [k, H, W] — bits; > 0 where the region supports the class, < 0 where it opposes it.
    ig      float32 [H, W] — bits; KL(p(Y|x) ‖ p(Y|x without the region)), class-independent, ≥ 0.
    params  K, S, N, sampler, seed, batch size, …;  model: the classifier's path and preprocessing actually used.
    timing  seconds per stage;  forwards: classifier images run.
    """

    image: np.ndarray
    probs: np.ndarray
    classes: np.ndarray
    labels: list[str]
    pmi: np.ndarray
    ig: np.ndarray
    params: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    forwards: int = 0
    source: str | None = None

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.source))[0] if self.source else "explanation"

    def summary(self) -> dict:
        """Everything but the arrays, JSON-ready."""
        return {
            MARKER: 1,
            "source": self.source,
            "classes": [{"index": int(c), "label": lab, "prob": float(self.probs[c])}
                        for c, lab in zip(self.classes, self.labels)],
            "top1": {"index": int(np.argmax(self.probs)), "prob": float(np.max(self.probs))},
            "units": "bits",
            "pmi_range": [[float(m.min()), float(m.max())] for m in self.pmi],
            "ig_range": [float(self.ig.min()), float(self.ig.max())],
            "params": self.params,
            "model": self.model,
            "forwards": self.forwards,
            "timing": self.timing,
        }

    def outputs(self, out_dir: str, stem: str | None = None) -> dict[str, str]:
        """The file each output goes to: npz, json, ig (PNG) and pmi_<class> (PNG)."""
        stem = stem or self.stem
        files = {k: os.path.join(out_dir, f"{stem}.{k}") for k in ("npz", "json")}
        files["ig"] = os.path.join(out_dir, f"{stem}_ig.png")
        for c in self.classes:
            files[f"pmi_{c}"] = os.path.join(out_dir, f"{stem}_pmi_{c}.png")
        return files

    def save(self, out_dir: str, stem: str | None = None, overwrite: bool = False, render: bool = True) -> dict:
        """Write the files of `outputs()`; returns that dict.

        Existing files are replaced only when they belong to an earlier infolens explanation of the same stem (its
        JSON carries the infolens marker) or `overwrite` is set; otherwise nothing is written and InfolensError says so.
        """
        from . import render as rnd

        files = self.outputs(out_dir, stem)
        if not render:
            files = {k: v for k, v in files.items() if k in ("npz", "json")}
        if not overwrite and not _ours(files["json"]):
            taken = [p for p in files.values() if os.path.exists(p)]
            if taken:
                raise InfolensError(f"{taken[0]} exists and was not written by infolens (--overwrite to replace it)")
        os.makedirs(out_dir, exist_ok=True)
        np.savez_compressed(files["npz"], image=self.image, probs=self.probs, classes=self.classes,
                            pmi=self.pmi.astype(np.float32), ig=self.ig.astype(np.float32))
        summary = self.summary()
        summary["files"] = {k: os.path.basename(v) for k, v in files.items()}
        with open(files["json"], "w") as f:
            json.dump(summary, f, indent=1)
        if render:
            rnd.write_png(files["ig"], rnd.overlay(self.image, self.ig, "sequential", "IG"))
            for i, (c, lab) in enumerate(zip(self.classes, self.labels)):
                title = f"PMI {lab} ({c}), p={self.probs[c]:.3f}"
                rnd.write_png(files[f"pmi_{c}"], rnd.overlay(self.image, self.pmi[i], "diverging", title))
        return files

    @classmethod
    def load(cls, path: str) -> "Explanation":
        """Read <stem>.npz and its <stem>.json back."""
        stem_path = os.path.splitext(path)[0]
        try:
            with np.load(stem_path + ".npz") as z:
                arrays = {k: z[k] for k in NPZ_ARRAYS}
            with open(stem_path + ".json") as f:
                meta = json.load(f)
        except (OSError, KeyError, ValueError) as e:
            raise InfolensError(f"cannot read explanation {stem_path}.npz/.json: {e}") from None
        return cls(labels=[c["label"] for c in meta["classes"]], params=meta["params"], model=meta["model"],
                   timing=meta["timing"], forwards=meta["forwards"], source=meta["source"], **arrays)


def _ours(json_path: str) -> bool:
    try:
        with open(json_path) as f:
            return MARKER in json.load(f)
    except (OSError, ValueError):
        return False
