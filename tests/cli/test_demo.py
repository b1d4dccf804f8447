"""The demo path: the shipped classifier with the default sampler and with the shipped PatchSampler, no model
flags, on a small real photo."""
import json
import os

import cv2
import numpy as np
import pytest

from conftest import REPO, run_cli

ROOT = REPO


@pytest.mark.slow
def test_demo_path_on_a_small_image(tmp_path):
    photo = cv2.imread(os.path.join(ROOT, "examples", "chelsea.png"))
    small = tmp_path / "cat.jpg"
    cv2.imwrite(str(small), cv2.resize(photo, (120, 80), interpolation=cv2.INTER_AREA))
    for sampler, forwards in ((None, 1 + 14 * 14), ("patchsampler", 1 + 14 * 14 * 2)):
        out = tmp_path / (sampler or "default")
        r = run_cli("explain", small, "-K", "16", "-S", "16", "-N", "2", "--out", out,
                    *(["--sampler", sampler] if sampler else []))
        assert r.returncode == 0, r.stderr
        assert "forwards in" in r.stdout
        meta = json.loads((out / "cat.json").read_text())
        assert meta["params"]["sampler"] == (sampler or "ring-mean") and meta["params"]["K"] == 16
        assert os.path.basename(meta["model"]["model"]) == "efficientnet_lite0.onnx"
        assert meta["forwards"] == forwards
        z = np.load(out / "cat.npz")
        assert z["image"].shape == (224, 224, 3) and z["pmi"].shape == (3, 224, 224)
        assert np.isfinite(z["pmi"]).all() and (z["ig"] >= 0).all() and z["ig"].max() > 0
        assert len(list(out.glob("cat_pmi_*.png"))) == 3 and (out / "cat_ig.png").exists()
    assert os.path.basename(meta["params"]["sampler_model"]) == "patchsampler_k16.onnx"
    # one in-fill per patch from the context's mean colour: no Monte-Carlo error, unlike the PatchSampler's
    assert not np.load(tmp_path / "default" / "cat.npz")["pmi_stderr"].any()
    assert np.load(tmp_path / "patchsampler" / "cat.npz")["pmi_stderr"].any()


def test_explanation_round_trip(tmp_path, image_file, model_file):
    from infolens import Explainer, Explanation, OnnxClassifier, load_sampler

    e = Explainer(OnnxClassifier.from_card(model_file), load_sampler("noise", K=4)).explain(
        image_file, stride=4, samples=2)
    files = e.save(str(tmp_path))
    back = Explanation.load(files["npz"])
    for k in ("image", "probs", "classes", "pmi", "ig"):
        np.testing.assert_array_equal(getattr(back, k), getattr(e, k))
    assert back.labels == e.labels and back.params == e.params and back.forwards == e.forwards
