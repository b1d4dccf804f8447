"""The soak (serve/soak.py) for two minutes on the test classifier: no job lost, every result's arrays those of
`infolens explain` for the same request, no 5xx or dropped connection, resident memory flat after warm-up, ended jobs
pruned after the retention.  Its assertions count and compare; none depends on how fast the machine is."""
import os

import cv2
import pytest

from conftest import scene, served_copy
from infolens.serve.soak import soak


@pytest.mark.slow
def test_two_minutes_of_steady_load(tmp_path, model_file):
    served = served_copy(model_file, tmp_path / "served")
    images = []
    for i in range(2):
        images.append(str(tmp_path / f"photo{i}.png"))
        cv2.imwrite(images[-1], scene(40, 52, seed=i))
    report = soak(images, 120, 4, "clf", os.path.dirname(served), retention_s=10, rss_bound_mb=50)
    assert report["problems"] == [], report
    assert report["lost"] == 0 and report["accepted"] >= 20, report
    assert report["checked_against_cli"] >= 5, report  # results were compared, not just counted
    # a cancel the server accepted (an ended job answers 409; cancelled jobs may all be pruned by the end)
    assert report["cancels_accepted"] >= 1 and report["refused_4xx"] + report["ended"].get("failed", 0) >= 1
