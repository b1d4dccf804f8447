"""Comparison methods of the same family (paper §IV-B) on a classifier with known behaviour."""
import json

import numpy as np
import pytest

import onnx_builders
from conftest import run_cli
from infolens import Explainer, OnnxClassifier, Preprocessing, load_sampler
from infolens.errors import InfolensError

H = W = 16
REGION = (4, 8, 6, 12)


@pytest.fixture
def region(tmp_path):
    clf = OnnxClassifier(onnx_builders.region_classifier(tmp_path / "region.onnx", H, W, REGION),
                         Preprocessing(resize="none"))
    image = np.random.default_rng(0).integers(180, 256, (H, W, 3), dtype=np.uint8)
    inside = np.zeros((H, W), bool)
    inside[REGION[0]:REGION[1], REGION[2]:REGION[3]] = True
    return clf, image, inside


# with K = S = 4 the patches that overlap the region cover rows 4..8 and columns 4..12
TOUCHED = np.zeros((H, W), bool)
TOUCHED[4:8, 4:12] = True


def test_occlusion_is_the_probability_drop_under_a_grey_patch(region):
    clf, image, inside = region
    e = Explainer(clf, load_sampler("gray", K=4)).explain(image, classes=[0], stride=4, method="occlusion")
    assert list(e.maps) == ["occlusion"] and e.forwards == 1 + 16
    occ = e.maps["occlusion"][0]
    assert np.all(occ[~TOUCHED] == 0) and np.all(occ[inside] > 0.05)
    grey = image.copy()
    grey[4:8, 8:12] = 128
    want = clf.predict_images(image[None])[0, 0] - clf.predict_images(grey[None])[0, 0]
    assert occ[5, 9] == pytest.approx(want, rel=1e-5)


def test_pda_weight_of_evidence(region):
    """WoE checked by hand with a deterministic grey in-fill; the gaussian (PDA's own sampler) leaves
    patches that cannot reach the region at exactly 0."""
    clf, image, inside = region
    e = Explainer(clf, load_sampler("gray", K=4)).explain(image, classes=[0], stride=4, method="pda")
    grey = image.copy()
    grey[4:8, 8:12] = 128
    p0, pg = clf.predict_images(image[None])[0, 0], clf.predict_images(grey[None])[0, 0]
    want = np.log2(p0 / (1 - p0)) - np.log2(pg / (1 - pg))
    assert e.maps["woe"][0][5, 9] == pytest.approx(want, rel=1e-5) and want > 0.5
    g = Explainer(clf, load_sampler("gaussian", K=4)).explain(image, classes=[0], stride=4, samples=4, method="pda")
    assert np.all(g.maps["woe"][0][~TOUCHED] == 0) and np.isfinite(g.maps["woe"]).all()


def test_methods_sharing_one_run_give_their_own_maps_for_no_forward_more(region):
    """`also`: PMI's run with the gaussian sampler gives PDA's woe (and occlusion's map) from the same in-fills —
    each exactly the map of its own run with that sampler and seed, for the forwards of one run."""
    clf, image, _ = region
    ex = Explainer(clf, load_sampler("gaussian", K=4))
    kw = dict(classes=[0, 1], stride=4, samples=3, seed=5)
    both = ex.explain(image, method="pmi", also=("pda", "occlusion"), **kw)
    alone = {m: ex.explain(image, method=m, **kw) for m in ("pmi", "pda", "occlusion")}
    assert set(both.maps) == {"pmi", "ig", "woe", "occlusion"} and both.params["also"] == ["pda", "occlusion"]
    assert both.forwards == alone["pmi"].forwards == 1 + 16 * 3
    for m, e in alone.items():
        for name in e.maps:
            np.testing.assert_array_equal(both.maps[name], e.maps[name])
            np.testing.assert_array_equal(both.stderr[name], e.stderr[name])
    with pytest.raises(InfolensError, match="does not marginalize patches") as err:
        ex.explain(image, method="pmi", also=("rise",), **kw)
    assert err.value.param == "also"


def test_rise_finds_the_region_and_is_batch_independent(region):
    clf, image, inside = region
    runs = [Explainer(clf, batch_size=b, rise_grid=4).explain(image, classes=[0, 1], samples=400, seed=3,
                                                              method="rise") for b in (7, 64)]
    np.testing.assert_array_equal(runs[0].maps["rise"], runs[1].maps["rise"])
    sal = runs[0].maps["rise"]
    assert sal.shape == (2, H, W) and runs[0].forwards == 401
    assert sal[0][inside].mean() > sal[0][~inside].mean() + 0.1  # the region drives class 0 ...
    assert sal[1][inside].mean() < sal[1][~inside].mean() - 0.1  # ... and opposes class 1
    other = Explainer(clf, rise_grid=4).explain(image, classes=[0, 1], samples=400, seed=4, method="rise")
    assert not np.array_equal(other.maps["rise"], sal)


@pytest.mark.slow
def test_cli_methods_write_their_maps_and_eval_reads_them(tmp_path, region):
    clf, image, _ = region
    import cv2

    img = tmp_path / "img.png"
    cv2.imwrite(str(img), image[:, :, ::-1])
    for method, name, extra in (("rise", "rise", ["-N", "50"]), ("occlusion", "occlusion", ["-K", "4"]),
                                ("pda", "woe", ["-K", "4", "-N", "2"])):
        out = tmp_path / method
        r = run_cli("explain", img, "--model", clf.model_path, "--resize", "none", "--method", method,
                    "--classes", "0", "--out", out, "-q", *extra)
        assert r.returncode == 0, r.stderr
        z = np.load(out / "img.npz")
        stderr = [] if method == "rise" else [f"{name}_stderr"]  # RISE has no Monte-Carlo error estimate
        assert sorted(z.files) == sorted(["image", "probs", "classes", name, *stderr])
        if method == "occlusion":  # gray is deterministic: no Monte-Carlo error
            assert (z["occlusion_stderr"] == 0).all()
        assert (out / f"img_{name}_0.png").exists()
        meta = json.loads((out / "img.json").read_text())
        assert meta["params"]["method"] == method and name in meta["maps"]
        r = run_cli("eval", "deletion", out / "img.npz", "--map", name, "--fill", "black", "--steps", "8")
        assert r.returncode == 0 and r.stdout.startswith("AUC "), r.stderr
    r = run_cli("eval", "deletion", tmp_path / "rise" / "img.npz", "--map", "pmi")
    assert r.returncode == 2 and "no 'pmi' map" in r.stderr
