"""The device's worker (DESIGN §10): one thread runs every job, a chunk of patch positions at a time, round-robin
across the active jobs, so a short job is not stuck behind a long one.  Each finished chunk is a shard file in the
job's folder (written atomically) and its forwards are recorded; the counter-based streams make the chunking
invisible in the maps (methods/marginalize.py: run/merge), and a job found again after a restart skips the
shards it already has.  Methods that are not patch marginalizations (RISE, MIP-IN) run as one chunk.

When the state folder cannot be written (full, read-only, failing), the job in hand fails with one line saying so
and the worker holds the queue — the other jobs stay as they are, each reporting why it waits — until a probe
finds the folder writable again (every PROBE_S) or the server restarts.
"""
from __future__ import annotations

import glob
import logging
import os
import sqlite3
import threading
import time
import traceback
import zipfile

import numpy as np

from .. import outfiles
from ..errors import InfolensError
from ..methods.marginalize import PatchMarginalization, Shard
from .jobs import JobStore

log = logging.getLogger("infolens.serve")
RESULT = "result"  # stem of a job's result files
PROBE_S = 5.0  # seconds between probes of a state folder that could not be written


class Worker(threading.Thread):
    """Runs the jobs of `store` on the models of `models`; chunk_forwards: about how many forwards a chunk runs
    before the next job gets its turn; retention_s: ended jobs older than this are deleted; metrics: a
    serve.metrics.Metrics or None."""

    def __init__(self, store: JobStore, models, chunk_forwards: int = 4096, retention_s: float = 7 * 86400,
                 metrics=None):
        super().__init__(name="infolens-worker", daemon=True)
        self.store, self.models, self.chunk_forwards = store, models, chunk_forwards
        self.retention_s, self.metrics = retention_s, metrics
        self.wake = threading.Condition()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.rate = 0.0  # forwards per second, smoothed over recent chunks (for ETAs)
        self._plans: dict[str, tuple] = {}  # job id → (method, plan, its shards so far), while the job is active
        self._last = ""  # id of the job served last (round-robin)
        self._expired_at = 0.0
        self.fault: str | None = None  # why the state folder cannot be written, while the queue is held
        self._in_hand = None  # the job whose chunk is running

    def submit(self) -> None:
        with self.wake:
            self.wake.notify()

    def stop(self) -> None:
        self.stopping.set()
        self.submit()

    def run(self) -> None:
        for name in self.models.names():  # ready = every model loaded and one forward run
            clf = self.models.classifier(name)
            clf.predict_images(np.zeros((1, *clf.pre.size, 3), np.uint8))
        self.ready.set()
        recovered = False
        while not self.stopping.is_set():
            try:
                if not recovered:
                    requeued, recovered = self.store.recover(), True
                    if requeued:
                        log.warning("restart: %d running job(s) queued again; their finished chunks are kept",
                                    requeued)
                self._turn()
            except (OSError, sqlite3.OperationalError) as e:
                job, self._in_hand = self._in_hand, None
                if self.store.fault_line(e) is not None:
                    self._hold(job, e)
                elif isinstance(e, sqlite3.OperationalError):
                    # the job database locked past SQLite's timeout (another process holds it): nothing is lost —
                    # the job's record and its finished chunks stay — so wait and take the turn again
                    log.warning("job database busy (%s); retrying", e)
                    self.stopping.wait(1.0)
                elif job is not None:
                    self._failed(job, e)  # the job's own file, not the state folder
                else:
                    log.error("worker: %s", traceback.format_exc())
                    self.stopping.wait(1.0)

    def _turn(self) -> None:
        """One chunk of the next job, or a wait for one; while the queue is held, a probe of the state folder.  An
        OSError or a database error goes to `run`, with the job in hand in `_in_hand`."""
        if self.fault is not None:
            return self._probe()
        self._expire()
        job = self._next()
        if job is None:
            with self.wake:
                self.wake.wait(timeout=1.0)
            return
        self._in_hand = job
        try:
            self._chunk(job)
        except InfolensError as e:
            self._end(job, "failed", str(e))
        except (OSError, sqlite3.OperationalError):
            raise
        except Exception as e:
            self._failed(job, e)
        self._in_hand = None

    def _failed(self, job, e: Exception) -> None:
        """A bug, not bad input: the job fails with the reason, the server goes on."""
        log.error("job %s failed:\n%s", job.id, traceback.format_exc())
        self._end(job, "failed", f"internal error: {type(e).__name__}: {e}")

    def _hold(self, job, e: Exception) -> None:
        """The state folder cannot be written: the job in hand (if any) fails with the line that says so — when the
        database can still record it — and the queue waits for `_probe`."""
        self.fault = self.store.fault_line(e)
        if self.metrics:
            self.metrics.held.set(1)
        log.error("%s; the queue waits until it can be written", self.fault)
        if job is not None:
            try:
                self._end(job, "failed", self.fault)
            except sqlite3.Error:
                self._plans.pop(job.id, None)  # not recorded: the job stays active and goes on after the fault

    def _probe(self) -> None:
        try:
            self.store.probe()
        except (OSError, sqlite3.Error):  # whatever the reason, the folder cannot be written yet
            self.stopping.wait(PROBE_S)
            return
        log.warning("the state folder %s can be written again; the queue goes on", self.store.state_dir)
        self.fault = None
        if self.metrics:
            self.metrics.held.set(0)

    def eta(self, job) -> float | None:
        """Seconds until `job` is done at the current rate, sharing the device round-robin with the active jobs."""
        if not self.rate or job.state not in ("queued", "running"):
            return None
        return (job.forwards_total - job.forwards_done) / self.rate * max(1, len(self.store.active()))

    def _next(self):
        active = self.store.active()
        if not active:
            return None
        ids = [j.id for j in active]
        # round-robin in creation order: the job after the one served last, else the oldest
        job = active[(ids.index(self._last) + 1) % len(ids) if self._last in ids else 0]
        self._last = job.id
        return job

    def _chunk(self, job) -> None:
        folder = self.store.folder(job.id)
        if job.state == "queued":
            self.store.start(job.id)
            if self.metrics:
                self.metrics.waited(time.time() - job.created)
        p, image = job.params, os.path.join(folder, job.image_name)
        if job.id not in self._plans:
            method = self.models.method(job.model, p)
            if not isinstance(method, PatchMarginalization):  # RISE, MIP-IN: one chunk, the whole explanation
                t0, rows = time.perf_counter(), method.classifier.rows_run
                e = method.explain(image, p["classes"], p["stride"], p["samples"], p["seed"])
                self._account(rows, t0, method)
                return self._done(job, e)
            self._plans[job.id] = (method, method.plan(image, p["classes"], p["stride"], p["samples"], p["seed"]),
                                   _shards(folder))
        method, plan, shards = self._plans[job.id]
        t0, rows = time.perf_counter(), method.classifier.rows_run
        have = np.concatenate([s.positions for s in shards]) if shards else np.empty(0, np.int64)
        todo = np.setdiff1d(np.arange(method.positions(plan.img, plan.stride)), have)
        if todo.size:
            n = plan.samples if not method.sampler.deterministic else 1
            shard = method.run(plan, todo[:max(1, self.chunk_forwards // n)])
            # named by its first position: unique, whatever shards came before or were dropped
            outfiles.write_atomic(os.path.join(folder, f"shard_{int(todo[0]):07d}.npz"), shard.save)
            shards.append(shard)
            self._account(rows, t0, method)
            todo = todo[len(shard.positions):]
        done = plan.forwards + sum(s.forwards for s in shards)
        if self.store.get(job.id).state != "running":  # cancelled while the chunk ran
            self._plans.pop(job.id, None)
            return
        self.store.progress(job.id, done)
        if not todo.size:
            self._done(job, method.merge(plan, shards))

    def _account(self, rows: int, t0: float, method) -> None:
        forwards, seconds = method.classifier.rows_run - rows, time.perf_counter() - t0
        if seconds > 0:
            self.rate = forwards / seconds if not self.rate else 0.7 * self.rate + 0.3 * forwards / seconds
        if self.metrics:
            self.metrics.forwards.inc(forwards)

    def _done(self, job, e) -> None:
        e.save(self.store.folder(job.id), stem=RESULT, overwrite=True)
        self._end(job, "done", forwards=e.forwards)

    def _end(self, job, state: str, error: str | None = None, forwards: int | None = None) -> None:
        self._plans.pop(job.id, None)
        if self.store.finish(job.id, state, error, forwards) and self.metrics:
            job = self.store.get(job.id)
            if job.started:
                self.metrics.ran(job.finished - job.started)

    def _expire(self) -> None:
        if time.time() - self._expired_at > 60:
            self._expired_at = time.time()
            for job_id in self.store.expire(self.retention_s):
                self._plans.pop(job_id, None)


def _shards(folder: str) -> list[Shard]:
    """The job's finished chunks; one that cannot be read (cut short by a disk error before shards were synced) is
    removed and its positions run again."""
    shards = []
    for path in sorted(glob.glob(os.path.join(folder, "shard_*.npz"))):
        try:
            shards.append(Shard.load(path))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.warning("%s cannot be read (%s): its positions run again", path, e)
            os.unlink(path)
    return shards
