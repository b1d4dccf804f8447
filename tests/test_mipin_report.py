"""The MIP-IN report (python -m infolens.mipin.report) end to end on two labelled photos with tiny settings."""
import csv
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "imagenet-samples")


@pytest.mark.skipif(not os.path.isfile(os.path.join(DATA, "labels.csv")),
                    reason="../shared/data/imagenet-samples is absent (the report evaluates on its photos)")
def test_report_end_to_end_on_two_photos(tmp_path):
    r = subprocess.run([sys.executable, "-m", "infolens.mipin.report", "--data", DATA, "--out", str(tmp_path),
                        "--every", "500", "--steps", "5", "--sanity-photos", "2", "--sanity-crops", "16"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["image"] for row in rows] == ["n01440764.jpg", "n03042490.jpg"]  # class indices 0 and 500
    for row in rows:
        for key, value in row.items():
            if key.endswith(("_deletion_blur", "_insertion_blur", "_deletion_black", "_insertion_black")):
                assert 0 <= float(value) <= 1, (key, value)
    with open(tmp_path / "sanity.csv") as f:
        assert len(list(csv.DictReader(f))) == 4  # 2 photos x 2 randomization depths
    text = (tmp_path / "README.md").read_text()
    for section in ("Deletion AUC, blur fill", "Insertion AUC, black fill", "Class sensitivity", "completeness",
                    "Sanity"):
        assert section in text
    assert (tmp_path / "auc.png").stat().st_size > 0 and (tmp_path / "examples.png").stat().st_size > 0
    assert not [n for n in os.listdir(tmp_path) if n.endswith((".jpg", ".npz"))], "no photo of the set is written"
