"""Load and fault test of `infolens serve`, on 127.0.0.1 only, bounded in jobs and time (`make loadtest`):

    python -m infolens.serve.loadtest [--clients 8] [--jobs 48] [--queue-size 4] [--kill-after 20]

Starts a server, has N concurrent clients submit jobs (retrying a 429 after its Retry-After) and poll each to its
end, SIGKILLs the server once mid-run and starts it again on the same state folder, and reports throughput,
latency (submission to done: p50, p99), rejections, and how many accepted jobs were lost (the claim: 0).  The
clients make their first submissions at the same moment, so a queue shorter than the clients turns the surplus
away (`burst_429`) unless jobs end within the few milliseconds those submissions take.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import numpy as np

SMALL = {"K": 16, "S": 16, "N": 2, "sampler": "noise", "classes": "top1"}


def request(url: str, body: dict | None = None, timeout: float = 30.0):
    """GET `url`, or POST `body` as JSON → (status, the JSON answer, headers); an HTTP error is an answer too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


class Server:
    """`infolens serve` in a subprocess on a free loopback port; start() waits until it is ready."""

    def __init__(self, state_dir: str, flags: list[str]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.state_dir, self.flags, self.proc = state_dir, flags, None

    def start(self, timeout: float = 120.0) -> None:
        # its stderr to a file: a pipe nobody reads fills up (a decoder's warnings, a log line per bad request) and
        # then blocks the server
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "infolens", "serve", "--port", str(self.port),
                                      "--state-dir", self.state_dir, *self.flags], stdout=subprocess.DEVNULL,
                                     stderr=self.log, text=True)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"the server exited: {self.log.read().strip()}")
            try:
                if request(self.url + "/v2/health/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not get ready")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def run(clients: int, jobs: int, image: bytes, model: str, params: dict, kill_after: float | None,
        flags: list[str], deadline_s: float) -> dict:
    """The load test; returns its figures (see the module's docstring)."""
    state = tempfile.mkdtemp(prefix="infolens-loadtest-")
    server = Server(state, flags)
    server.start()
    image64 = base64.b64encode(image).decode()
    lock = threading.Lock()
    accepted, latencies, rejections, errors = [], [], [0], []
    burst = [0]  # 429s answered to the clients' first submissions, made at the same moment
    start_together = threading.Barrier(clients)
    queue = list(range(jobs))
    t_start = time.time()
    end = t_start + deadline_s

    def call(path, body=None):
        while time.time() < end:  # through a restart: connection errors are retried until the deadline
            try:
                return request(server.url + path, body)
            except (OSError, http.client.HTTPException):  # a kill can also cut a response mid-body (IncompleteRead)
                time.sleep(0.2)
        raise TimeoutError(path)

    def client():
        first = True
        while True:
            with lock:
                if not queue:
                    return
                queue.pop()
            if first:
                start_together.wait()
            t0 = time.time()
            try:
                for attempt in itertools.count():
                    status, body, headers = call("/v1/jobs", {"model": model, "image": image64, "params": params})
                    if status != 429:
                        break
                    with lock:
                        rejections[0] += 1
                        burst[0] += first and attempt == 0
                    time.sleep(float(headers.get("Retry-After", 1)))
                if status != 202:
                    errors.append(f"submit: {status} {body}")
                    continue
                first = False
                with lock:
                    accepted.append(body["id"])
                while True:
                    status, job, _ = call(f"/v1/jobs/{body['id']}")
                    if job and job["state"] not in ("queued", "running"):
                        break
                    time.sleep(0.1)
                if job["state"] == "done":
                    latencies.append(time.time() - t0)
                else:
                    errors.append(f"job {body['id']}: {job['state']} {job.get('error')}")
            except TimeoutError as e:
                errors.append(f"deadline reached during {e}")
                return
            except Exception as e:  # a client that dies is an error of the run, not a thread warning
                errors.append(f"client: {type(e).__name__}: {e}")
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    restarts = 0
    if kill_after is not None:
        time.sleep(kill_after)
        if any(t.is_alive() for t in threads):
            server.kill()
            restarts = 1
            server.start()
    for t in threads:
        t.join(max(0.0, end - time.time()))
    wall = time.time() - t_start
    done, forwards = 0, 0
    for job_id in accepted:
        status, job, _ = request(f"{server.url}/v1/jobs/{job_id}")
        if status == 200 and job["state"] == "done":
            done += 1
            forwards += job["forwards_done"]
    server.stop()
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "jobs": jobs, "accepted": len(accepted), "done": done,
            "lost": len(accepted) - done, "rejections_429": rejections[0], "burst_429": burst[0], "errors": errors, "restarts": restarts,
            "wall_s": round(wall, 1), "jobs_per_s": round(done / wall, 3), "forwards_per_s": round(forwards / wall, 1),
            "latency_p50_s": round(float(np.percentile(lat, 50)), 2),
            "latency_p99_s": round(float(np.percentile(lat, 99)), 2), "state_dir": state}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infolens.serve.loadtest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=48)
    ap.add_argument("--image", help="image file (default: examples/chelsea.png of the source tree)")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--models", help="the server's --models folder (default: the shipped models)")
    ap.add_argument("--params", default=json.dumps(SMALL), help=f"job params as JSON (default {json.dumps(SMALL)})")
    ap.add_argument("--kill-after", type=float, default=20.0, help="SIGKILL the server after this many seconds and "
                    "restart it (negative: never; default 20)")
    ap.add_argument("--queue-size", type=int, default=4, help="the server's --queue-size: below --clients, so some "
                    "submissions meet a full queue (default 4)")
    ap.add_argument("--deadline", type=float, default=900.0, help="give up after this many seconds (default 900)")
    args = ap.parse_args(argv)
    from .app import default_examples

    path = args.image or os.path.join(default_examples() or ".", "chelsea.png")
    with open(path, "rb") as f:
        image = f.read()
    flags = ["--queue-size", str(args.queue_size)] + (["--models", args.models] if args.models else [])
    report = run(args.clients, args.jobs, image, args.model, json.loads(args.params),
                 None if args.kill_after < 0 else args.kill_after, flags, args.deadline)
    print(json.dumps(report, indent=1))
    return 0 if report["lost"] == 0 and not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
