"""Run the hostile-image corpus (tests/fuzz/corpus.py) through the library, the CLI and the server and tabulate what
happened.

    python tests/fuzz/run.py [--seed 0] [-n 1000] [--model M.onnx] [--report docs/fuzz.md]

Each case must end in a correct result (its explanation) or one clear line (the library: an InfolensError of one
line; the CLI: one `infolens: error:` line naming the file, exit 2, the other files of the batch still explained) —
never a traceback, a crash (a signal), a hang over --timeout seconds, or a process whose peak memory passes
--max-rss-mb.  A well-formed image must be explained; an empty file, bytes that are not an image and a decompression
bomb must be refused.  The library runs in a worker process watched from here, so a crash or a hang is caught and
the worker restarted after that case; the CLI runs the cases in batches, as a user would pass a folder; a real
server on loopback gets each case as a job and on the KServe route (a refusal: a 4xx JSON error naming the field,
or a failed job with a one-line error).

Outcomes: ok (explained), refused (one clear line), traceback (any other exception, or a line that is not one),
crash, hang, memory; "wrong": a valid image refused, or a file that must be refused explained.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import corpus  # noqa: E402

OUTCOMES = ("ok", "refused", "traceback", "crash", "hang", "memory")
EXPLAIN = ("--resize", "stretch", "--sampler", "gray", "--no-png")  # the cheapest explanation: gray, one forward a patch


def grid_flags(model: str | None) -> list[str]:
    """-K and -S for about 16 patches of the model's input (the cost of a case is the decoding, not the map)."""
    from infolens import OnnxClassifier

    clf = OnnxClassifier.from_card(model) if model else OnnxClassifier.from_card()
    K = max(1, min(clf.pre.size) // 4)
    return ["-K", str(K), "-S", str(K)]


def peak_mb(pid: int) -> int:
    """A process's peak resident memory so far (VmHWM), in MB.  Not getrusage's ru_maxrss: Linux carries that
    across exec, so a child started from a big process would report its parent's peak."""
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) >> 10


# ---- the library, in a watched worker --------------------------------------------------------------------------

def worker(folder: str, names: list[str], model: str | None, flags: list[str], max_mb: int) -> None:
    """The worker's loop: a line "start NAME" before each case and a JSON record after it, on stdout."""
    resource.setrlimit(resource.RLIMIT_AS, (max_mb * 4 << 20, max_mb * 4 << 20))  # a runaway allocation fails here
    from infolens import Explainer, InfolensError, OnnxClassifier, load_sampler

    clf = OnnxClassifier.from_card(model, resize="stretch") if model else OnnxClassifier.from_card(resize="stretch")
    K = int(flags[1])
    explainer = Explainer(clf, load_sampler("gray", K))
    for name in names:
        print("start " + name, flush=True)
        t0 = time.perf_counter()
        try:
            explainer.explain(os.path.join(folder, name), stride=K)
            outcome, message = "ok", ""
        except InfolensError as e:
            one = "\n" not in str(e) and str(e).strip()
            outcome, message = ("refused" if one else "traceback"), str(e)
        except MemoryError as e:
            outcome, message = "memory", f"MemoryError: {e}"
        except Exception as e:  # the bug this run looks for
            outcome, message = "traceback", f"{type(e).__name__}: {e}"
        peak = peak_mb(os.getpid())
        print(json.dumps({"case": name, "outcome": outcome, "message": message.splitlines()[0] if message else "",
                          "seconds": time.perf_counter() - t0, "peak_mb": peak}), flush=True)


def library(folder: str, names: list[str], model: str | None, flags: list[str], timeout: float,
            max_mb: int) -> dict[str, dict]:
    """Every case through `Explainer.explain` in a worker process; a crash or a hang ends the worker, which is
    started again after that case."""
    results: dict[str, dict] = {}
    todo = list(names)
    while todo:
        args = json.dumps({"folder": folder, "names": todo, "model": model, "flags": flags, "max_mb": max_mb})
        log = tempfile.TemporaryFile("w+")  # the decoders' warnings: a pipe nobody reads would fill and block
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", args],
                                 stdout=subprocess.PIPE, stderr=log, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in child.stdout] + [lines.put(None)], daemon=True).start()
        current, budget = None, 60.0 + timeout  # the first case also waits for the worker's start-up
        while True:
            try:
                line = lines.get(timeout=budget)
            except queue.Empty:
                child.kill()
                child.wait()
                results[current or todo[0]] = {"outcome": "hang", "message": f"no answer in {timeout:g} s"}
                break
            if line is None:  # the worker ended: done, or it died on `current`
                child.wait()
                if current is not None and current not in results:
                    log.seek(0)
                    results[current] = {"outcome": "crash", "message": f"worker exit {child.returncode}: "
                                        + (log.read().strip().splitlines() or [""])[-1]}
                break
            if line.startswith("start "):
                current, budget = line[6:].strip(), timeout
                continue
            record = json.loads(line)
            if record["peak_mb"] > max_mb:
                record = {**record, "outcome": "memory", "message": f"peak {record['peak_mb']} MB"}
            results[record["case"]] = record
        log.close()
        todo = [n for n in names if n not in results]
    return results


# ---- the CLI, in batches ---------------------------------------------------------------------------------------

def cli(folder: str, names: list[str], model: str | None, flags: list[str], timeout: float, max_mb: int,
        batch: int = 100) -> dict[str, dict]:
    """Every case through `infolens explain`, `batch` files to a command; a batch that crashes or hangs is run
    again a file at a time, so the case that did it is named."""
    results: dict[str, dict] = {}
    for i in range(0, len(names), batch):
        results.update(_cli_batch(folder, names[i:i + batch], model, flags, timeout, max_mb, split=batch > 1))
    return results


def _cli_batch(folder, names, model, flags, timeout, max_mb, split) -> dict[str, dict]:
    out = tempfile.mkdtemp(prefix="infolens-fuzz-out-")
    command = [sys.executable, "-m", "infolens", "explain", *[os.path.join(folder, n) for n in names], *EXPLAIN,
               *flags, "--out", out, "-q"] + (["--model", model] if model else [])
    log = tempfile.TemporaryFile("w+")
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    peak, problem, end = 0, None, time.time() + 20 + timeout * len(names)
    while child.poll() is None:  # its peak memory, read while it runs (VmHWM only grows)
        with contextlib.suppress(OSError, StopIteration, ValueError):
            peak = max(peak, peak_mb(child.pid))
        if time.time() > end:
            child.kill()
            problem = "hang"
            break
        time.sleep(0.05)
    child.wait()
    log.seek(0)
    err = log.read()
    log.close()
    if problem is None and child.returncode < 0:
        problem = "crash"
    if problem:
        if split:
            return {k: v for n in names for k, v in _cli_batch(folder, [n], model, flags, timeout, max_mb,
                                                                False).items()}
        return {names[0]: {"outcome": problem, "message": f"exit {child.returncode}"}}
    lines = err.splitlines()
    results = {}
    for n in names:
        mine = [line for line in lines if n in line]
        done = os.path.isfile(os.path.join(out, os.path.splitext(n)[0] + ".json"))
        if done and not mine:
            outcome, message = "ok", ""
        elif not done and len(mine) == 1 and mine[0].startswith("infolens: error: "):
            outcome, message = "refused", mine[0]
        else:
            outcome, message = "traceback", " | ".join(mine)[:300] or "no result and no error line"
        results[n] = {"outcome": outcome, "message": message}
    stray = [line for line in lines if not any(n in line for n in names)]
    if "Traceback" in err or stray:
        for n in names:  # an error the lines do not pin on a file is every file's problem
            results[n] = {"outcome": "traceback", "message": (stray or ["Traceback"])[0][:300]}
    if child.returncode not in (0, 2) or (child.returncode == 2) != any(r["outcome"] != "ok" for r in results.values()):
        for n in names:
            results[n] = {"outcome": "traceback", "message": f"exit {child.returncode}"}
    if peak > max_mb:
        for n in names:
            results[n] = {"outcome": "memory", "message": f"peak {peak} MB"}
    return results


# ---- the server: the jobs API and the KServe route ---------------------------------------------------------------

def _call(url: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, object]:
    """(status, the JSON answer or None when it is not JSON); status 0: no answer (a dropped connection)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, None if body is None else json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, None


def _answer(status: int, body) -> tuple[str, str]:
    """A refusal must be 4xx JSON {"error": one line, "field": …}."""
    if status == 0:
        return "crash", "no answer (connection dropped)"
    if 400 <= status < 500 and isinstance(body, dict) and isinstance(body.get("error"), str) \
            and "\n" not in body["error"] and "field" in body:
        return "refused", f"{status} {body['error']} ({body['field']})"
    return "traceback", f"{status} {str(body)[:200]}"


def server(folder: str, names: list[str], model: str | None, flags: list[str], timeout: float,
           max_mb: int) -> dict[str, dict[str, dict]]:
    """Every case through a real `infolens serve` on loopback, twice: a job (POST /v1/jobs, polled until it ends)
    and the KServe route (POST /v1/models/NAME:explain) → {"server jobs": {case: result}, "server kserve": …}.  A
    case after which the server is down crashed it (a new one serves the rest); the server's peak memory (VmHWM)
    is checked at the end."""
    import base64

    from infolens.serve.loadtest import Server

    params = {"K": int(flags[1]), "S": int(flags[3]), "sampler": "gray", "classes": "top1"}
    models = ["--models", os.path.dirname(os.path.abspath(model))] if model else []
    name = os.path.splitext(os.path.basename(model))[0] if model else "efficientnet_lite0"
    srv = Server(tempfile.mkdtemp(prefix="infolens-fuzz-state-"), models + ["--queue-size", "1000"])
    srv.start()
    jobs, kserve, peak = {}, {}, 0
    try:
        for n in names:
            with open(os.path.join(folder, n), "rb") as f:
                b64 = base64.b64encode(f.read()).decode()
            status, body = _call(f"{srv.url}/v1/models/{name}:explain",
                                 {"parameters": params, "instances": [{"b64": b64}]})
            kserve[n] = {"outcome": "ok", "message": ""} if status == 200 else dict(zip(("outcome", "message"),
                                                                                        _answer(status, body)))
            jobs[n] = _job(srv.url, name, params, b64, timeout)
            if srv.proc.poll() is not None:
                jobs[n] = {"outcome": "crash", "message": f"server exit {srv.proc.returncode}"}
                srv.start()
        with open(f"/proc/{srv.proc.pid}/status") as f:
            peak = int(next(line for line in f if line.startswith("VmHWM")).split()[1]) >> 10
    finally:
        srv.stop()
    out = {"server jobs": jobs, "server kserve": kserve}
    if peak > max_mb:
        out = {p: {n: {"outcome": "memory", "message": f"server peak {peak} MB"} for n in r} for p, r in out.items()}
    for r in out.values():
        for v in r.values():
            v["peak_mb"] = peak
    return out


def _job(url: str, name: str, params: dict, b64: str, timeout: float) -> dict:
    """One job submitted and polled: done → ok; failed with a one-line error, or a 4xx refusal → refused."""
    status, body = _call(f"{url}/v1/jobs", {"model": name, "params": params, "image": b64})
    if status != 202:
        return dict(zip(("outcome", "message"), _answer(status, body)))
    job, end = body["id"], time.time() + timeout
    while time.time() < end:
        status, body = _call(f"{url}/v1/jobs/{job}")
        state = body.get("state") if status == 200 and isinstance(body, dict) else None
        if state == "done":
            return {"outcome": "ok", "message": ""}
        if state == "failed":
            error = str(body.get("error") or "")
            return {"outcome": "refused" if error and "\n" not in error else "traceback",
                    "message": f"job failed: {error}"}
        if state not in ("queued", "running"):
            return {"outcome": "traceback", "message": f"{status} {str(body)[:200]}"}
        time.sleep(0.02)
    return {"outcome": "hang", "message": f"job not ended in {timeout:g} s"}


# ---- the corpus, run and tabulated -----------------------------------------------------------------------------

def judge(case: corpus.Case, result: dict) -> bool:
    """Whether a case's outcome is what it must be: no traceback, crash, hang or memory; a valid image explained, a
    file that must be refused refused."""
    o = result["outcome"]
    return o in ("ok", "refused") and not (case.valid and o != "ok") and not (case.refused and o != "refused")


def run(cases: list[corpus.Case], model: str | None, timeout: float = 10.0, max_mb: int = 1024,
        paths=("library", "cli", "server")) -> dict[str, dict[str, dict]]:
    """{path: {case name: result}} for the cases written into a temporary folder (the server's two routes are two
    paths)."""
    with tempfile.TemporaryDirectory(prefix="infolens-fuzz-") as folder:
        for c in cases:
            with open(os.path.join(folder, c.name), "wb") as f:
                f.write(c.data)
        names = [c.name for c in cases]
        flags = grid_flags(model)
        out = {}
        for p in paths:
            got = {"library": library, "cli": cli, "server": server}[p](folder, names, model, flags, timeout, max_mb)
            out.update(got if p == "server" else {p: got})
        return out


def table(cases: list[corpus.Case], results: dict[str, dict[str, dict]]) -> list[str]:
    """Markdown: a row per case kind and path, the count of each outcome and of wrong ones."""
    lines = ["| case kind | cases | path | " + " | ".join(OUTCOMES) + " | wrong |",
             "|---|---:|---|" + "---:|" * (len(OUTCOMES) + 1)]
    kinds = collections.defaultdict(list)
    for c in cases:
        kinds[c.kind].append(c)
    for kind, group in kinds.items():
        for path, res in results.items():
            counts = collections.Counter(res[c.name]["outcome"] for c in group)
            wrong = sum(not judge(c, res[c.name]) for c in group)
            lines.append(f"| {kind} | {len(group)} | {path} | " + " | ".join(str(counts.get(o, 0)) for o in OUTCOMES)
                         + f" | {wrong} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # the library's worker process (see `library`)
        a = json.loads(argv[1])
        worker(a["folder"], a["names"], a["model"], a["flags"], a["max_mb"])
        return 0
    ap = argparse.ArgumentParser(prog="python tests/fuzz/run.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", type=int, default=1000, help="cases at least (default 1000)")
    ap.add_argument("--model", help="classifier (default: the shipped one)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds a case may take (default 10)")
    ap.add_argument("--max-rss-mb", type=int, default=1024, help="a process's peak memory bound (default 1024)")
    ap.add_argument("--report", help="write the table and the failures here (Markdown)")
    args = ap.parse_args(argv)
    cases = corpus.cases(args.seed, args.n)
    t0 = time.perf_counter()
    results = run(cases, args.model, args.timeout, args.max_rss_mb)
    seconds = time.perf_counter() - t0
    failures = [f"- {path}: `{c.name}` ({c.kind}): {r[c.name]['outcome']} — {r[c.name]['message']}"
                for path, r in results.items() for c in cases if not judge(c, r[c.name])]
    lines = table(cases, results)
    peaks = {p: max((r.get("peak_mb", 0) for r in res.values()), default=0) for p, res in results.items()}
    summary = (f"{len(cases)} cases (seed {args.seed}), {len(failures)} wrong, in {seconds:.0f} s; peak memory: the "
               f"library's worker {peaks.get('library', 0)} MB, the server {peaks.get('server jobs', 0)} MB (bound "
               f"{args.max_rss_mb} MB each)")
    print("\n".join(lines + ["", summary] + failures))
    if args.report:
        command = "python tests/fuzz/run.py " + " ".join(argv)
        with open(args.report, "w") as f:
            f.write("\n".join([f"`{command.strip()}`", "", summary, ""] + lines + [""] +
                              (["Wrong:", ""] + failures if failures else ["Nothing wrong."]) + [""]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
