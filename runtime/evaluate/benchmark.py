"""`infolens eval benchmark`: the paper's evaluation at scale on labelled photos, one study per section.

A Study measures one item at a time — a photo, or a mosaic of four photos; the runner writes one JSON per item and
study under OUT/<study>/ (atomically), so a restart skips what is done and refuses other settings (except fewer
multi-scale candidates: `--scales`); the report (report.md, CSVs, plots) is rebuilt from all records at the end of
every run.  This file: the runner, the report's
frame and the statistics every study uses; removal.py: removal in both orders under every fill; pointing.py: the
grid pointing game; the others: studies.py, the registry of studies by name.
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
from .fills import FILLS, Fill, make_fill
from ..methods import Explainer
from ..samplers import load_sampler

REFERENCE = ("pmi", "patchsampler")  # the paired comparisons are against PMI with the (new) PatchSampler


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

    def explainer(self, sampler: str | None, K: int, model: str | None = None) -> Explainer:
        """An Explainer with the named sampler at patch size K (None: no sampler), made once per study."""
        cache = self.__dict__.setdefault("_explainers", {})
        if (sampler, K, model) not in cache:
            cache[(sampler, K, model)] = Explainer(self.classifier, sampler and self.sampler(sampler, K, model),
                                                   batch_size=self.batch_size)
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
                              study.classifier.device)
    rows = engine.map_items([{"name": name, **item} for name, item in todo], setup,
                            functools.partial(_item_on_actor, folder), address, study.classifier.device)
    for r in rows:
        if r["error"]:
            print(f"infolens: error: {r['name']}: {r['error']}", file=sys.stderr)


def _same_study(kind: type, kwargs: dict, description: dict, device: str) -> Study:
    """A Ray actor's own study with the same settings (its own sessions)."""
    from ..classifier import OnnxClassifier

    return kind(OnnxClassifier.from_description(description, device), **kwargs)


def _item_on_actor(folder: str, study: Study, item: dict) -> dict:
    name = str(item["name"])
    try:
        record = study.run(item)
    except InfolensError as err:
        return {"name": name, "error": params.with_flag(err)}
    outfiles.write_atomic(_record_path(folder, name), lambda f: f.write(json.dumps(record).encode()))
    return {"name": name, "error": ""}


# ---- the report ---------------------------------------------------------------------------------------------------

def _groups(rows) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["map"], r["sampler"]) for r in rows))


def ci(values) -> tuple[float, float, float]:
    """Mean and its 95 % t confidence interval."""
    from scipy import stats

    v = np.asarray(values, float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(stats.sem(v) * stats.t.ppf(0.975, len(v) - 1))
    return m, m - h, m + h


def compare(rows: list[dict], metric: str, fill: str, target: str) -> dict:
    """Per (map, sampler) group: mean and 95 % CI of `metric`, and against the reference (PMI/PatchSampler) on the
    same photos: the mean paired difference and the Wilcoxon signed-rank p-value (two-sided; scipy.stats).
    {group: {"mean", "low", "high", "n", "diff", "p"}}."""
    sel = [r for r in rows if r["fill"] == fill and r["target"] == target]
    value = {(r["map"], r["sampler"], r["image"]): r[metric] for r in sel}
    out = {}
    for key in _groups(sel):
        v = [r[metric] for r in sel if (r["map"], r["sampler"]) == key]
        mean, low, high = ci(v)
        entry = {"mean": mean, "low": low, "high": high, "n": len(v), "diff": float("nan"), "p": float("nan")}
        a, b = paired(value, key, REFERENCE)
        if key != REFERENCE and len(a):
            entry["diff"], entry["p"] = float(np.mean(a - b)), wilcoxon(a, b)
        out[key] = entry
    return out


def paired(value: dict, key: tuple, base: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The values of groups `key` and `base` on the photos both have, in photo order: value {(map, sampler, photo):
    float} → (a, b) float64 [n]."""
    common = sorted(i for (m, s, i) in value if (m, s) == key and (*base, i) in value)
    return np.array([value[(*key, i)] for i in common], float), np.array([value[(*base, i)] for i in common], float)


def wilcoxon(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p of paired values (scipy.stats); nan when fewer than 2 or all equal."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(stats.wilcoxon(a, b).pvalue) if len(a) > 1 and np.any(a != b) else float("nan")


def write_report(studies: list[Study], records: dict[str, list[dict]], out_dir: str, command: str = "") -> dict:
    """OUT/report.md: the header (command, settings, the classifier's accuracy on the photos of the study with the
    most), then each study's section (which writes its CSV and plots into OUT); returns {"photos", "top1",
    "top5"}."""
    most = max((r for r in records.values() if r and r[0].get("top1_correct") is not None), key=len, default=[])
    n = len(most)
    top1 = float(np.mean([r["top1_correct"] for r in most])) if most else float("nan")
    top5 = float(np.mean([r["top5_correct"] for r in most])) if most else float("nan")
    lines = ["# Faithfulness benchmark", "", f"Regenerate: `{command}`" if command else "", "",
             f"Photos: {n}. The classifier's accuracy on them: top-1 {100 * top1:.1f} %, top-5 {100 * top5:.1f} %."
             if n else "",
             "", "Sections: " + ", ".join(f"{s.name} ({len(records[s.name])} {s.unit}s)" for s in studies) + ".", ""]
    lines += verdict_section(studies, records)
    for study in studies:
        section = study.section(records[study.name], out_dir)  # its heading, then the settings it ran with
        lines += section[:2] + ["Settings: " + ", ".join(f"{k}={v}" for k, v in study.settings().items()), ""]
        lines += section[2:]
        lines.append(f"Time: {sum(r['seconds'] for r in records[study.name]) / 3600:.2f} h "
                     f"({np.mean([r['seconds'] for r in records[study.name]]):.0f} s per {study.unit}).")
        lines.append("")
    outfiles.write_atomic(os.path.join(out_dir, "report.md"), lambda f: f.write("\n".join(lines).encode()))
    return {"photos": n, "top1": top1, "top5": top5}


def verdict_section(studies: list[Study], records: dict[str, list[dict]]) -> list[str]:
    """The protocols side by side: each plain map's headline score under every study that has one (its mean and
    rank), and the paired difference from `explain`'s default map (PMI with PMI.default_sampler) with its 95 % t
    interval and Wilcoxon p; no lines when fewer than two studies have a headline."""
    from ..methods import METHODS

    base = ("pmi", METHODS["pmi"].default_sampler)
    scored = [(s, s.headline(records[s.name])) for s in studies]
    scored = [(s, rows) for s, rows in scored if rows]
    if len(scored) < 2:
        return []
    value, means = {}, {}
    for s, rows in scored:
        value[s.name] = {(r["map"], r["sampler"], r["image"]): r["score"] for r in rows}
        groups = {}
        for r in rows:
            groups.setdefault((r["map"], r["sampler"]), []).append(r["score"])
        means[s.name] = {k: float(np.mean(v)) for k, v in groups.items()}
    # ties (the class-independent maps' 0.25 in the pointing game) broken by name, so a rebuilt report is the same
    rank = {n: {k: i for i, k in enumerate(sorted(m, key=lambda k: (-m[k], k)), 1)} for n, m in means.items()}
    keys = sorted({k for m in means.values() for k in m},
                  key=lambda k: (np.mean([rank[n].get(k, len(rank[n]) + 1) for n in rank]), k))
    lines = ["## Which map to trust: the protocols side by side", "",
             "Each map's headline score under every protocol measured here (higher is better) and its rank there "
             "(ties by name); "
             f"Δ: paired against `infolens explain`'s default map, {base[0]} / {base[1]}, with its 95 % t interval "
             "and Wilcoxon p, on the items both have. A removal protocol favours maps built on the same removal and "
             "the pointing game maps that spread over the object, so no single column is neutral; the controls "
             "(random, edge: no classifier) show what a protocol gives for nothing.", "",
             "| map | sampler | " + " | ".join(f"{s.name}: {s.headline_label} (rank) | Δ [95 % CI], p" for s, _ in scored)
             + " |", "|---|---|" + "---|---|" * len(scored)]
    for key in keys:
        cells = []
        for s, _ in scored:
            if key not in means[s.name]:
                cells += ["—", ""]
                continue
            cells.append(f"{means[s.name][key]:.3f} ({rank[s.name][key]})")
            a, b = paired(value[s.name], key, base)
            if key == base or not len(a):
                cells.append("")
                continue
            m, lo, hi = ci(a - b)
            cells.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}], {fmt_p(wilcoxon(a, b))}")
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return lines + [""]


def csv_text(rows, fields) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_csv(out_dir: str, name: str, rows: list[dict]) -> None:
    """`rows` (dicts with the same keys) as the CSV file `name` in `out_dir`, written atomically; nothing for none."""
    if rows:
        outfiles.write_atomic(os.path.join(out_dir, name), lambda f: f.write(csv_text(rows, list(rows[0])).encode()))


def fmt_signed(v: float) -> str:
    return "" if np.isnan(v) else f"{v:+.4f}"


def fmt_ci(entry: dict) -> str:
    """A `compare` entry as "mean [low, high]"."""
    return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def fmt_p(p: float) -> str:
    return "" if np.isnan(p) else (f"{p:.2g}" + (" *" if p < 0.05 else ""))


def fmt_values(values, digits: int = 3) -> str:
    """Mean [95 % CI] of the finite values ("—" for none)."""
    v = [x for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "—"
    m, lo, hi = ci(v)
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if len(v) > 1 else f"{m:.{digits}f}"
