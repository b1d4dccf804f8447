"""The in-distribution study of `infolens eval benchmark`: its offset grid, its score by construction, and the study
end to end on two labelled photos with tiny settings."""
import csv
import json
import os

import numpy as np
import pytest

from conftest import REPO, run_cli
from infolens.evaluate.indist import cell_sums, cells, spearman

EXAMPLES = os.path.join(REPO, "examples")
CLASSIFIER = os.path.join(REPO, "models", "efficientnet_lite0.onnx")


def test_the_grid_is_offset_from_every_window_and_inside_the_image():
    at = cells(224, 224, 24)
    assert len(at) == 64 and at[0] == (12, 12) and at[-1] == (180, 180)
    assert all(y % 8 and x % 8 for y, x in at)  # no K = 8, 16, 32 window starts where a cell does
    assert cells(40, 30, 24) == []


def test_a_map_that_is_the_drops_scores_one_and_its_reverse_minus_one():
    at = cells(96, 96, 24)
    drops = np.random.default_rng(0).random(len(at))
    m = np.zeros((96, 96))
    for d, (y, x) in zip(drops, at):
        m[y:y + 24, x:x + 24] = d
    m[:12] = 5.0  # outside the cells: not scored
    assert np.allclose(cell_sums(m, at, 24), drops * 576)
    assert spearman(cell_sums(m, at, 24), drops) == 1.0 and spearman(cell_sums(-m, at, 24), drops) == -1.0
    assert np.isnan(spearman(np.ones(len(at)), drops))


@pytest.mark.slow
def test_indist_study_end_to_end(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_index\ncoffee.png,967\nrocket.jpg,812\n")
    out = tmp_path / "bench"
    # the classifier as its own evaluator: the two scores of every map must then be the same
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, "--studies", "indist",
                "--evaluator", CLASSIFIER, "--indist-photos", "2", "--samplers", "mean", "--methods",
                "occlusion,random,edge", "--fills", "blur,mean,road", "-N", "1", "--smooth", "4", "--shrink", "no",
                "--scales", "", "-q")
    assert r.returncode == 0, r.stderr
    for name in ("coffee", "rocket"):
        rec = json.loads((out / "indist" / f"{name}.json").read_text())
        assert rec["cells"] == 64 and set(rec["drops"]["evaluator"]) == {"blur", "mean", "road"}
        assert rec["drops"]["evaluator"] == rec["drops"]["original"]
        maps = [(row["map"], row["sampler"]) for row in rec["rows"]]
        assert ("pmi", "mean") in maps and ("edge", "-") in maps and ("occlusion", "-~smooth") in maps
        for row in rec["rows"]:
            assert -1 <= row["rho_evaluator"] <= 1 and row["rho_evaluator"] == row["rho_original"]
        # the removal of a cell under the mean fill moves p(class) somewhere
        assert np.abs(rec["drops"]["evaluator"]["mean"]).max() > 1e-4
    with open(out / "indist.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 5 * 2  # PMI, IG, occlusion, random, edge, each smoothed too
    report = (out / "report.md").read_text()
    # the per-fill table's `mean` column is the mean fill's own ρ, not the drops averaged over the fills
    recs = [json.loads((out / "indist" / f"{n}.json").read_text()) for n in ("coffee", "rocket")]
    edge = [[row for row in r["rows"] if row["map"] == "edge"][0] for r in recs]
    cells_ = [f"{np.mean([e[f'rho_evaluator_{f}'] for e in edge]):.3f}" for f in ("blur", "mean", "road")]
    assert "| edge | - | " + " | ".join(f"{c} / {c}" for c in cells_) + " |" in report
    for text in ("## In-distribution single-cell removal", "Kendall τ", "How alike the fills' drops are",
                 "Smoothed copies and candidates"):
        assert text in report


def test_a_missing_evaluator_is_one_line(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_index\ncoffee.png,967\n")
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", tmp_path / "o", "--studies",
                "indist", "--evaluator", tmp_path / "none.onnx", "-q")
    assert r.returncode == 2 and "--evaluator" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
