"""Explanations shared between the studies of one benchmark (OUT/.explanations/).

The removal study explains every photo with every map; the in-distribution study explains 50 of the same photos
with the same maps, the negative-evidence study every photo with the reference PMI map, the N, K and MIP-IN studies
some of them again.  With the same classifier, sampler, grid, seed and photo an explanation is the same arrays, so
the first study to make one keeps it (its .npz and .json, `Explanation.save`) and the others read it back instead of
running its forwards again.  The key is a hash of everything the maps depend on (`CachingExplainer.key`), so a
changed setting misses the cache rather than reading another explanation; like the records, what is kept is
trusted on a resume (delete the folder after changing a method's code).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from ..explanation import Explanation
from ..methods import Explainer

FOLDER = ".explanations"  # under the benchmark's --out


class CachingExplainer(Explainer):
    """An Explainer whose `explain` of an image array reads the explanation from `folder` when an earlier call (of
    any study, in any process) made the same one, and keeps what it makes there; other arguments as Explainer."""

    def __init__(self, *args, folder: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.folder = folder

    def key(self, image: np.ndarray, classes, stride, samples, seed, method, also) -> str:
        """sha256 (hex) of the image's pixels and everything its maps depend on: the classifier (file, preprocessing,
        output, placement, --incremental mode), the sampler, the method and the methods sharing its run, the
        classes asked for, the grid, the seed, and the explainer's own settings."""
        clf = self.classifier.describe()
        clf.pop("incremental")
        what = {"classifier": {**clf, "model": os.path.basename(clf["model"]),
                               "incremental": self.classifier.incremental},
                "sampler": self.sampler.describe() if self.sampler is not None else None,
                "method": method, "also": list(also),
                "classes": classes if isinstance(classes, str) else np.asarray(classes).tolist(),
                "stride": stride, "samples": samples, "seed": seed, "K": self.K, "batch_size": self.batch_size,
                "rise": [self.rise_grid, self.rise_p], "adaptive": [self.target_se, self.max_samples],
                "inverse": self.inverse}
        h = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode())
        h.update(str(image.shape).encode() + np.ascontiguousarray(image).tobytes())
        return h.hexdigest()

    def explain(self, image, classes="top3", stride=None, samples=8, seed=0, source=None, method="pmi", notes=None,
                also=()) -> Explanation:
        if not isinstance(image, np.ndarray):  # a path: the studies pass arrays, and a file may change
            return super().explain(image, classes, stride, samples, seed, source, method, notes, also)
        key = self.key(image, classes, stride, samples, seed, method, also)
        path = os.path.join(self.folder, key + ".npz")
        if os.path.exists(path) and os.path.exists(os.path.join(self.folder, key + ".json")):
            return Explanation.load(path)
        e = super().explain(image, classes, stride, samples, seed, source, method, notes, also)
        os.makedirs(self.folder, exist_ok=True)
        e.save(self.folder, stem=key, overwrite=True, render=False)
        return e
