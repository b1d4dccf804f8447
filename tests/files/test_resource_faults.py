"""The output folder fills up mid-run (a small tmpfs) or turns read-only mid-run (an ext4 loop device after a disk
error): each image that cannot be written is one line naming it and --out, the other images go on, exit 2, and what
was written before is intact (a JSON on disk means its npz is complete; no temporary file is left; a result written
again on the full disk keeps its earlier files whole); the same command once the folder is writable again finishes
them all.  Mounting needs the privilege to; without it the tests skip and say so."""
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import scene


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 24 KiB at tmp_path/disk (room for two small results), unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the output-folder faults need it")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def images(tmp_path, n):
    paths = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), scene(seed=i))
        paths.append(str(p))
    return paths


def explain(paths, model_file, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "infolens", "explain", *paths, "--model", model_file,
                             "--resize", "stretch", "--sampler", "noise", "-K", "4", "-S", "2", "--out", str(out),
                             "-q", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_written(out):
    """Every JSON on disk loads and its npz is complete; no temporary file is left."""
    done = [f for f in os.listdir(out) if f.endswith(".json")]
    for f in done:
        with open(os.path.join(out, f)) as fh:
            json.load(fh)
        with np.load(os.path.join(out, f[:-5] + ".npz")) as z:
            assert all(z[k].size for k in z.files)
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")], os.listdir(out)
    return done


@pytest.mark.slow
def test_a_full_output_folder_is_one_line_per_image_and_the_rest_go_on(tmp_path, model_file, small_disk):
    paths = images(tmp_path, 8)
    proc = explain(paths, model_file, small_disk, "-N", "2", "--no-png")
    _, err = proc.communicate(timeout=300)
    lines = err.splitlines()
    done = check_written(small_disk)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert 0 < len(done) < len(paths), (done, err)  # some fit, then the disk is full
    assert len(lines) == len(paths) - len(done), err
    for line in lines:
        assert line.startswith("infolens: error: ") and line.endswith(
            f"cannot write the results into {small_disk}: No space left on device (--out)"), line
    # writing them again on the full disk fails before any file is touched: the earlier results stay whole
    before = {f: (small_disk / f).read_bytes() for f in os.listdir(small_disk)}
    proc = explain(paths, model_file, small_disk, "-N", "3", "--no-png")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert {f: (small_disk / f).read_bytes() for f in os.listdir(small_disk)} == before


@pytest.mark.slow
def test_an_output_folder_that_turns_read_only_mid_run_is_one_line_per_image_and_a_rerun_finishes(
        tmp_path, model_file, loop_disk):
    paths = images(tmp_path, 8)
    out = loop_disk.where / "out"
    out.mkdir()
    proc = explain(paths, model_file, out, "-S", "1", "-N", "16", "--no-png")
    while proc.poll() is None and not any(f.endswith(".json") for f in os.listdir(out)):
        time.sleep(0.01)
    loop_disk.break_()  # ext4 after a disk error: read-only at once, the result lock's open file included
    _, err = proc.communicate(timeout=300)
    done = check_written(out)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert 0 < len(done) < len(paths), (done, err)
    lines = err.splitlines()
    for line in lines:
        assert line.startswith("infolens: error: ") and (
            line.endswith(f"cannot write the results into {out}: Read-only file system (--out)")
            or line.endswith(f"cannot write the results into {out}: Input/output error (--out)")), line
    # Every image is written or reported. The one being written when the disk failed may be both: its files were
    # synced and renamed, then syncing the folder failed, so it is reported (its entry may not survive a crash).
    reported = {line.split(": ")[2] for line in lines}
    written = {os.path.join(os.path.dirname(paths[0]), f.replace(".json", ".png")) for f in done}
    assert reported | written == set(paths) and len(reported & written) <= 1, (done, err)
    earlier = {f: np.load(out / f.replace(".json", ".npz"))["pmi"] for f in done}
    loop_disk.repair()
    proc = explain(paths, model_file, out, "-S", "1", "-N", "16", "--no-png")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert len(check_written(out)) == len(paths)
    for f, pmi in earlier.items():  # written again, to the same maps
        assert np.array_equal(np.load(out / f.replace(".json", ".npz"))["pmi"], pmi)
