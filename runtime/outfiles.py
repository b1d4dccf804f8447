"""Where results go: the output folder checked before any computation, one lock per result so two runs never
write the same files at once, and atomic writes (a temporary file renamed into place), so a file is either the old
one or the complete new one."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile

from .errors import InfolensError

MARKER = "infolens_explanation"  # written into every JSON so a rerun knows which files it may replace
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the process's umask, which temporary files (created 0600) must end up honouring


def prepare_dir(out_dir: str) -> str:
    """Create `out_dir` if needed and prove a file can be written there; a one-line error naming `out` otherwise."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InfolensError(f"output folder {out_dir} is a file, not a folder", "out")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".infolens-probe-"):
            pass
    except OSError as e:
        raise InfolensError(f"cannot write into output folder {out_dir}: {e.strerror or e}", "out") from None
    return out_dir


def result_pattern(stem: str, map_names) -> re.Pattern:
    """File names a result `stem` may have: <stem>.npz, <stem>.json, <stem>_<map>.png, <stem>_<map>_<class>.png."""
    return re.compile(rf"{re.escape(stem)}(\.npz|\.json|_({'|'.join(map_names)})(_\d+)?\.png)")


def result_files(out_dir: str, stem: str, map_names) -> list[str]:
    """Existing files in `out_dir` that a result `stem` with maps `map_names` writes."""
    pattern = result_pattern(stem, map_names)
    try:
        names = os.listdir(out_dir)
    except OSError:
        return []
    return sorted(os.path.join(out_dir, n) for n in names if pattern.fullmatch(n))


def written_by_infolens(json_path: str) -> bool:
    try:
        with open(json_path) as f:
            return MARKER in json.load(f)
    except (OSError, ValueError):
        return False


def check_replaceable(out_dir: str, stem: str, overwrite: bool, map_names) -> None:
    """Existing result files of `stem` may be replaced only when an earlier infolens explanation wrote them (its JSON
    carries the marker) or `overwrite` is set; else a one-line error naming `overwrite`."""
    if overwrite or written_by_infolens(os.path.join(out_dir, f"{stem}.json")):
        return
    taken = result_files(out_dir, stem, map_names)
    if taken:
        raise InfolensError(f"{taken[0]} exists and was not written by infolens (overwrite to replace it)",
                            "overwrite")


@contextlib.contextmanager
def result_lock(out_dir: str, stem: str):
    """Hold the lock of result `stem` in `out_dir` while computing and writing it.  Another run holding it makes
    this one refuse (InfolensError naming `out` and the other run's process id) instead of both writing the same
    files; the lock dies with its process, so a crashed run never blocks the next."""
    path = os.path.join(out_dir, f".{stem}.infolens-lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise InfolensError(f"{os.path.join(out_dir, stem)}.* is being written by another infolens run "
                                f"({_holder(path)}); wait for it or choose another output folder", "out") from None
        # the holder before us may have removed the file after we opened it: then lock the new one
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            pid = f.read().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def write_atomic(path: str, write) -> None:
    """Call write(file object, binary) on a temporary file beside `path`, then rename it to `path`."""
    write_all_atomic([(path, write)])


def write_all_atomic(files: list[tuple[str, object]]) -> None:
    """write(file object, binary) for each (path, write), all on temporary files first, then renamed into place in
    order: when any write fails (a full disk, a read-only folder) no file is touched — the temporary files go and
    an earlier result under the same names stays whole.  Each file is synced before its rename and the folders
    after, so that a disk error or a power cut leaves the old file or the whole new one, never an empty one."""
    temps = []
    try:
        for path, write in files:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.",
                                       suffix=".tmp")
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
        for (path, _), tmp in zip(files, temps):
            os.replace(tmp, path)
        for folder in {os.path.dirname(path) or "." for path, _ in files}:
            sync_folder(folder)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def sync_folder(folder: str) -> None:
    """Make the names created or renamed in `folder` durable (fsync of the directory)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str, record) -> None:
    """`record` as indented JSON at `path`, atomically."""
    write_atomic(path, lambda f: f.write(json.dumps(record, indent=1).encode()))


def save_figure(fig, path: str) -> None:
    """A matplotlib figure as PNG at `path`, atomically."""
    write_atomic(path, lambda f: fig.savefig(f, format="png"))
