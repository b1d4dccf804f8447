"""The server's storage failing under it, as it does on a real box: the state folder (on a small ext4 loop device)
fills up or turns read-only mid-run, and a sampler file disappears between jobs.  The job in hand fails with one
line naming --state-dir, the other jobs wait and say why, the server stays up (liveness 200, readiness 503 with the
reason, new submissions 503), nothing already written is damaged, and the rest finish — by themselves once there
is room again, or after a restart — with the CLI's arrays."""
import contextlib
import os
import shutil
import time

import pytest

from conftest import REPO
from test_serve import PARAMS, assert_same_arrays, b64, call, cli_arrays, fetch_npz, server, wait

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, prometheus-client) is not installed")

SLOW = {**PARAMS, "S": 1, "N": 8}  # 441 positions, one chunk each at --chunk-forwards 8: the fault lands mid-job


def submit(url, photo, params=SLOW):
    status, body, _ = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": params})
    assert status == 202, body
    return body["id"]


def jobs_underway(url, ids):
    for _ in range(600):
        if all(call(f"{url}/v1/jobs/{i}")[1]["forwards_done"] > 0 for i in ids):
            return
        time.sleep(0.05)
    raise AssertionError("the jobs never started")


def held(url, reason):
    """Waits for the server to hold its queue for `reason` → the readiness answer."""
    for _ in range(400):
        status, body, _ = call(f"{url}/v2/health/ready")
        if status == 503:
            break
        time.sleep(0.05)
    assert status == 503 and body["error"].startswith("cannot write into the state folder ") and \
        body["error"].endswith(" (--state-dir)") and reason(body["error"]), body
    assert call(f"{url}/v2/health/live")[0] == 200
    return body["error"]


def check_fault_answers(url, photo, ids, line):
    """While held: one job failed with the line or every job still active and showing it; a submission is a 503."""
    jobs = [call(f"{url}/v1/jobs/{i}")[1] for i in ids]
    assert all(j["error"] == line for j in jobs), jobs
    assert [j["state"] for j in jobs].count("failed") <= 1, jobs
    assert all(j["state"] in ("queued", "running", "failed") for j in jobs), jobs
    status, body, headers = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": PARAMS})
    assert status == 503 and body["error"] == line and body["field"] is None and headers["Retry-After"], body
    return [j["id"] for j in jobs if j["state"] == "failed"]


@contextlib.contextmanager
def faulted(tmp_path, models_dir, photo, fault, reason):
    """A server on the loop disk with three long jobs, two under way, when fault() strikes; yields (url, process,
    job ids, the fault's line, the ids of the jobs it failed) once the server holds its queue."""
    with server(tmp_path, "--models", models_dir, "--chunk-forwards", 8, state="disk/state") as (url, proc):
        ids = [submit(url, photo) for _ in range(3)]
        jobs_underway(url, ids[:2])
        fault()
        line = held(url, reason)
        yield url, proc, ids, line, check_fault_answers(url, photo, ids, line)


@pytest.mark.slow
def test_a_full_state_folder_fails_the_job_in_hand_holds_the_rest_and_goes_on_once_there_is_room(
        tmp_path, models_dir, photo, loop_disk):
    expected = cli_arrays(tmp_path, models_dir, photo, SLOW)
    with faulted(tmp_path, models_dir, photo, loop_disk.fill,
                 lambda e: "No space left on device" in e or "disk is full" in e) as (url, proc, ids, line, failed):
        assert b"infolens_queue_held 1.0" in call(f"{url}/metrics")[1]
        time.sleep(2)
        assert [call(f"{url}/v1/jobs/{i}")[1]["forwards_done"] for i in ids] == \
            [call(f"{url}/v1/jobs/{i}")[1]["forwards_done"] for i in ids]  # held: nothing moves
        loop_disk.free()  # the queue goes on by itself: no restart
        for i in ids:
            job = wait(url, i, timeout=300)
            if i in failed:
                assert job["state"] == "failed" and job["error"] == line, job
            else:
                assert job["state"] == "done" and job["error"] is None, job
                assert_same_arrays(fetch_npz(url, i), expected)
        assert len(failed) <= 1 and call(f"{url}/v2/health/ready")[0] == 200
        assert wait(url, submit(url, photo, PARAMS))["state"] == "done"
        assert proc.poll() is None


@pytest.mark.slow
def test_a_state_folder_that_turns_read_only_mid_run_holds_the_queue_and_a_restart_finishes_it(
        tmp_path, models_dir, photo, loop_disk):
    expected = cli_arrays(tmp_path, models_dir, photo, SLOW)
    with faulted(tmp_path, models_dir, photo, loop_disk.break_,
                 lambda e: any(s in e for s in ("Read-only", "readonly", "I/O error", "Input/output error"))) as (
            url, proc, ids, line, failed):
        assert proc.poll() is None
    loop_disk.repair()
    # a chunk cut short (as one written before shards were synced was): removed, and its positions run again
    shards = [sorted((loop_disk.where / "state" / "jobs" / i).glob("shard_*.npz")) for i in ids if i not in failed]
    max(shards, key=len)[-1].write_bytes(b"")
    with server(tmp_path, "--models", models_dir, state="disk/state") as (url, proc):
        for i in ids:
            job = wait(url, i, timeout=300)
            if i in failed:
                assert job["state"] == "failed" and job["error"] == line, job
            else:
                assert job["state"] == "done", job
                assert_same_arrays(fetch_npz(url, i), expected)


@pytest.mark.slow
def test_a_server_on_a_read_only_state_folder_is_one_line_and_exit_2(tmp_path, loop_disk):
    from conftest import run_cli

    (loop_disk.where / "state").mkdir()
    loop_disk.break_()
    r = run_cli("serve", "--state-dir", loop_disk.where / "state", "--port", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("infolens: error: ") and r.stderr.strip().endswith("(--state-dir)"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_a_sampler_file_that_disappears_between_jobs(tmp_path, models_dir, photo):
    """Loaded once, a sampler stays in memory: deleting its file changes nothing until a restart; after one, a job
    that needs it fails with one line naming the missing file and the other jobs finish."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("patchsampler_k8.onnx", "patchsampler_k8.json"):
        shutil.copy(os.path.join(REPO, "models", name), shipped)
    env = {"INFOLENS_MODELS": str(shipped)}
    learned = {"K": 8, "S": 4, "N": 2, "sampler": "patchsampler", "classes": "top1", "seed": 3}
    with server(tmp_path, "--models", models_dir, env=env) as (url, _):
        first = wait(url, submit(url, photo, learned))
        (shipped / "patchsampler_k8.onnx").unlink()
        second = wait(url, submit(url, photo, learned))
        assert first["state"] == second["state"] == "done", (first["error"], second["error"])
        assert_same_arrays(fetch_npz(url, first["id"]), fetch_npz(url, second["id"]))
    # queued jobs across a restart: the one whose sampler file is gone fails with one line, the other finishes
    shutil.copy(os.path.join(REPO, "models", "patchsampler_k8.onnx"), shipped)
    with server(tmp_path, "--models", models_dir, "--chunk-forwards", 1, env=env) as (url, proc):
        ids = [submit(url, photo, {**learned, "S": 1, "N": 8}), submit(url, photo, PARAMS)]
        proc.kill()
        proc.wait()
    (shipped / "patchsampler_k8.onnx").unlink()
    with server(tmp_path, "--models", models_dir, env=env) as (url, _):
        needs, other = (wait(url, i) for i in ids)
        assert needs["state"] == "failed" and "patchsampler_k8.onnx not found in" in needs["error"], needs
        assert len(needs["error"].splitlines()) == 1 and "Traceback" not in needs["error"]
        assert other["state"] == "done", other
        status, body, _ = call(f"{url}/v1/jobs", {"model": "toy", "image": b64(photo), "params": learned})
        assert status == 422 and body["field"] == "params.K" and "patchsampler_k8.onnx not found" in body["error"]
