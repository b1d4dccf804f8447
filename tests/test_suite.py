"""`infolens eval suite` end to end on a small model: one CSV row per image × map × sampler, summary and plots."""
import csv

import cv2
import pytest

from conftest import run_cli, scene


def test_suite_writes_rows_summary_and_plots(tmp_path, model_file):
    images = []
    for seed in (0, 1):
        p = tmp_path / f"img{seed}.png"
        cv2.imwrite(str(p), scene(seed=seed)[:, :, ::-1])
        images.append(p)
    out = tmp_path / "report"
    r = run_cli("eval", "suite", *images, "--model", model_file, "--out", out, "--samplers", "gray,noise",
                "--methods", "occlusion,rise", "-K", "4", "-S", "4", "-N", "2", "--rise-masks", "20", "--steps", "10",
                "-q")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "suite.csv")))
    assert len(rows) == 2 * (2 * 2 + 2)
    assert {(x["map"], x["sampler"]) for x in rows} == {("pmi", "gray"), ("ig", "gray"), ("pmi", "noise"),
                                                       ("ig", "noise"), ("occlusion", "gray"), ("rise", "-")}
    for x in rows:
        assert 0 <= float(x["deletion_auc"]) <= 1 and 0 <= float(x["insertion_auc"]) <= 1
        assert int(x["explain_forwards"]) > 1 and int(x["eval_forwards"]) == 22 and float(x["explain_seconds"]) > 0
    summary = (out / "summary.md").read_text()
    assert "| pmi | noise |" in summary and "| rise | - |" in summary and "Total:" in summary
    for png in ("deletion_auc.png", "deletion_curves.png", "example_maps.png"):
        assert cv2.imread(str(out / png)) is not None


def test_suite_rejects_unknown_sampler(tmp_path, image_file, model_file):
    r = run_cli("eval", "suite", image_file, "--model", model_file, "--out", tmp_path, "--samplers", "magic")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "magic" in r.stderr


def test_suite_resumes_compares_pairs_and_takes_model_files(tmp_path, model_file):
    images = []
    for seed in (0, 1, 2):
        p = tmp_path / f"img{seed}.png"
        cv2.imwrite(str(p), scene(seed=seed)[:, :, ::-1])
        images.append(p)
    out = tmp_path / "report"
    gaussian = tmp_path / "g.npz"
    from infolens.samplers import GaussianSampler

    fit = GaussianSampler(4, l=1, fitted_on="test")
    fit.save(str(gaussian), *GaussianSampler.fit_windows([scene(seed=s) for s in range(3)], 4, 1, 1))
    args = ["--model", model_file, "--out", out, "--samplers", f"gray,gaussian={gaussian}", "--maps", "pmi",
            "--methods", "occlusion", "-K", "4", "-S", "4", "-N", "2", "--steps", "10", "-q"]
    first = run_cli("eval", "suite", *images[:2], *args)
    assert first.returncode == 0, first.stderr
    rows = list(csv.DictReader(open(out / "suite.csv")))
    assert {(x["map"], x["sampler"]) for x in rows} == {("pmi", "gray"), ("pmi", "g"), ("occlusion", "gray")}
    # an existing report is not overwritten without --resume
    again = run_cli("eval", "suite", *images, *args)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    resumed = run_cli("eval", "suite", *images, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = list(csv.DictReader(open(out / "suite.csv")))
    assert after[: len(rows)] == rows and len(after) == 3 * 3  # the first two images were not run again
    assert len(after[-1]["deletion_curve"].split()) == 11
    summary = (out / "summary.md").read_text()
    assert "Paired differences in deletion auc, each group minus pmi / gray" in summary
    # the paired difference is the mean of the per-image differences
    d = {(x["map"], x["sampler"], x["image"]): float(x["deletion_auc"]) for x in after}
    want = sum(d[("occlusion", "gray", f"img{s}.png")] - d[("pmi", "gray", f"img{s}.png")] for s in range(3)) / 3
    paired = summary.split("Paired differences in deletion auc")[1]
    line = next(x for x in paired.splitlines() if x.startswith("| occlusion | gray |"))
    assert float(line.split("|")[3].strip().rstrip(" *")) == pytest.approx(want, abs=1e-4)
    bad = run_cli("eval", "suite", images[0], *args[:4], "--samplers", "patchsampler=missing.onnx", "--out",
                  tmp_path / "other")
    assert bad.returncode == 2 and "missing.onnx" in bad.stderr and "Traceback" not in bad.stderr
