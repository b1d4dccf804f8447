"""`infolens serve` as a user runs it: a real server process on 127.0.0.1, a real HTTP client (urllib), real ONNX
models.  Jobs give the CLI's arrays exactly, chunked round-robin, across a SIGKILL and a restart; every bad request
is a JSON error naming its field; auth, limits, the synchronous KServe route, health and metrics."""
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import run_cli, scene

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, prometheus-client) is not installed")

PARAMS = {"K": 4, "S": 2, "N": 3, "classes": "top2", "sampler": "noise", "seed": 7}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(tmp_path, *flags, state="state", env=None):
    """`infolens serve` in its own process until the block ends; yields (base URL, process).  Its output goes to a
    log file beside the state folder (a pipe nobody reads would stop a server that logs a lot)."""
    port = free_port()
    log = tmp_path / f"server-{state.replace('/', '-')}.log"
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "infolens", "serve", "--port", str(port), "--state-dir",
                                 str(tmp_path / state), *map(str, flags)], stdout=out, stderr=out, text=True,
                                env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError(f"the server exited: {log.read_text()}")
            with contextlib.suppress(OSError):
                if call(url + "/v2/health/ready")[0] == 200:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("the server never got ready")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def call(url, body=None, method=None, token=None, raw=None):
    """(status, parsed JSON or bytes, headers) of one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, payload, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, payload, hdrs = e.code, e.read(), e.headers
    try:
        return status, json.loads(payload), hdrs
    except ValueError:
        return status, payload, hdrs


def wait(url, job_id, token=None, timeout=120):
    for _ in range(int(timeout / 0.05)):
        status, job, _ = call(f"{url}/v1/jobs/{job_id}", token=token)
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end: {job}")


def b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


def cli_arrays(tmp_path, models_dir, photo, params=PARAMS):
    out = tmp_path / "cli"
    r = run_cli("explain", photo, "--model", models_dir / "toy.onnx", "-K", params["K"], "-S", params["S"], "-N",
                params["N"], "--classes", params["classes"], "--sampler", params["sampler"], "--seed",
                params["seed"], "--out", out, "-q")
    assert r.returncode == 0, r.stderr
    with np.load(next(out.glob("*.npz"))) as z:
        return {k: z[k] for k in z.files}


def fetch_npz(url, job_id):
    status, payload, headers = call(f"{url}/v1/jobs/{job_id}/result?format=npz")
    assert status == 200
    import io

    with np.load(io.BytesIO(payload)) as z:
        return {k: z[k] for k in z.files}


def assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.slow
def test_a_job_gives_the_clis_arrays_in_chunks_and_its_files(tmp_path, models_dir, photo):
    expected = cli_arrays(tmp_path, models_dir, photo)
    with server(tmp_path, "--models", models_dir, "--chunk-forwards", 30) as (url, _):
        status, body, headers = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": PARAMS})
        assert status == 202 and headers["Location"] == f"/v1/jobs/{body['id']}"
        job = wait(url, body["id"])
        assert job["state"] == "done" and job["forwards_done"] == job["forwards_total"] == 121 * 3 + 1
        assert_same_arrays(fetch_npz(url, body["id"]), expected)
        shards = list((tmp_path / "state" / "jobs" / body["id"]).glob("shard_*.npz"))
        assert len(shards) == -(-121 // 10)  # 30 forwards = 10 positions per chunk
        status, record, _ = call(f"{url}/v1/jobs/{body['id']}/result?format=json")
        assert status == 200 and record["forwards"] == job["forwards_done"] and record["params"]["K"] == 4
        status, png, headers = call(f"{url}/v1/jobs/{body['id']}/result?format=png")
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        status, err, _ = call(f"{url}/v1/jobs/{body['id']}/result?format=png&map=nope")
        assert status == 404 and err["field"] == "map"
        status, m, _ = call(f"{url}/v1/models")
        assert [x["name"] for x in m["models"]] == ["toy"] and len(m["models"][0]["sha256"]) == 64
        status, text, _ = call(f"{url}/metrics")
        text = text.decode() if isinstance(text, bytes) else str(text)
        assert 'infolens_jobs{state="done"} 1.0' in text and "infolens_forwards_total 363.0" in text


def curl_form(url, *fields) -> tuple[int, dict]:
    """POST multipart/form-data with curl, as a user would (`curl -F file=@photo.png -F model=toy …`)."""
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *[a for f in fields for a in ("-F", f)], url],
                       capture_output=True, text=True, timeout=60)
    body, _, code = r.stdout.rpartition("\n")
    return int(code), json.loads(body)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_a_job_submitted_as_a_form_with_a_file(tmp_path, models_dir, photo):
    """`curl -F file=@photo.png -F model=toy -F K=4 …`: the same job, the same arrays as the JSON route and the CLI;
    the params as fields of their own or as one JSON field; errors name the form's field."""
    expected = cli_arrays(tmp_path, models_dir, photo)
    with server(tmp_path, "--models", models_dir) as (url, _):
        fields = [f"{k}={v}" for k, v in PARAMS.items()]
        status, body = curl_form(f"{url}/v1/jobs", f"file=@{photo}", "model=toy", *fields)
        assert status == 202, body
        assert wait(url, body["id"])["state"] == "done"
        assert_same_arrays(fetch_npz(url, body["id"]), expected)
        status, body = curl_form(f"{url}/v1/jobs", f"image=@{photo}", "model=toy", f"params={json.dumps(PARAMS)}")
        assert status == 202 and wait(url, body["id"])["state"] == "done"
        assert_same_arrays(fetch_npz(url, body["id"]), expected)
        for fields, field in ((["model=toy", "K=4"], "file"), ([f"file=@{photo}", "model=toy", "K=four"], "params.K"),
                              ([f"file=@{photo}", "K=4"], "model"), ([f"file=@{photo}", "model=toy", "Q=1"], "params.Q")):
            status, err = curl_form(f"{url}/v1/jobs", *fields)
            assert status == 422 and err["field"] == field, (fields, err)


@pytest.mark.slow
def test_a_short_job_is_not_stuck_behind_a_long_one(tmp_path, models_dir, photo):
    with server(tmp_path, "--models", models_dir, "--chunk-forwards", 30) as (url, _):
        long = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": {**PARAMS, "S": 1, "N": 8}})[1]
        short = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": {**PARAMS, "S": 4, "N": 1}})[1]
        assert wait(url, short["id"])["state"] == "done"
        assert call(f"{url}/v1/jobs/{long['id']}")[1]["state"] == "running"  # still: it had 12x the work
        assert wait(url, long["id"])["state"] == "done"


@pytest.mark.slow
def test_no_job_is_lost_across_a_kill_and_a_restart(tmp_path, models_dir, photo):
    params = {**PARAMS, "S": 1, "N": 6}
    expected = cli_arrays(tmp_path, models_dir, photo, params)
    with server(tmp_path, "--models", models_dir, "--chunk-forwards", 24) as (url, proc):
        ids = [call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": params})[1]["id"]
               for _ in range(3)]
        for _ in range(400):  # kill it once the first job has finished some chunks but not all
            job = call(f"{url}/v1/jobs/{ids[0]}")[1]
            if 0 < job["forwards_done"]:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert job["state"] == "running" and job["forwards_done"] < job["forwards_total"]
    with server(tmp_path, "--models", models_dir, "--chunk-forwards", 24) as (url, _):
        for job_id in ids:
            assert wait(url, job_id)["state"] == "done"
            assert_same_arrays(fetch_npz(url, job_id), expected)


@pytest.mark.slow
def test_cancel(tmp_path, models_dir, photo):
    with server(tmp_path, "--models", models_dir, "--chunk-forwards", 8) as (url, _):
        job = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": {**PARAMS, "S": 1, "N": 8}})[1]
        status, body, _ = call(f"{url}/v1/jobs/{job['id']}", method="DELETE")
        assert status == 200 and body["state"] == "cancelled"
        assert call(f"{url}/v1/jobs/{job['id']}", method="DELETE")[0] == 409
        assert call(f"{url}/v1/jobs/{job['id']}/result")[0] == 409
        assert call(f"{url}/v1/jobs/nope")[0] == 404


@pytest.mark.parametrize("body,status,field", [
    (b"not json", 422, "body"),
    ({"model": "toy", "image": "%%%"}, 422, "image"),
    ({"model": "toy", "image": base64.b64encode(b"not an image").decode()}, 422, "image"),
    ({"model": "nope", "image": "AAAA"}, 404, "model"),
    ({"image": "AAAA"}, 422, "model"),
    ({"model": "toy", "image": "PHOTO", "params": {"K": 0}}, 422, "params.K"),
    ({"model": "toy", "image": "PHOTO", "params": {"K": 4, "S": 9}}, 422, "params.S"),
    ({"model": "toy", "image": "PHOTO", "params": {"K": 99}}, 422, "params.K"),
    ({"model": "toy", "image": "PHOTO", "params": {"N": "many"}}, 422, "params.N"),
    ({"model": "toy", "image": "PHOTO", "params": {"bogus": 1}}, 422, "params.bogus"),
    ({"model": "toy", "image": "PHOTO", "params": {"method": "magic"}}, 422, "params.method"),
    ({"model": "toy", "image": "PHOTO", "params": {"N": 3, "samples": 3}}, 422, "params.samples"),
    ({"model": "toy", "image": "PHOTO", "params": {"K": 8, "S": 1, "N": 100, "sampler": "noise"}}, 422,
     "params"),  # over --max-forwards
    ({"model": "toy", "image": "PHOTO", "params": {"K": 2, "sampler": "patchsampler"}}, 422,
     "params.K"),  # no PatchSampler for K=2
    ({"model": "toy", "image": "BIG"}, 413, "image"),  # over --max-pixels, from the header alone
])
@pytest.mark.slow
def test_bad_requests_are_json_errors_naming_the_field(tmp_path, models_dir, photo, body, status, field):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((300, 300, 3), np.uint8))
    with server(tmp_path, "--models", models_dir, "--max-forwards", 20000, "--max-pixels", 50000) as (url, _):
        if isinstance(body, dict):
            body = dict(body, image={"PHOTO": b64(photo), "BIG": b64(big)}.get(body["image"], body["image"]))
        got, err, _ = call(f"{url}/v1/jobs", raw=body if isinstance(body, bytes) else json.dumps(body).encode())
        assert (got, err["field"]) == (status, field), err
        assert isinstance(err["error"], str) and "\n" not in err["error"]
        assert call(f"{url}/v2/health/live")[0] == 200  # still serving


@pytest.mark.slow
def test_limits_body_and_queue(tmp_path, models_dir, photo):
    with server(tmp_path, "--models", models_dir, "--max-body-mb", 0.01, "--queue-size", 1, "--chunk-forwards", 8) \
            as (url, _):
        status, err, _ = call(f"{url}/v1/jobs", raw=b"{" + b" " * 20000 + b"}")
        assert status == 413 and err["field"] == "body"
        first = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": {**PARAMS, "S": 1, "N": 8}})
        assert first[0] == 202
        status, err, headers = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": PARAMS})
        assert status == 429 and int(headers["Retry-After"]) >= 1
        status, text, _ = call(f"{url}/metrics")
        assert 'infolens_rejections_total{reason="queue_full"} 1.0' in text.decode()


@pytest.mark.slow
def test_bearer_tokens(tmp_path, models_dir, photo):
    tokens = tmp_path / "tokens"
    tokens.write_text("# the team's\nsecret-1\n\nsecret-2\n")
    with server(tmp_path, "--models", models_dir, "--token-file", tokens) as (url, _):
        assert call(f"{url}/v2/health/live")[0] == 200 and call(f"{url}/v2/health/ready")[0] == 200
        for token in (None, "wrong", "secret-10"):
            status, err, headers = call(f"{url}/v1/models", token=token)
            assert status == 401 and err["field"] == "authorization" and headers["WWW-Authenticate"] == "Bearer"
        assert call(f"{url}/v1/models", token="secret-2")[0] == 200
        assert call(f"{url}/metrics")[0] == 401


def test_other_hosts_need_tokens(tmp_path):
    r = run_cli("serve", "--host", "0.0.0.0", "--state-dir", tmp_path / "s")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--token-file" in r.stderr, r.stderr
    r = run_cli("serve", "--port", "0", "--state-dir", tmp_path / "s")
    assert r.returncode == 2 and "--port" in r.stderr


@pytest.mark.slow
def test_synchronous_kserve_route(tmp_path, models_dir, photo):
    expected = cli_arrays(tmp_path, models_dir, photo)
    with server(tmp_path, "--models", models_dir, "--sync-forwards", 1000) as (url, _):
        status, body, _ = call(f"{url}/v1/models/toy:explain", {"instances": [{"b64": b64(photo)},
                                                                             scene(24, 24).tolist()],
                                                               "parameters": PARAMS})
        assert status == 200 and len(body["predictions"]) == 2, body
        for pred in body["predictions"]:  # the file and the same pixels as an array: the same maps
            assert pred["classes"] == expected["classes"].tolist()
            np.testing.assert_array_equal(np.asarray(pred["maps"]["pmi"], np.float32), expected["pmi"])
        status, err, _ = call(f"{url}/v1/models/toy:explain", {"instances": [b64(photo)] * 3, "parameters": PARAMS})
        assert status == 422 and err["field"] == "instances" and "/v1/jobs" in err["error"]
        status, err, _ = call(f"{url}/v1/models/toy:explain", {"instances": [[[1, 2]]]})
        assert status == 422 and err["field"] == "instances.0"
        assert call(f"{url}/v1/models/nope:explain", {"instances": [b64(photo)]})[1]["field"] == "model"
        status, err, _ = call(f"{url}/v1/models/toy:explain", {"instances": [b64(photo)], "parameters": {"K": 0}})
        assert status == 422 and err["field"] == "parameters.K"


def test_ended_jobs_are_deleted_after_the_retention_time(tmp_path):
    from infolens.serve.jobs import JobStore

    store = JobStore(tmp_path / "state")
    old, new, active = (store.create("toy", {}, b"\x89PNG", "a.png", 10) for _ in range(3))
    store.finish(old.id, "done")
    store.finish(new.id, "failed", "why")
    store._db().execute("UPDATE jobs SET finished = finished - 7200 WHERE id = ?", (old.id,))
    assert store.expire(3600) == [old.id]
    assert store.get(old.id) is None and not os.path.exists(store.folder(old.id))
    assert store.get(new.id).state == "failed" and store.get(active.id).state == "queued"
    assert store.counts() == {"queued": 1, "running": 0, "done": 0, "failed": 1, "cancelled": 0}
    store.start(active.id)
    assert JobStore(tmp_path / "state").recover() == 1 and store.get(active.id).state == "queued"


@pytest.mark.slow
def test_other_methods_run_as_jobs_and_their_forwards_are_estimated_exactly(tmp_path, models_dir, photo):
    with server(tmp_path, "--models", models_dir) as (url, _):
        for params in ({"method": "rise", "N": 20, "classes": "top1"}, {"method": "occlusion", "K": 4, "S": 4},
                       {"method": "pmi", "K": 4, "S": 4, "sampler": "gray"}):
            job = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": params})[1]
            job = wait(url, job["id"])
            assert job["state"] == "done" and job["forwards_done"] == job["forwards_total"], job
        job = wait(url, call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo),
                                                "params": {"method": "mipin"}})[1]["id"])
        assert job["state"] == "failed" and "inverse" in job["error"]  # the toy model has no fitted inverse


@pytest.mark.slow
def test_a_job_database_locked_by_another_process_delays_jobs_and_loses_none(tmp_path, models_dir, photo):
    """Another process holds the job database's write lock past SQLite's 30 s timeout while a job runs: the worker
    waits and goes on (it used to fail the job as an internal error, or die with it), the job ends done with the
    CLI's arrays, and the server answers reads meanwhile (WAL)."""
    import sqlite3

    params = {**PARAMS, "S": 1, "N": 8}
    expected = cli_arrays(tmp_path, models_dir, photo, params)
    with server(tmp_path, "--models", models_dir, "--chunk-forwards", 8) as (url, _):
        job = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": params})[1]
        other = sqlite3.connect(tmp_path / "state" / "jobs.sqlite", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            time.sleep(33)
            status, body, _ = call(f"{url}/v1/jobs/{job['id']}")
            assert status == 200 and body["state"] in ("queued", "running"), body
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert wait(url, job["id"])["state"] == "done"
        assert_same_arrays(fetch_npz(url, job["id"]), expected)


@pytest.mark.slow
def test_a_submission_while_another_process_locks_the_database_is_a_503_and_delays_no_one_else(tmp_path, models_dir,
                                                                                                photo):
    import sqlite3
    import threading

    with server(tmp_path, "--models", models_dir) as (url, _):
        other = sqlite3.connect(tmp_path / "state" / "jobs.sqlite", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        answer = {}
        submit = threading.Thread(target=lambda: answer.update(r=call(
            f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": PARAMS})))
        try:
            submit.start()
            time.sleep(1)
            t0 = time.time()
            assert call(f"{url}/v2/health/live")[0] == 200 and time.time() - t0 < 5  # not stuck behind it
            submit.join(60)
        finally:
            other.execute("ROLLBACK")
            other.close()
        status, body, headers = answer["r"]
        assert status == 503 and "job database is busy" in body["error"] and body["field"] is None, body
        assert headers["Retry-After"] == "5"
        job = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": PARAMS})[1]
        assert wait(url, job["id"])["state"] == "done"  # once the lock is gone, all is as before


@pytest.mark.slow
def test_incremental_jobs_give_the_full_forwards_maps(tmp_path, photo):
    """`serve --incremental on`: a job's maps are the CLI's full forwards' within float rounding, its chunks reuse
    the grid's graphs, and its record says incremental inference ran."""
    import onnx_builders
    from conftest import write_card

    folder = tmp_path / "models"
    folder.mkdir()
    write_card(onnx_builders.cnn(folder / "toy.onnx", "residual", 24, 24), "NCHW", "RGB", "float32", kind="probs")
    expected = cli_arrays(tmp_path, folder, photo)
    with server(tmp_path, "--models", folder, "--chunk-forwards", 30, "--incremental", "on") as (url, _):
        status, body, _ = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": PARAMS})
        assert status == 202
        job = wait(url, body["id"])
        assert job["state"] == "done", job
        got = fetch_npz(url, body["id"])
        status, record, _ = call(f"{url}/v1/jobs/{body['id']}/result?format=json")
    assert record["model"]["incremental"]["mode"] == "on" and record["model"]["incremental"]["used"]
    assert sorted(got) == sorted(expected)
    maps = [k for k in expected if k.startswith(("pmi", "ig"))]
    assert maps
    for k in maps:
        assert np.abs(got[k] - expected[k]).max() <= 1e-4, k  # bits
