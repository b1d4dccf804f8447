"""Saved explanations that move to another folder or machine: the schema version, the models' sha256, and
`infolens eval` finding the models again (recorded path, beside the explanation, shipped, or --model)."""
import hashlib
import json
import shutil

import onnx
import pytest

import onnx_builders
from conftest import run_cli

SMALL = ["-K", "4", "-S", "4", "-N", "2", "--quiet"]
EVAL = ["--fill", "patchsampler", "--steps", "5"]


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _auc(tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    r = run_cli("eval", "deletion", *args, "--json", out)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


@pytest.fixture
def moved(tmp_path, image_file, model_file):
    """An explanation made in folder a/ with its own classifier and PatchSampler, its AUC there, and then a/ gone:
    the explanation and both models copied into b/ (the models beside the explanation)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for suffix in (".onnx", ".json"):
        shutil.copy(model_file[:-5] + suffix, a / f"clf{suffix}")
    onnx_builders.patch_sampler(a / "ps.onnx", 4)
    r = run_cli("explain", image_file, "--model", a / "clf.onnx", "--sampler-model", a / "ps.onnx", "--out", a,
                *SMALL)
    assert r.returncode == 0, r.stderr
    meta = json.loads((a / "scene.json").read_text())
    before = _auc(tmp_path, "before", a / "scene.npz", *EVAL)
    for name in ("scene.npz", "scene.json", "clf.onnx", "clf.json", "ps.onnx"):
        shutil.copy(a / name, b / name)
    shutil.rmtree(a)
    return b, meta, before


@pytest.mark.slow
def test_explanation_records_schema_version_and_sha256(moved):
    b, meta, _ = moved
    assert meta["schema_version"] == 2
    assert meta["model"]["sha256"] == _sha(b / "clf.onnx") and meta["model"]["model"].endswith("clf.onnx")
    assert meta["params"]["sampler_sha256"] == _sha(b / "ps.onnx")


@pytest.mark.slow
def test_eval_finds_the_models_beside_the_moved_explanation(moved, tmp_path):
    b, _, before = moved
    after = _auc(tmp_path, "after", b / "scene.npz", *EVAL)
    assert after["curve"] == before["curve"] and after["auc"] == before["auc"]


@pytest.mark.slow
def test_eval_refuses_a_different_file_under_the_same_name_and_takes_model(moved, tmp_path):
    b, _, before = moved
    shutil.move(b / "clf.onnx", tmp_path / "renamed.onnx")
    proto = onnx.load(tmp_path / "renamed.onnx")
    proto.doc_string = "re-saved: the same function, other bytes"
    onnx.save(proto, b / "clf.onnx")
    r = run_cli("eval", "deletion", b / "scene.npz", *EVAL)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "sha256" in r.stderr and "--model" in r.stderr
    given = _auc(tmp_path, "given", b / "scene.npz", *EVAL, "--model", tmp_path / "renamed.onnx")
    assert given["curve"] == before["curve"]
    (b / "ps.onnx").unlink()
    r = run_cli("eval", "deletion", b / "scene.npz", *EVAL, "--model", tmp_path / "renamed.onnx")
    assert r.returncode == 2 and "PatchSampler ps.onnx" in r.stderr and "--sampler-model" in r.stderr


@pytest.mark.slow
def test_eval_finds_a_shipped_model_by_sha256(tmp_path, image_file):
    r = run_cli("explain", image_file, "--out", tmp_path, "--sampler", "noise", "-K", "16", "-S", "16", "-N", "1",
                "--quiet")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "scene.json"
    meta = json.loads(path.read_text())
    before = _auc(tmp_path, "shipped", tmp_path / "scene.npz", "--steps", "4")
    meta["model"]["model"] = "/another/machine/models/efficientnet_lite0.onnx"
    path.write_text(json.dumps(meta))
    assert _auc(tmp_path, "found", tmp_path / "scene.npz", "--steps", "4")["curve"] == before["curve"]
    meta["model"]["sha256"] = "0" * 64
    path.write_text(json.dumps(meta))
    r = run_cli("eval", "deletion", tmp_path / "scene.npz", "--steps", "4")
    assert r.returncode == 2 and "efficientnet_lite0.onnx with sha256 000000000000" in r.stderr


@pytest.mark.slow
def test_newer_schema_and_old_explanations(moved):
    b, _, _ = moved
    path = b / "scene.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "schema_version": 99}))
    r = run_cli("eval", "deletion", b / "scene.npz", "--steps", "4")
    assert r.returncode == 2 and "schema version 99" in r.stderr and "Traceback" not in r.stderr
    # schema 1 (no version, no sha256): only the recorded path counts, so a moved one names --model
    old = {k: v for k, v in meta.items() if k != "schema_version"}
    del old["model"]["sha256"]
    path.write_text(json.dumps(old))
    r = run_cli("eval", "deletion", b / "scene.npz", "--steps", "4")
    assert r.returncode == 2 and "records no sha256" in r.stderr and "--model" in r.stderr
    r = run_cli("eval", "deletion", b / "scene.npz", "--steps", "4", "--model", b / "clf.onnx")
    assert r.returncode == 0, r.stderr


def test_the_record_names_the_bytes_loaded_not_a_file_replaced_since(tmp_path, image_file, model_file):
    """A long-lived process (the server) keeps its sessions: the sha256 it records is the loaded file's, even after
    the file is replaced or deleted (it was read again at every record, so a deleted sampler failed every job)."""
    from infolens import Explainer, OnnxClassifier
    from infolens.samplers import load_sampler

    (tmp_path / "m").mkdir()
    clf_path, ps_path = tmp_path / "m" / "clf.onnx", tmp_path / "m" / "ps.onnx"
    shutil.copy(model_file, clf_path)
    shutil.copy(model_file[:-5] + ".json", tmp_path / "m" / "clf.json")
    onnx_builders.patch_sampler(ps_path, 4)
    loaded = _sha(clf_path), _sha(ps_path)
    explainer = Explainer(OnnxClassifier.from_card(str(clf_path)), load_sampler("patchsampler", 4, str(ps_path)))
    clf_path.write_bytes(b"another model")
    ps_path.unlink()
    explainer.explain(image_file, stride=4, samples=2).save(str(tmp_path / "out"), "x")
    meta = json.loads((tmp_path / "out" / "x.json").read_text())
    assert (meta["model"]["sha256"], meta["params"]["sampler_sha256"]) == loaded
