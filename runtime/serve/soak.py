"""The server under a steady, bounded load for a long time (`make soak`: 30 minutes):

    python -m infolens.serve.soak [--minutes 30] [--clients 4] [--models DIR --model NAME] [--json OUT.json]

A real `infolens serve` on loopback with a short retention; clients that submit jobs (a few fixed requests, and
now and then a broken image), poll them, fetch their results and cancel some, at random (seeded) until the time is
up.  At the end it checks, and prints as JSON: no job lost (every accepted job ended done, cancelled, or failed for
a broken image — and none failed otherwise), every result's arrays byte for byte those of `infolens explain` for
the same request, no answer a 5xx or a dropped connection, the server's resident memory after warm-up (its first
fifth) growing by no more than --rss-mb, and the ended jobs' folders and records pruned once they are older than
the retention.  Exit 0 when all hold.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import numpy as np

from .loadtest import Server, request

REQUESTS = [{"K": 16, "S": 16, "N": 2, "sampler": "noise", "classes": "top1", "seed": 0},
            {"K": 16, "S": 16, "sampler": "ring-mean", "classes": "top2", "seed": 0},
            {"K": 16, "S": 8, "N": 1, "sampler": "noise", "classes": "top1", "seed": 3}]
CLI_FLAGS = {"K": "-K", "S": "-S", "N": "-N", "sampler": "--sampler", "classes": "--classes", "seed": "--seed"}


def broken_images(image: bytes) -> list[bytes]:
    """Inputs a server must refuse or fail in one line: empty, cut short, not an image."""
    return [b"", image[:len(image) // 3], b"not an image at all\n" * 10, b"\x89PNG\r\n\x1a\n" + bytes(64)]


def reference(image_path: str, model: str | None, params: dict, out: str) -> dict[str, bytes]:
    """`infolens explain` for the same request: its npz's arrays as bytes."""
    flags = [x for k, v in params.items() for x in (CLI_FLAGS[k], str(v))]
    subprocess.run([sys.executable, "-m", "infolens", "explain", image_path, *flags, "--out", out, "-q", "--no-png",
                    "--overwrite"] + (["--model", model] if model else []), check=True, capture_output=True)
    stem = os.path.splitext(os.path.basename(image_path))[0]
    with np.load(os.path.join(out, stem + ".npz")) as z:
        return {k: z[k].tobytes() for k in z.files}


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) / 1024


def soak(images: list[str], seconds: float, clients: int, model_name: str, models_dir: str | None,
         retention_s: float, rss_bound_mb: float, seed: int = 0) -> dict:
    """The soak; returns its figures and `problems` (empty when everything held)."""
    work = tempfile.mkdtemp(prefix="infolens-soak-")
    model_file = os.path.join(models_dir, model_name + ".onnx") if models_dir else None
    datas = {}
    for p in images:
        with open(p, "rb") as f:
            datas[p] = f.read()
    refs = {(p, i): reference(p, model_file, r, os.path.join(work, "cli")) for p in images
            for i, r in enumerate(REQUESTS)}
    server = Server(os.path.join(work, "state"), ["--queue-size", "16", "--retention-hours", str(retention_s / 3600)]
                    + (["--models", models_dir] if models_dir else []))
    server.start()
    lock = threading.Lock()
    jobs: dict[str, dict] = {}  # id → {"key", "broken", "state", "checked"}
    problems: list[str] = []
    counts = {"submitted": 0, "rejected_429": 0, "refused_4xx": 0, "polls": 0, "fetches": 0, "cancels": 0,
              "cancels_accepted": 0}
    rss: list[tuple[float, float]] = []
    t0 = time.time()
    end = t0 + seconds

    def problem(text):
        with lock:
            if len(problems) < 50:
                problems.append(text)

    def call(path, body=None):
        try:
            status, answer, _ = request(server.url + path, body)
        except Exception as e:  # a dropped connection or a body that is not JSON
            problem(f"{path}: no answer ({type(e).__name__}: {e})")
            return 0, None
        if status >= 500:
            problem(f"{path}: {status} {answer}")
        return status, answer

    def client(k):
        rng = random.Random(seed * 1000 + k)
        mine: list[str] = []
        while time.time() < end:
            action = rng.random()
            if action < 0.35 or not mine:
                broken = rng.random() < 0.15
                path = rng.choice(images)
                i = rng.randrange(len(REQUESTS))
                data = rng.choice(broken_images(datas[path])) if broken else datas[path]
                status, answer = call("/v1/jobs", {"model": model_name, "params": REQUESTS[i],
                                                   "image": base64.b64encode(data).decode()})
                with lock:
                    counts["submitted"] += 1
                if status == 202:
                    with lock:
                        jobs[answer["id"]] = {"key": (path, i), "broken": broken, "state": "queued", "checked": False}
                    mine.append(answer["id"])
                elif status == 429:
                    with lock:
                        counts["rejected_429"] += 1
                    time.sleep(0.5)
                elif 400 <= status < 500 and broken and isinstance(answer, dict) and "field" in answer:
                    with lock:
                        counts["refused_4xx"] += 1
                elif status:
                    problem(f"submit: {status} {answer}")
            elif action < 0.85:
                job_id = rng.choice(mine)
                status, answer = call(f"/v1/jobs/{job_id}")
                with lock:
                    counts["polls"] += 1
                if status == 200:
                    jobs[job_id]["state"] = answer["state"]
                    if answer["state"] == "done" and not jobs[job_id]["checked"]:
                        check(job_id)
                    if answer["state"] in ("done", "failed", "cancelled"):
                        mine.remove(job_id)
            elif action < 0.95:
                job_id = rng.choice(mine)
                status, _ = _delete(job_id)
                with lock:
                    counts["cancels"] += 1
                    counts["cancels_accepted"] += status == 200
            time.sleep(rng.uniform(0.0, 0.2))

    def _delete(job_id):
        req = urllib.request.Request(f"{server.url}/v1/jobs/{job_id}", method="DELETE")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, None
        except urllib.error.HTTPError as e:
            if e.code >= 500:
                problem(f"cancel {job_id}: {e.code}")
            return e.code, None
        except OSError as e:
            problem(f"cancel {job_id}: no answer ({e})")
            return 0, None

    def check(job_id):
        """The result's arrays against the CLI's for the same request."""
        info = jobs[job_id]
        try:
            with urllib.request.urlopen(f"{server.url}/v1/jobs/{job_id}/result?format=npz", timeout=60) as r:
                raw = r.read()
        except OSError as e:
            problem(f"result {job_id}: {e}")
            return
        with np.load(io.BytesIO(raw)) as z:
            got = {k: z[k].tobytes() for k in z.files}
        if got != refs[info["key"]]:
            problem(f"result {job_id} differs from infolens explain's for {info['key']}")
        with lock:
            counts["fetches"] += 1
            info["checked"] = True

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    while time.time() < end:
        rss.append((time.time() - t0, rss_mb(server.proc.pid)))
        time.sleep(min(5.0, seconds / 40))
    for t in threads:
        t.join(60)
    # every accepted job ends: wait for the active ones, then judge each
    deadline = time.time() + 300
    for job_id, info in list(jobs.items()):
        while time.time() < deadline:
            status, answer = call(f"/v1/jobs/{job_id}")
            if status != 200 or answer["state"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        if status == 404:
            info["state"] = "pruned" if info["state"] in ("done", "failed", "cancelled") else "lost"
        elif status == 200:
            info["state"] = answer["state"]
            if answer["state"] == "done" and not info["checked"]:
                check(job_id)
            if answer["state"] == "failed" and not info["broken"]:
                problem(f"job {job_id} failed: {answer.get('error')}")
            if answer["state"] == "done" and info["broken"]:
                problem(f"job {job_id} of a broken image was done")
    lost = [j for j, info in jobs.items() if info["state"] in ("lost", "queued", "running")]
    problems += [f"job {j} lost ({jobs[j]['state']})" for j in lost]
    # pruning: once older than the retention (checked once a minute), an ended job's folder and record go
    state_jobs = os.path.join(server.state_dir, "jobs")
    prune_by = time.time() + retention_s + 75
    while time.time() < prune_by:
        left = [j for j in jobs if os.path.isdir(os.path.join(state_jobs, j))]
        if not left:
            break
        time.sleep(2)
    left = [j for j in jobs if os.path.isdir(os.path.join(state_jobs, j)) or request(
        f"{server.url}/v1/jobs/{j}")[0] == 200]
    if left:
        problems.append(f"{len(left)} ended jobs not pruned after the retention: {left[:3]}")
    warm = [v for t, v in rss if t >= seconds / 5]
    base = warm[0] if warm else float("nan")
    growth = (max(warm) - base) if warm else float("nan")
    if growth > rss_bound_mb:
        problems.append(f"resident memory grew by {growth:.0f} MB after warm-up (bound {rss_bound_mb:g} MB)")
    server.stop()
    states = {}
    for info in jobs.values():
        states[info["state"]] = states.get(info["state"], 0) + 1
    return {"seconds": round(seconds), "clients": clients, "model": model_name, **counts, "accepted": len(jobs),
            "ended": states, "checked_against_cli": sum(i["checked"] for i in jobs.values()), "lost": len(lost),
            "rss_after_warmup_mb": round(base, 1), "rss_peak_mb": round(max(v for _, v in rss), 1) if rss else None,
            "rss_growth_mb": round(growth, 1), "retention_s": retention_s, "problems": problems}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infolens.serve.soak", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--images", nargs="+", help="photos to submit (default: the source tree's examples/)")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--models", help="the server's --models folder (default: the shipped models)")
    ap.add_argument("--retention-s", type=float, default=60.0, help="the server's retention (default 60 s)")
    ap.add_argument("--rss-mb", type=float, default=50.0, help="resident memory growth allowed after warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    from .app import default_examples

    images = args.images or sorted(os.path.join(default_examples() or ".", f) for f in ("chelsea.png", "coffee.png"))
    report = soak(images, args.minutes * 60, args.clients, args.model, args.models, args.retention_s, args.rss_mb,
                  args.seed)
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
