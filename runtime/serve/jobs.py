"""Job records of the server (DESIGN §10): one SQLite database in WAL mode under the state folder, and per job a
folder holding its input image, its finished shards (one .npz per chunk of positions, written atomically) and,
when done, its result files.  A job is never lost: a killed server finds its queued and running jobs here on
restart, with the shards they had finished, and completes them with the same maps; commits and files are synced, so
the same holds after a power cut or a disk error.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass

from ..errors import InfolensError
from ..outfiles import sync_folder, write_atomic

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    model TEXT NOT NULL,
    params TEXT NOT NULL,
    image_name TEXT NOT NULL,
    forwards_total INTEGER NOT NULL,
    forwards_done INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    sync INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL);
"""
# the state folder's storage failing (full, read-only, a failing disk), as against a job's own fault
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
PROBE_FREE = 1 << 20  # bytes free before jobs resume after a full state folder: room for a few chunks and a result


@dataclass
class Job:
    """One job's record: params is the request's "params" object as validated (the Python API's names)."""

    id: str
    state: str
    model: str
    params: dict
    image_name: str
    forwards_total: int
    forwards_done: int
    error: str | None
    created: float
    started: float | None
    finished: float | None
    sync: bool

    def public(self) -> dict:
        """The job as GET /v1/jobs/{id} shows it."""
        return {"id": self.id, "state": self.state, "model": self.model, "params": self.params,
                "forwards_done": self.forwards_done, "forwards_total": self.forwards_total, "error": self.error,
                "created": self.created, "started": self.started, "finished": self.finished}


class JobStore:
    """The jobs table and the job folders under `state_dir` (created).  Thread-safe: one connection per thread,
    and SQLite's own locking between them and between processes."""

    def __init__(self, state_dir: str):
        self.state_dir = os.path.abspath(state_dir)
        self.jobs_dir = os.path.join(self.state_dir, "jobs")
        self.path = os.path.join(self.state_dir, "jobs.sqlite")
        self._local = threading.local()
        try:
            os.makedirs(self.jobs_dir, exist_ok=True)
            self._db().executescript(_SCHEMA)
        except (OSError, sqlite3.OperationalError) as e:
            raise InfolensError(self.fault_line(e) or f"cannot open the job database {self.path}: {e}",
                                "state_dir") from None

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is synced at every commit, so a 202 or a finished chunk survives a power cut or a disk
            # error, not only a killed process (NORMAL's guarantee); one fsync per submission and per chunk
            db.execute("PRAGMA synchronous=FULL")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    def fault_line(self, exc: BaseException) -> str | None:
        """The one line for `exc` when it is the state folder's storage failing (full, read-only, an I/O error),
        naming --state-dir; None for anything else (a busy database, a job's own problem)."""
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            reason = exc.strerror
        elif isinstance(exc, sqlite3.OperationalError) and not _busy(exc):
            reason = str(exc)
        else:
            return None
        return f"cannot write into the state folder {self.state_dir}: {reason} (--state-dir)"

    def probe(self) -> None:
        """Raises what writing into the state folder raises now: a file in the jobs folder, synced and removed
        (with PROBE_FREE bytes free), and a row in the database."""
        st = os.statvfs(self.jobs_dir)
        if st.f_bavail * st.f_frsize < PROBE_FREE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        path = os.path.join(self.jobs_dir, ".probe")
        with open(path, "wb") as f:
            f.write(b"probe")
            f.flush()
            os.fsync(f.fileno())
        os.unlink(path)
        self._db().execute("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (time.time(),))

    def folder(self, job_id: str) -> str:
        return os.path.join(self.jobs_dir, job_id)

    def create(self, model: str, params: dict, image: bytes, image_name: str, forwards_total: int,
               sync: bool = False) -> Job:
        """A queued job: its image is written to its folder first, then its record commits; when either fails the
        folder goes again."""
        job_id = uuid.uuid4().hex
        folder = self.folder(job_id)
        name = "input" + os.path.splitext(image_name)[1].lower()
        try:
            os.makedirs(folder)
            write_atomic(os.path.join(folder, name), lambda f: f.write(image))
            sync_folder(self.jobs_dir)
            self._db().execute(
                "INSERT INTO jobs (id, state, model, params, image_name, forwards_total, created, sync) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, model, json.dumps(params), name, forwards_total, time.time(), int(sync)))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def active(self) -> list[Job]:
        """Queued and running jobs, oldest first."""
        rows = self._db().execute("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY created")
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}

    def start(self, job_id: str) -> None:
        self._db().execute("UPDATE jobs SET state = 'running', started = COALESCE(started, ?) "
                           "WHERE id = ? AND state = 'queued'", (time.time(), job_id))

    def progress(self, job_id: str, forwards_done: int) -> None:
        self._db().execute("UPDATE jobs SET forwards_done = ? WHERE id = ?", (forwards_done, job_id))

    def finish(self, job_id: str, state: str, error: str | None = None, forwards_done: int | None = None) -> bool:
        """Ends an active job (done, failed or cancelled); False when it had already ended (e.g. cancelled while its
        last chunk ran)."""
        cur = self._db().execute(
            "UPDATE jobs SET state = ?, error = ?, finished = ?, forwards_done = COALESCE(?, forwards_done) "
            "WHERE id = ? AND state IN ('queued', 'running')", (state, error, time.time(), forwards_done, job_id))
        return cur.rowcount == 1

    def cancel(self, job_id: str) -> bool:
        return self.finish(job_id, "cancelled")

    def recover(self) -> int:
        """After a restart: running jobs are queued again (their finished shards stay); returns how many."""
        return self._db().execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'").rowcount

    def expire(self, older_than_s: float) -> list[str]:
        """Deletes ended jobs (record and folder) that finished more than `older_than_s` ago; their ids."""
        cutoff = time.time() - older_than_s
        rows = self._db().execute("SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') "
                                  "AND finished < ?", (cutoff,)).fetchall()
        for (job_id,) in rows:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
            self._db().execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return [r[0] for r in rows]


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether `exc` is the database locked by another connection past the timeout (SQLITE_BUSY, SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _job(row: sqlite3.Row) -> Job:
    return Job(id=row["id"], state=row["state"], model=row["model"], params=json.loads(row["params"]),
               image_name=row["image_name"], forwards_total=row["forwards_total"],
               forwards_done=row["forwards_done"], error=row["error"], created=row["created"], started=row["started"],
               finished=row["finished"], sync=bool(row["sync"]))
