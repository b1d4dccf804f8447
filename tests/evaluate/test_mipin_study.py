"""The MIP-IN study of `infolens eval benchmark` end to end on two labelled photos with tiny settings."""
import csv
import json
import os

import pytest

from conftest import REPO, run_cli

EXAMPLES = os.path.join(REPO, "examples")


@pytest.mark.slow
def test_mipin_study_end_to_end(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_index\ncoffee.png,967\nrocket.jpg,812\n")
    out = tmp_path / "bench"
    # the refits' crops come from the example photos here; a real run fits on photos it never evaluates
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", out, "--studies", "mipin",
                "--study-photos", "2", "--sanity-crops", "16", "--steps", "4", "-N", "1", "--fit-data", EXAMPLES, "-q")
    assert r.returncode == 0, r.stderr
    recs = [json.loads((out / "mipin" / f).read_text()) for f in ("coffee.json", "rocket.json")]
    for rec in recs:
        assert [row["map"] for row in rec["rows"]] == ["mipin", "cam", "pmi", "occlusion"]
        for row in rec["rows"]:
            assert 0 <= row["l2_random_classes"] <= 2 and -1 <= row["corr_top1_top2"] <= 1
            assert -1 <= row["swap_gain"] <= 1
        assert 0 <= rec["minimal_p"] <= 1 and 0 <= rec["complete_p"] <= 1
        assert [s["depth"] for s in rec["sanity"]] == [1, 2]
        assert all(-1 <= s["mipin_spearman"] <= 1 and -1 <= s["cam_spearman"] <= 1 for s in rec["sanity"])
    with open(out / "mipin.csv") as f:
        assert len(list(csv.DictReader(f))) == 8
    report = (out / "report.md").read_text()
    for text in ("## MIP-IN", "Completeness", "Minimality", "| top layers randomized |"):
        assert text in report
    assert (out / "mipin_examples.png").stat().st_size > 1000


@pytest.mark.slow
def test_mipin_study_needs_photos_to_refit_on(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class_index\ncoffee.png,967\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("eval", "benchmark", "--images", EXAMPLES, "--labels", labels, "--out", tmp_path / "o", "--studies",
                "mipin", "--fit-data", empty, "-q")
    assert r.returncode == 2 and "--fit-data" in r.stderr and "Traceback" not in r.stderr
