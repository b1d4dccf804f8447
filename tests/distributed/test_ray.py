"""`infolens explain --ray` on a local Ray cluster of this machine's cores (2 in CI): a folder spread over actors,
and one image split by patch positions across actors and merged — both byte-for-byte the arrays of a
single-process run."""
import re

import cv2
import numpy as np
import pytest

import onnx_builders
from conftest import run_cli, scene, write_card

pytest.importorskip("ray", reason="the ray extra is not installed")


def arrays(folder, stem):
    with np.load(folder / f"{stem}.npz") as z:
        return {k: z[k] for k in z.files}


def same(a, b):
    return sorted(a) == sorted(b) and all(a[k].tobytes() == b[k].tobytes() and a[k].dtype == b[k].dtype for k in a)


@pytest.fixture
def setup(tmp_path):
    model = onnx_builders.classifier(tmp_path / "toy.onnx", H=24, W=24, n_classes=6)
    write_card(model, "NCHW", "RGB", "float32")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), scene(24, 24, seed=i)[:, :, ::-1])
    return model, photos


FLAGS = ["-K", "4", "-S", "2", "-N", "3", "--sampler", "noise", "--classes", "top2", "--seed", "3"]


@pytest.mark.slow
def test_a_folder_and_a_split_image_on_ray_equal_one_process(tmp_path, setup):
    model, photos = setup
    r = run_cli("explain", photos, "--model", model, "--out", tmp_path / "plain", "-q", *FLAGS)
    assert r.returncode == 0, r.stderr
    r = run_cli("explain", "--ray", photos, "--model", model, "--out", tmp_path / "ray", *FLAGS)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("forwards in") == 3
    for i in range(3):
        assert same(arrays(tmp_path / "ray", f"p{i}"), arrays(tmp_path / "plain", f"p{i}"))
    r = run_cli("explain", "--ray", "local", photos / "p1.png", "--model", model, "--out", tmp_path / "split", *FLAGS)
    assert r.returncode == 0, r.stderr
    assert same(arrays(tmp_path / "split", "p1"), arrays(tmp_path / "plain", "p1"))
    shards = int(re.search(r"121 patch positions split into (\d+) shards", r.stderr).group(1))
    # 121 positions × 3 + p(Y|x), as in one process, + the p(Y|x) each shard runs: every forward run is counted
    assert f"{364 + shards} forwards" in r.stdout and shards >= 1


def test_splitting_needs_a_patch_method(tmp_path, setup):
    from infolens import Explainer, OnnxClassifier
    from infolens.errors import InfolensError

    model, photos = setup
    ex = Explainer(OnnxClassifier.from_card(model))
    with pytest.raises(InfolensError) as e:
        ex.positions(str(photos / "p0.png"), method="rise")
    assert e.value.param == "method"


def _open_classifier(model):
    from infolens import OnnxClassifier

    return OnnxClassifier.from_card(model)


def _threads_of(clf, item):
    return {"name": item["name"], "threads": clf.session.get_session_options().intra_op_num_threads}


@pytest.mark.slow
def test_an_actor_on_one_cpu_runs_its_sessions_on_one_thread(setup):
    """Each CPU actor holds one CPU slot, so its ONNX Runtime sessions use one intra-op thread (ONNX Runtime's
    default, one per core in every actor, oversubscribes the cores); this process keeps the default."""
    import functools
    import sys

    from ray import cloudpickle

    from infolens.distributed import ray as engine

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    model, _ = setup
    rows = engine.map_items([{"name": f"i{i}"} for i in range(3)], functools.partial(_open_classifier, model),
                            _threads_of, "local")
    assert sorted(r["name"] for r in rows) == ["i0", "i1", "i2"] and {r["threads"] for r in rows} == {1}
    assert _open_classifier(model).session.get_session_options().intra_op_num_threads == 0
