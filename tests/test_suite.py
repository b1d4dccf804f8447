"""`infolens eval suite` end to end on a small model: one CSV row per image × map × sampler, summary and plots."""
import csv

import cv2

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
