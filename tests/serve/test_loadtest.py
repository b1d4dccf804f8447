"""The load and fault test, small: concurrent clients, a full queue (429 then retry), a SIGKILL and a restart
mid-run — and no accepted job lost."""
import cv2
import pytest

import onnx_builders
from conftest import scene, write_card

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, prometheus-client) is not installed")


@pytest.mark.slow
def test_no_job_lost_under_load_and_a_kill(tmp_path):
    from infolens.serve.loadtest import run

    models = tmp_path / "models"
    models.mkdir()
    write_card(onnx_builders.classifier(models / "toy.onnx", H=24, W=24, n_classes=6), "NCHW", "RGB", "float32")
    image = cv2.imencode(".png", scene(24, 24)[:, :, ::-1])[1].tobytes()
    report = run(clients=4, jobs=12, image=image, model="toy",
                 params={"K": 4, "S": 1, "N": 4, "sampler": "noise", "classes": "top2"}, kill_after=2.0,
                 flags=["--models", str(models), "--queue-size", "2", "--chunk-forwards", "64"], deadline_s=300)
    assert report["errors"] == [] and report["restarts"] == 1
    assert report["accepted"] == 12 and report["done"] == 12 and report["lost"] == 0
    # the 4 first submissions arrive together against a queue of 2: 2 are turned away (a job takes ~1,800 forwards,
    # far longer than the burst), and every job turned away is retried until accepted (accepted == 12 above)
    assert report["burst_429"] == 2 and report["rejections_429"] >= report["burst_429"]
    assert 0 < report["latency_p50_s"] <= report["latency_p99_s"]
