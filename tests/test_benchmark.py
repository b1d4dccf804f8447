"""`infolens eval benchmark` end to end on 3 labelled photos with tiny settings: accuracy, every map scored for the
predicted and the true class under the fill, paired Wilcoxon tests against PMI/PatchSampler, the report, and a
resume that computes nothing again."""
import csv
import json
import os

import pytest

from conftest import run_cli

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
FLAGS = ["--samplers", "patchsampler,mean", "--methods", "occlusion,mipin,random", "--fills", "blur", "-K", "16",
         "-N", "1", "--steps", "4", "-q"]


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.csv"
    # chelsea's label is tabby (281), which the classifier ranks third: pred and true differ there
    path.write_text("file,class_index,name\nchelsea.png,281,tabby\ncoffee.png,967,espresso\n"
                    "rocket.jpg,812,space shuttle\n")
    return path


def test_benchmark_end_to_end_and_resume(tmp_path, labels):
    out = tmp_path / "bench"
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS)
    assert r.returncode == 0, r.stderr
    assert "3 photos: top-1" in r.stdout
    records = {p: json.loads((out / "images" / p).read_text()) for p in os.listdir(out / "images")}
    assert sorted(records) == ["chelsea.json", "coffee.json", "rocket.json"]
    chelsea = records["chelsea.json"]
    assert chelsea["top5"][0] != 281 and 281 in chelsea["top5"] and not chelsea["top1_correct"]
    groups = {(r["map"], r["sampler"], r["target"]) for r in chelsea["rows"]}
    assert len(groups) == 7 * 2  # pmi, ig × 2 samplers, occlusion, mipin, random; pred and true
    for row in chelsea["rows"]:
        assert 0 <= row["deletion_auc"] <= 1 and 0 <= row["insertion_auc"] <= 1
    pmi = {r["target"]: r for r in chelsea["rows"] if r["map"] == "pmi" and r["sampler"] == "patchsampler"}
    assert pmi["pred"]["class"] != pmi["true"]["class"] and pmi["pred"]["deletion_auc"] != pmi["true"]["deletion_auc"]
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == sum(len(r["rows"]) for r in records.values())
    report = (out / "report.md").read_text()
    assert "top-1 33.3 %" in report and "## Fill blur, class true" in report and "Wilcoxon" in report
    assert (out / "auc_blur_pred.png").stat().st_size > 1000
    stamps = {p: os.stat(out / "images" / p).st_mtime_ns for p in records}
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS, "--report",
                tmp_path / "docs")
    assert r.returncode == 0 and {p: os.stat(out / "images" / p).st_mtime_ns for p in records} == stamps
    assert (tmp_path / "docs" / "report.md").read_text().split("\n")[4:] == report.split("\n")[4:]
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, *FLAGS[:-3], "--steps", "8", "-q")
    assert r.returncode == 2 and "other settings (steps)" in r.stderr


def test_bad_labels_are_one_line(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("file,class_index\nmissing.png,3\n")
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "missing.png" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", tmp_path / "none.csv", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--labels" in r.stderr
