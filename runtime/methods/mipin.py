"""MIP-IN (Deng et al.; DESIGN §8): maps from a fitted inverse of the classifier's top layers — one classifier forward
with taps, one inverse forward, whatever the number of classes."""
from __future__ import annotations

import json
import os
import time

import cv2
import numpy as np

from ..catalog import card_path, file_sha256, models_dir
from ..classifier import OnnxClassifier, Tapped
from ..errors import InfolensError
from .base import Attribution, Plan

SUFFIX = ".mipin.onnx"  # an inverse lives beside its classifier as <model stem>.mipin.onnx, its card as .mipin.json


def default_inverse(classifier: OnnxClassifier) -> str:
    """The inverse `infolens mipin fit` wrote beside the classifier, else the shipped one of that name."""
    stem = os.path.splitext(classifier.model_path)[0]
    for path in (stem + SUFFIX, os.path.join(models_dir(), os.path.basename(stem) + SUFFIX)):
        if os.path.isfile(path):
            return path
    raise InfolensError(f"no MIP-IN inverse for {os.path.basename(classifier.model_path)}: fit one with "
                        f"`infolens mipin fit` (it writes {os.path.basename(stem) + SUFFIX}) or pass its path",
                        "inverse")


def upsample(maps: np.ndarray, H: int, W: int) -> np.ndarray:
    """Maps [k, h, w] resized bilinearly to [k, H, W], float32 (as Grad-CAM's)."""
    return np.stack([cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR) for m in maps]).astype(np.float32)


class MIPIN(Attribution):
    """map "mipin" [k, H, W]: for each class c, the signal S^(c) that e_c ⊙ (y − μ_y) at the logits becomes, sent down
    the fitted linear inverse masked by this image's ReLU pattern, at the map layer; the map is Σ_channels S^(c) ⊙
    (X − μ), how much of the image's centred activation there lies along the class's reconstruction (signed;
    positive: the activation agrees with the class's), resized bilinearly to the input.  Units: activation².

    inverse : path of a fitted inverse (`infolens mipin fit`; default: default_inverse).  Its card must name this
    classifier's sha256, or `fitted_for` when given: the sanity check applies the trained model's inverse to a
    randomized copy of it.
    """

    name, maps, default_sampler, costly_to_open = "mipin", ("mipin",), None, True

    def __init__(self, classifier: OnnxClassifier, inverse: str | None = None, batch_size: int = 64,
                 progress: bool = False, fitted_for: str | None = None):
        super().__init__(classifier, batch_size, progress)
        from ..mipin.part import for_classifier, taps

        self.inverse_path = inverse or default_inverse(classifier)
        card = card_path(self.inverse_path)
        try:
            with open(card) as f:
                self.card = json.load(f)
        except (OSError, ValueError) as e:
            raise InfolensError(f"cannot read the inverse's card {card}: {e}", "inverse") from None
        if self.card.get("classifier_sha256") not in (None, fitted_for or file_sha256(classifier.model_path)):
            raise InfolensError(f"{self.inverse_path} was fitted for another classifier (sha256 "
                                f"{self.card['classifier_sha256'][:12]}…); fit one for this model", "inverse")
        model, part = for_classifier(classifier, self.card["map_layer"])
        self.taps = [self.card["logits"], *self.card["taps"]]
        self.tapped = Tapped(classifier, self.taps, taps(model, part)[0])
        self.inverse = classifier.placement.helper().open(self.inverse_path)
        self.inverse_sha256 = file_sha256(self.inverse_path)  # the bytes loaded, as for the classifier

    @classmethod
    def from_explainer(cls, explainer) -> "MIPIN":
        return cls(explainer.classifier, explainer.inverse, explainer.batch_size, explainer.progress)

    def batch_maps(self, images: np.ndarray, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Many images at once, one class each: uint8 RGB input-space images [B, H, W, 3] and classes int64 [B]
        (default: each image's top class) → (probabilities float64 [B, Y], maps float32 [B, H, W]): one tapped
        forward and one inverse forward for the whole batch."""
        p, found = self.tapped.run(self.classifier.normalize(images))
        cls = np.argmax(p, 1) if classes is None else classes
        return p, upsample(self.inverse_run(found, cls)[0], *images.shape[1:3])

    def inverse_run(self, found: dict, classes, outputs=("maps",)) -> list[np.ndarray]:
        """The inverse on the taps of one tapped forward (`found`, from `_predict` or `tapped.run`) for classes
        int64 [k] (one image) or [B] (B images, one class each); `outputs` of the inverse graph."""
        feeds = {name: np.ascontiguousarray(found[name]) for name in self.taps}
        feeds["classes"] = np.asarray(classes, np.int64)
        return self.inverse.run(list(outputs), feeds)

    def _predict(self, base):
        p, found = self.tapped.run(base)
        return p[0], found

    def _attribute(self, plan: Plan, progress):
        t0 = time.perf_counter()
        small = self.inverse_run(plan.first, plan.classes)[0]
        maps = upsample(small, *plan.img.shape[:2])
        run_params = {"inverse": os.path.abspath(self.inverse_path), "inverse_sha256": self.inverse_sha256,
                      "map_layer": self.card["map_layer"], "map_shape": list(small.shape[1:])}
        return {"mipin": maps}, {}, run_params, {"inverse_s": time.perf_counter() - t0}
