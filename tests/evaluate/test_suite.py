"""`infolens eval suite`: the benchmark's removal study on unlabelled images of one's own — records, report, resume,
and bad input."""
import csv
import json
import os

import cv2
import pytest

from conftest import run_cli, scene

FLAGS = ["--samplers", "gray,noise", "--methods", "occlusion,rise,random", "--rise-masks", "20", "-K", "4", "-S", "4",
         "-N", "2", "--steps", "4", "--fills", "blur,black", "-q"]


def _images(folder, seeds):
    os.makedirs(folder, exist_ok=True)
    out = []
    for seed in seeds:
        p = folder / f"img{seed}.png"
        cv2.imwrite(str(p), scene(seed=seed)[:, :, ::-1])
        out.append(p)
    return out


@pytest.mark.slow
def test_suite_scores_unlabelled_images_and_resumes(tmp_path, model_file):
    images = _images(tmp_path / "a", (0, 1))
    out = tmp_path / "report"
    r = run_cli("eval", "suite", *images, "--model", model_file, "--out", out, *FLAGS)
    assert r.returncode == 0, r.stderr
    assert "top-1" not in r.stdout and "report.md" in r.stdout  # no labels, no accuracy
    rec = json.loads((out / "removal" / "img0.json").read_text())
    assert rec["true_class"] is None and rec["top1_correct"] is None
    assert {(x["map"], x["sampler"]) for x in rec["rows"]} == {("pmi", "gray"), ("ig", "gray"), ("pmi", "noise"),
                                                              ("ig", "noise"), ("occlusion", "-"), ("rise", "-"),
                                                              ("random", "-")}
    assert {x["target"] for x in rec["rows"]} == {"pred"} and {x["class"] for x in rec["rows"]} == {rec["top5"][0]}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 2 * 7 * 2
    report = (out / "report.md").read_text()
    assert "#### Fill blur" in report and "#### SRG averaged over the 2 fills" in report and "Kendall τ" in report
    assert "| pmi | noise |" in report and "Photos:" not in report

    # the same command with one more image measures only that one; other settings are refused
    stamps = {p: os.stat(p).st_mtime_ns for p in (out / "removal").glob("*.json")}
    more = images + _images(tmp_path / "a", (2,))
    r = run_cli("eval", "suite", *more, "--model", model_file, "--out", out, *FLAGS)
    assert r.returncode == 0, r.stderr
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps and (out / "removal" / "img2.json").exists()
    r = run_cli("eval", "suite", *more, "--model", model_file, "--out", out, *FLAGS[:-3], "--fills", "blur", "-q")
    assert r.returncode == 2 and "other settings (fills)" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_suite_keeps_going_past_a_bad_image_and_names_same_stems_apart(tmp_path, model_file):
    a, b = _images(tmp_path / "a", (0,)), _images(tmp_path / "b", (0,))  # both img0.png
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    out = tmp_path / "report"
    r = run_cli("eval", "suite", *a, broken, *b, "--model", model_file, "--out", out, *FLAGS)
    assert r.returncode == 2 and "broken.png" in r.stderr and "Traceback" not in r.stderr
    names = sorted(p.name for p in (out / "removal").glob("img0*.json"))
    assert len(names) == 2 and (out / "report.md").exists()  # the good images finished


@pytest.mark.slow
def test_suite_bad_input_is_one_line(tmp_path, image_file, model_file):
    for extra, word in ((["--samplers", "magic"], "magic"), (["--samplers", "patchsampler=missing.onnx"], "missing.onnx"),
                        (["--targets", "pred,true"], "--targets"), (["--fills", "fog"], "fog")):
        r = run_cli("eval", "suite", image_file, "--model", model_file, "--out", tmp_path / "o", *extra)
        assert r.returncode == 2 and "Traceback" not in r.stderr and word in r.stderr, (extra, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
