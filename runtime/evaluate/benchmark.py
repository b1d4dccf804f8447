"""`infolens eval benchmark`: the paper's evaluation at scale on labelled photos, one study per section.

A Study measures one item at a time — a photo, or a mosaic of four photos; the runner writes one JSON per item and
study under OUT/<study>/ (atomically), so a restart skips what is done and refuses other settings (except fewer
multi-scale candidates: `--scales`); the report (report.md, CSVs, plots) is rebuilt from all records at the end of
every run.  This file: the Study base and the runner; stats.py: the statistics every study uses; report.py: the
report's frame; removal.py: removal in both orders under every fill; pointing.py: the grid pointing game; the
others: studies.py, the registry of studies by name.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time

import numpy as np

from .. import outfiles, params
from ..errors import InfolensError
from .explanations import FOLDER, CachingExplainer
from .fills import FILLS, Fill, make_fill
from .report import write_report
from ..methods import Explainer
from ..samplers import load_sampler

def default_samplers(K: int) -> list[str]:
    """PMI/IG samplers: the PatchSampler (logistic mixture), the first, categorical PatchSampler, then gaussian,
    mean, ring-mean (the context's mean colour: nothing of the patch), noise and black."""
    from ..catalog import shipped

    return ["patchsampler", "patchsampler=" + shipped(f"patchsampler_k{K}_categorical.onnx", "samplers"), "gaussian",
            "mean", "ring-mean", "noise", "black"]



def read_labels(labels_csv: str, images_dir: str, limit: int | None = None) -> list[tuple[str, int, str]]:
    """(image path, true class index, class name) from a CSV with columns file, class_index (and name); `limit`
    picks that many rows evenly spaced over the file (e.g. every 5th class of 1000 for 200)."""
    try:
        with open(labels_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise InfolensError(f"cannot read the labels {labels_csv}: {e.strerror or e}", "labels") from None
    if not rows or not {"file", "class_index"} <= set(rows[0]):
        raise InfolensError(f"{labels_csv} needs the columns file and class_index", "labels")
    out = []
    for r in rows:
        path = os.path.join(images_dir, r["file"])
        if not os.path.isfile(path):
            raise InfolensError(f"{labels_csv} names {r['file']}, which is not in {images_dir}", "images")
        out.append((path, int(r["class_index"]), r.get("name", "")))
    if limit is not None:
        params.check("limit", limit)
    return evenly(out, limit)


def evenly(items: list, n: int | None) -> list:
    """`n` of `items` evenly spaced over the list (all of them when n is None or not smaller)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


class Study:
    """One section of the benchmark, measured item by item — by default one item per photo (Captum-style: `photo`
    owns the loop's common part, a study overrides `measure`, `settings` and `section`; a study whose items are not
    photos, such as the pointing game's mosaics, overrides `items` and `run`).  every_photo: runs on every photo
    (else on the --study-photos subset).  Constructor keywords are kept (`kwargs`, plain values), so a Ray actor
    builds the same study."""

    name, every_photo, unit = "", True, "photo"

    def __init__(self, classifier, **kwargs):
        self.classifier, self.kwargs = classifier, kwargs
        self.batch_size = kwargs.get("batch_size", 64)

    def settings(self) -> dict:
        """What the records depend on: a resumed run must have the same."""
        raise NotImplementedError

    def measure(self, image: np.ndarray, pred: int, true_class: int) -> dict:
        """The study's record of one photo (uint8 [H, W, 3] in the input space), beyond the prediction."""
        raise NotImplementedError

    def section(self, records: list[dict], out_dir: str) -> list[str]:
        """The report's Markdown lines for this study; writes its CSV and plots into out_dir."""
        raise NotImplementedError

    headline_label = ""  # what `headline` scores, for the verdict's column (empty: the study has no headline)

    def headline(self, records: list[dict]) -> list[dict]:
        """The study's one faithfulness score per item and plain map (higher is better), for the report's verdict
        across protocols: rows {"map", "sampler", "image", "score"}; none by default."""
        return []

    def items(self, photos: list[tuple[str, int, str]], study_photos: int, folder: str) -> list[tuple[str, dict]]:
        """(record name, item) pairs, one per photo this study measures (all, or `study_photos` evenly spaced);
        folder: the study's own (for what choosing the items writes)."""
        mine = photos if self.every_photo else evenly(photos, study_photos)
        stems = [os.path.splitext(os.path.basename(p))[0] for p, _, _ in mine]
        # photos of one name from different folders get their own records
        names = [stem if stems.count(stem) == 1 else f"{stem}-{hashlib.sha1(os.path.abspath(p).encode()).hexdigest()[:8]}"
                 for stem, (p, _, _) in zip(stems, mine)]
        return [(name, {"path": p, "cls": c}) for name, (p, c, _) in zip(names, mine)]

    def run(self, item: dict) -> dict:
        """The record of one item (JSON-ready)."""
        return self.photo(str(item["path"]), as_label(item["cls"]))

    def photo(self, path: str, true_class: int | None, **options) -> dict:
        """The record of one photo: the prediction, then `measure(image, pred, true_class, **options)`; an
        unlabelled photo (true_class None) has no accuracy."""
        clf, t_photo = self.classifier, time.perf_counter()
        image = clf.load_image(path)
        probs = clf.predict_images(image[None])[0]
        top5 = [int(c) for c in np.argsort(-probs, kind="stable")[:5]]
        labelled = true_class is not None
        record = {"image": os.path.basename(path), "true_class": int(true_class) if labelled else None, "top5": top5,
                  "top5_probs": [float(probs[c]) for c in top5],
                  "top1_correct": top5[0] == true_class if labelled else None,
                  "top5_correct": true_class in top5 if labelled else None}
        record.update(self.measure(image, top5[0], record["true_class"], **options))
        record["seconds"] = round(time.perf_counter() - t_photo, 2)
        return record

    def sampler(self, name: str, K: int, model: str | None = None):
        """The named sampler at patch size K, opened once per study."""
        cache = self.__dict__.setdefault("_samplers", {})
        if (name, K, model) not in cache:
            cache[(name, K, model)] = load_sampler(name, K=K, model=model, device=self.classifier.placement)
        return cache[(name, K, model)]

    def fill(self, name: str, K: int) -> Fill:
        """The fill `name` (fills.FILLS) for maps at patch size K — the PatchSampler fill with this study's
        PatchSampler at K and `fill_draws` draws — made once per study."""
        cache = self.__dict__.setdefault("_fills", {})
        if (name, K) not in cache:
            sampler = self.sampler("patchsampler", K) if name == "patchsampler" else None
            cache[(name, K)] = make_fill(name, self.classifier, K, sampler, draws=self.kwargs.get("fill_draws", 4),
                                         seed=self.kwargs.get("seed", 0))
        return cache[(name, K)]

    explanations: str | None = None  # the benchmark's shared explanations (explanations.py), set by the runner

    def explainer(self, sampler: str | None, K: int, model: str | None = None) -> Explainer:
        """An Explainer with the named sampler at patch size K (None: no sampler), made once per study; with
        `explanations` set, one that reads and keeps the explanations the studies share."""
        cache = self.__dict__.setdefault("_explainers", {})
        if (sampler, K, model) not in cache:
            args = (self.classifier, sampler and self.sampler(sampler, K, model))
            cache[(sampler, K, model)] = (CachingExplainer(*args, batch_size=self.batch_size, folder=self.explanations)
                                          if self.explanations else Explainer(*args, batch_size=self.batch_size))
        return cache[(sampler, K, model)]


def as_label(cls) -> int | None:
    return None if cls is None else int(cls)


def unlabelled(paths: list[str]) -> list[tuple[str, None, str]]:
    """Photos without labels, as read_labels gives labelled ones: the predicted class is explained."""
    return [(p, None, "") for p in paths]


def check_fills(fills) -> None:
    for f in fills:
        if f not in FILLS:
            raise InfolensError(f"unknown fill {f!r}: choose from {', '.join(FILLS)}", "fills")


def run_benchmark(studies: list[Study], photos: list[tuple[str, int, str]], out_dir: str, progress: bool = True,
                  command: str = "", ray: str | None = None, report_dir: str | None = None,
                  study_photos: int = 20, measure: bool = True) -> dict:
    """Each study on its photos (every photo, or `study_photos` of them evenly spaced), skipping the photos it
    has in OUT/<study>/ (each JSON written as soon as it is done), then the report (into report_dir, default OUT)
    from every study's records; returns the report's figures.  ray: spread the photos over Ray actors
    (distributed.ray) at that address.  measure False: measure nothing, report on the records there are (the
    report of a run that is not finished)."""
    params.check("study_photos", study_photos)
    records, expected = {}, {}
    for study in studies:
        study.explanations = os.path.join(out_dir, FOLDER)
        folder = os.path.join(out_dir, study.name)
        os.makedirs(folder, exist_ok=True)
        settings_path = os.path.join(folder, "settings.json")
        settings = study.settings()
        if os.path.exists(settings_path):
            with open(settings_path) as f:
                earlier = json.load(f)
            changed = sorted(k for k in {**settings, **earlier} if earlier.get(k) != settings.get(k))
            if changed == ["scales"] and set(settings["scales"]) <= set(earlier["scales"]):
                # fewer multi-scale candidates than the records have: the records keep theirs (the report pairs a
                # candidate on the items that have it), and from now on the folder promises only these
                outfiles.write_atomic(settings_path, lambda f: f.write(json.dumps(settings, indent=1).encode()))
            elif changed:
                raise InfolensError(f"{folder} holds the {study.name} study with other settings "
                                    f"({', '.join(changed)}): resume it with the same ones, or choose another --out",
                                    "out")
        else:
            outfiles.write_atomic(settings_path, lambda f: f.write(json.dumps(settings, indent=1).encode()))
        items = study.items(photos, study_photos, folder)
        expected[study.name] = len(items)
        todo = [(name, item) for name, item in items if measure and not os.path.exists(_record_path(folder, name))]
        if todo and ray is not None:
            _on_ray(study, todo, folder, ray)
        elif todo:
            from tqdm import tqdm

            for name, item in tqdm(todo, unit="item", disable=not progress, desc=study.name, file=sys.stderr):
                try:
                    record = study.run(item)
                except InfolensError as err:
                    print(f"infolens: error: {item.get('path', name)}: {params.with_flag(err)}", file=sys.stderr)
                    continue
                outfiles.write_atomic(_record_path(folder, name), lambda f, r=record: f.write(json.dumps(r).encode()))
        records[study.name] = [_load(_record_path(folder, name)) for name, _ in items
                               if os.path.exists(_record_path(folder, name))]
        if not records[study.name]:
            raise InfolensError(f"nothing could be evaluated in the {study.name} study")
    report_dir = report_dir or out_dir
    os.makedirs(report_dir, exist_ok=True)
    report = write_report(studies, records, report_dir, command)
    report["complete"] = all(len(records[name]) == n for name, n in expected.items())
    return report


def _record_path(folder: str, name: str) -> str:
    return os.path.join(folder, name + ".json")


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _on_ray(study: Study, todo, folder: str, address: str) -> None:
    import functools

    from ..distributed import ray as engine

    # sessions do not pickle: an actor gets the study's class and settings and opens its own
    setup = functools.partial(_same_study, type(study), study.kwargs, study.classifier.describe(),
                              study.classifier.device, study.explanations)
    rows = engine.map_items([{"name": name, **item} for name, item in todo], setup,
                            functools.partial(_item_on_actor, folder), address, study.classifier.device)
    for r in rows:
        if r["error"]:
            print(f"infolens: error: {r['name']}: {r['error']}", file=sys.stderr)


def _same_study(kind: type, kwargs: dict, description: dict, device: str, explanations: str | None) -> Study:
    """A Ray actor's own study with the same settings (its own sessions) and the same shared explanations."""
    from ..classifier import OnnxClassifier

    study = kind(OnnxClassifier.from_description(description, device), **kwargs)
    study.explanations = explanations
    return study


def _item_on_actor(folder: str, study: Study, item: dict) -> dict:
    name = str(item["name"])
    try:
        record = study.run(item)
    except InfolensError as err:
        return {"name": name, "error": params.with_flag(err)}
    outfiles.write_atomic(_record_path(folder, name), lambda f: f.write(json.dumps(record).encode()))
    return {"name": name, "error": ""}
