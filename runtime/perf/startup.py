"""Start-up and the short job: `infolens explain` as a user runs it, a fresh process timed from start to exit, against
raw ONNX Runtime running the same number of forwards at the same batch — with the fixed costs (interpreter and
imports, opening the sessions, writing the files) measured apart from the explanation's own throughput."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from ..errors import InfolensError
from ..methods import Explainer
from ..samplers import load_sampler
from .throughput import classifier_for, machine, options_line, raw_throughput


def short_job(args) -> int:
    """--startup: `rounds` alternating rounds of (raw forwards/s in this process; `infolens explain` in a child
    process, wall clock).  The ratio is raw's time for the job's forwards ÷ the child's wall time, start-up included."""
    with tempfile.TemporaryDirectory(prefix="infolens-perf-") as tmp:
        image = args.image
        clf = classifier_for(args)
        if image is None:  # a seeded random image at the input size: the cost does not depend on the content
            image = os.path.join(tmp, "random.png")
            rgb = np.random.default_rng(0).integers(0, 256, (*clf.pre.size, 3), dtype=np.uint8)
            cv2.imwrite(image, rgb[:, :, ::-1])
        command = [sys.executable, "-m", "infolens", "explain", image, "-K", str(args.K), "-S", str(args.S), "-N",
                   str(args.N), "--sampler", args.sampler, "--batch-size", str(args.batch_size), "--device",
                   args.device, "-q", "--overwrite"] + (["--model", args.model] if args.model else [])
        raw, wall, inner, imports = [], [], [], []
        for r in range(args.rounds):
            raw.append(raw_throughput(clf, args.batch_size, None))
            out = os.path.join(tmp, f"round{r}")
            t0 = time.perf_counter()
            child = subprocess.run(command + ["--out", out], stderr=subprocess.PIPE, text=True)
            if child.returncode:  # the job itself failed (a bad --image, --model, …): its own line
                raise InfolensError("the short job failed: " + child.stderr.strip().splitlines()[-1].removeprefix(
                                    "infolens: error: "), "image")
            wall.append(time.perf_counter() - t0)
            stem = os.path.splitext(os.path.basename(image))[0]
            with open(os.path.join(out, stem + ".json")) as f:
                record = json.load(f)
            inner.append(record["timing"]["total_s"])
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import infolens"], check=True)
            imports.append(time.perf_counter() - t0)
        forwards = record["forwards"]
        costs = subprocess.run([sys.executable, "-m", "infolens.perf.startup", json.dumps(
            {"model": args.model, "sampler": args.sampler, "K": args.K, "S": args.S, "batch_size": args.batch_size,
             "device": args.device, "image": image})], capture_output=True, text=True, check=True)
        opened, written = json.loads(costs.stdout)
    r, w = statistics.median(raw), statistics.median(wall)
    inside, started = statistics.median(inner), statistics.median(imports)
    other = w - started - opened - inside - written
    print(f"machine     {machine(clf)}")
    print(f"model       {clf.model_path}  batch {args.batch_size}  {options_line(clf)}")
    print(f"short job   infolens explain -K {args.K} -S {args.S} -N {args.N} --sampler {args.sampler}: {forwards} "
          "forwards, a fresh process from start to exit")
    print(f"raw ORT     {r:8.1f} forwards/s → {forwards / r:.2f} s for the job's forwards   (rounds: "
          f"{', '.join(f'{v:.1f}' for v in raw)})")
    print(f"wall clock  {w:8.2f} s   (rounds: {', '.join(f'{v:.2f}' for v in wall)})")
    print(f"ratio       {forwards / r / w:8.3f}   (raw time ÷ wall clock, start-up included)")
    print(f"inside      {inside:8.2f} s   the explanation itself: {forwards / inside:.1f} forwards/s, "
          f"{forwards / inside / r:.3f} of raw")
    print(f"fixed cost  {w - inside:8.2f} s   = interpreter + import infolens {started:.2f} s, opening the sessions "
          f"{opened:.2f} s, writing the files {written:.2f} s, the rest (reading the image, the CLI) {other:.2f} s")
    if not bytecode_cached():
        print("bytecode    not cached: every start compiles infolens's modules again (PYTHONDONTWRITEBYTECODE is set "
              "and the package has no .pyc; a pip-installed wheel brings its own), part of the fixed cost above")
    return 0


def bytecode_cached() -> bool:
    """Whether a fresh process finds infolens's modules compiled: their .pyc is there, or Python may write it."""
    import importlib.util

    import infolens

    cached = importlib.util.cache_from_source(infolens.__file__)
    return os.path.isfile(cached) or not sys.flags.dont_write_bytecode


def sessions_and_files(job: dict) -> tuple[float, float]:
    """In a fresh process, as the child of `short_job` pays them: seconds to open the classifier's and the sampler's
    sessions (their imports included), and to write one explanation's files (JSON, .npz, PNG overlays)."""
    from ..catalog import DEFAULT_CLASSIFIER, shipped
    from ..classifier import OnnxClassifier

    t0 = time.perf_counter()
    clf = OnnxClassifier.from_card(job["model"] or shipped(DEFAULT_CLASSIFIER, "model"), device=job["device"])
    sampler = load_sampler(job["sampler"], K=job["K"], device=clf.placement)
    opened = time.perf_counter() - t0
    e = Explainer(clf, sampler, batch_size=job["batch_size"]).explain(job["image"], stride=max(job["S"], job["K"]),
                                                                      samples=1)
    with tempfile.TemporaryDirectory(prefix="infolens-perf-") as out:
        t0 = time.perf_counter()
        e.save(out, "files")
        written = time.perf_counter() - t0
    return opened, written


if __name__ == "__main__":
    print(json.dumps(sessions_and_files(json.loads(sys.argv[1]))))
