"""The result of one explanation, and its files: <stem>.npz (arrays), <stem>.json (the rest), PNG overlays."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from . import outfiles
from .errors import InfolensError
from .outfiles import MARKER
# 2: the classifier's and the sampler's sha256 are recorded beside their paths (model.sha256, params.sampler_sha256),
# so the files can be found again on another machine; 1 (no "schema_version"): paths only.
SCHEMA_VERSION = 2
STDERR = "_stderr"  # npz key suffix of a map's standard error

# name → (unit, colour map, what it is).  Class maps are [k, H, W]; "ig" is [H, W].
MAPS = {
    "pmi": ("bits", "diverging", "PMI: log2 p(c|x) − log2 p(c|x without the region)"),
    "ig": ("bits", "sequential", "IG: KL(p(Y|x) ‖ p(Y|x without the region))"),
    "woe": ("bits", "diverging", "weight of evidence (PDA): log2 odds p(c|x) − log2 odds p(c|x without the region)"),
    "occlusion": ("probability", "diverging", "occlusion: p(c|x) − p(c|x with the region grey)"),
    "rise": ("probability", "sequential", "RISE: E[p(c|masked x) | pixel kept] over random masks"),
    "mipin": ("activation²", "diverging", "MIP-IN: the class's centred logit sent down the fitted inverse, masked "
              "by the image's ReLU pattern, to the map layer, times the centred activation there, summed over "
              "channels"),
    "cam": ("logits", "diverging", "CAM: the final linear layer's class weights applied to the globally pooled "
            "activation at each location (its mean over the cells plus the bias is the logit)"),
}
# IG's meaning for a multi-label (sigmoid) classifier, whose classes are independent yes/no variables
IG_BERNOULLI = ("IG: Σ_c KL(Bern(p(c|x)) ‖ Bern(p(c|x without the region))), the classes as independent yes/no "
                "variables")


@dataclass
class Explanation:
    """The maps of one image.

    image   uint8 [H, W, 3] RGB — the classifier-input-space image that was explained.
    probs   float64 [Y] — p(Y|x).
    classes int64 [k] — classes with a class map;  labels: their names.
    maps    name → float32 array (see MAPS): the default method gives
            "pmi" [k, H, W] bits (> 0 where the region supports the class, < 0 where it opposes it) and
            "ig" [H, W] bits (class-independent, ≥ 0); other methods give "woe", "occlusion" or "rise" [k, H, W].
    stderr  name → float32 array shaped like maps[name]: its Monte-Carlo standard error in the map's units (0 for a
            deterministic sampler, nan for a random one with N = 1); none for RISE.
    params  method, K, S, N, sampler (and its file's path and sha256), seed, batch size, …;
    model   the classifier's path, sha256 and the preprocessing used.
    timing  seconds per stage;  forwards: images the classifier ran (counted, p(Y|x) included).
    notes   what was done to the input a user should know of (transparency composited, frame chosen, enlarged, …).
    """

    image: np.ndarray
    probs: np.ndarray
    classes: np.ndarray
    labels: list[str]
    maps: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    forwards: int = 0
    source: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pmi(self) -> np.ndarray | None:
        return self.maps.get("pmi")

    @property
    def ig(self) -> np.ndarray | None:
        return self.maps.get("ig")

    @property
    def pmi_stderr(self) -> np.ndarray | None:
        return self.stderr.get("pmi")

    @property
    def ig_stderr(self) -> np.ndarray | None:
        return self.stderr.get("ig")

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.source))[0] if self.source else "explanation"

    def map_for(self, name: str, cls: int) -> np.ndarray:
        """The [H, W] map `name` for class `cls` (class-independent maps ignore cls)."""
        if name not in self.maps:
            raise InfolensError(f"the explanation has no {name!r} map; it has {', '.join(self.maps)}", "map")
        m = self.maps[name]
        if m.ndim == 2:
            return m
        where = np.flatnonzero(self.classes == cls)
        if not where.size:
            raise InfolensError(f"the explanation has {name} maps for classes {', '.join(map(str, self.classes))}, "
                                f"not {cls} (or explain with classes {cls})", "cls")
        return m[where[0]]

    def summary(self) -> dict:
        """Everything but the arrays, JSON-ready."""
        return {
            MARKER: 1,
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "input_notes": self.notes,
            "classes": [{"index": int(c), "label": lab, "prob": float(self.probs[c])}
                        for c, lab in zip(self.classes, self.labels)],
            "top1": {"index": int(np.argmax(self.probs)), "prob": float(np.max(self.probs))},
            "maps": {k: {"unit": MAPS[k][0], "meaning": self._meaning(k), "range": [float(v.min()), float(v.max())],
                         **({"stderr_max": float(np.nanmax(self.stderr[k])) if np.isfinite(self.stderr[k]).any()
                             else None} if k in self.stderr else {})} for k, v in self.maps.items()},
            "params": self.params,
            "model": self.model,
            "forwards": self.forwards,
            "timing": self.timing,
        }

    def _meaning(self, name: str) -> str:
        if name == "ig" and self.model.get("output_kind") in ("sigmoid", "sigmoid-logits"):
            return IG_BERNOULLI
        return MAPS[name][2]

    def outputs(self, out_dir: str, stem: str | None = None) -> dict[str, str]:
        """The file each output goes to: npz, json, and a PNG per map and class (`<stem>_ig.png`,
        `<stem>_pmi_<class>.png`, …)."""
        stem = stem or self.stem
        files = {k: os.path.join(out_dir, f"{stem}.{k}") for k in ("npz", "json")}
        for name, m in self.maps.items():
            if m.ndim == 2:
                files[name] = os.path.join(out_dir, f"{stem}_{name}.png")
            else:
                for c in self.classes:
                    files[f"{name}_{c}"] = os.path.join(out_dir, f"{stem}_{name}_{c}.png")
        return files

    def save(self, out_dir: str, stem: str | None = None, overwrite: bool = False, render: bool = True,
             mask_insignificant: bool = False) -> dict:
        """Write the files of `outputs()`; returns that dict.  `mask_insignificant`: the PNGs show the plain grey
        image where a map is within two standard errors of 0 (|value| < 2·stderr), colour only where it is not.

        Existing files are replaced only when they belong to an earlier infolens explanation of the same stem (its
        JSON carries the infolens marker) or `overwrite` is set; otherwise nothing is written and InfolensError says
        so.  Every file is written to a temporary name first and then all are renamed into place, the JSON last:
        a JSON on disk means its npz and PNGs are complete, and a write that fails (a full disk, a read-only
        folder) leaves no file changed.  A file system error is an InfolensError naming `out`.
        """
        from . import render as rnd

        files = self.outputs(out_dir, stem)
        if not render:
            files = {k: v for k, v in files.items() if k in ("npz", "json")}
        check_outputs(out_dir, stem or self.stem, overwrite)
        pngs = []
        if render:
            for name, m in self.maps.items():
                unit, kind, _ = MAPS[name]
                hide = (np.abs(m) < 2 * self.stderr[name]) if mask_insignificant and name in self.stderr else None
                if m.ndim == 2:
                    pngs.append((files[name], rnd.overlay(self.image, m, kind, name.upper(), unit, hide=hide)))
                    continue
                for i, (c, lab) in enumerate(zip(self.classes, self.labels)):
                    title = f"{name.upper()} {lab} ({c}), p={self.probs[c]:.3f}"
                    pngs.append((files[f"{name}_{c}"], rnd.overlay(self.image, m[i], kind, title, unit,
                                                                  hide=None if hide is None else hide[i])))
        summary = self.summary()
        summary["files"] = {k: os.path.basename(v) for k, v in files.items()}
        arrays = dict(image=self.image, probs=self.probs, classes=self.classes,
                      **{k: v.astype(np.float32) for k, v in self.maps.items()},
                      **{f"{k}{STDERR}": v.astype(np.float32) for k, v in self.stderr.items()})
        try:
            os.makedirs(out_dir, exist_ok=True)
            outfiles.write_all_atomic([(files["npz"], lambda f: np.savez_compressed(f, **arrays))] +
                                      [(path, lambda f, bgr=bgr: f.write(rnd.encode_png(bgr))) for path, bgr in pngs] +
                                      [(files["json"], lambda f: f.write(json.dumps(summary, indent=1).encode()))])
        except OSError as e:
            raise InfolensError(f"cannot write the results into {out_dir}: {e.strerror or e}", "out") from None
        return files

    @classmethod
    def load(cls, path: str) -> "Explanation":
        """Read <stem>.npz and its <stem>.json back."""
        stem_path = os.path.splitext(path)[0]
        try:
            with np.load(stem_path + ".npz") as z:
                arrays = {k: z[k] for k in z.files}
            with open(stem_path + ".json") as f:
                meta = json.load(f)
            base = {k: arrays.pop(k) for k in ("image", "probs", "classes")}
            stderr = {k[:-len(STDERR)]: arrays.pop(k) for k in list(arrays) if k.endswith(STDERR)}
        except (OSError, KeyError, ValueError) as e:
            raise InfolensError(f"cannot read explanation {stem_path}.npz/.json: {e}") from None
        version = meta.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise InfolensError(f"{stem_path}.json has schema version {version!r}; this infolens reads versions 1 to "
                                f"{SCHEMA_VERSION} (upgrade infolens)")
        return cls(labels=[c["label"] for c in meta["classes"]], maps=arrays, stderr=stderr, params=meta["params"],
                   model=meta["model"], timing=meta["timing"], forwards=meta["forwards"], source=meta["source"],
                   notes=meta.get("input_notes", []),
                   **base)


def check_outputs(out_dir: str, stem: str, overwrite: bool = False) -> None:
    """Before computing: InfolensError when the result `stem` would replace files in `out_dir` that infolens did not
    write (and `overwrite` is not set)."""
    outfiles.check_replaceable(out_dir, stem, overwrite, tuple(MAPS))


def result_pattern(stem: str) -> re.Pattern:
    """The file names the result `stem` may write (any map, any class)."""
    return outfiles.result_pattern(stem, tuple(MAPS))
