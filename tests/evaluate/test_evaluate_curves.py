"""Deletion / insertion: the step rule, the fills, the AUC, and that a faithful map beats a random one."""
import json

import cv2
import numpy as np
import onnxruntime as ort
import pytest

import onnx_builders
from conftest import run_cli
from infolens import Explanation, OnnxClassifier, Preprocessing
from infolens.evaluate.curves import auc, curve, pixel_order, removal_probs, step_counts
from infolens.evaluate.fills import Black, make_fill

H = W = 16
REGION = (4, 8, 6, 12)


@pytest.fixture
def region_setup(tmp_path):
    """A region classifier, a bright image, and explanations whose maps rank the region first or randomly."""
    path = onnx_builders.region_classifier(tmp_path / "region.onnx", H, W, REGION)
    clf = OnnxClassifier(path, Preprocessing(resize="none"))
    rng = np.random.default_rng(0)
    image = rng.integers(180, 256, (H, W, 3), dtype=np.uint8)
    probs = clf.predict_images(image[None])[0]
    good = np.zeros((H, W), np.float32)
    good[REGION[0]:REGION[1], REGION[2]:REGION[3]] = 1.0
    files = {}
    for name, m in (("good", good), ("random", rng.random((H, W)).astype(np.float32))):
        e = Explanation(image=image, probs=probs, classes=np.array([0]), labels=["class 0"], maps={"pmi": m[None], "ig": m},
                        params={"K": 4, "sampler": "gray"}, model=clf.describe(), source=f"{name}.png")
        files[name] = e.save(str(tmp_path), name, render=False)["npz"]
    return clf, image, good, files


def _direct_probs(model, images):
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    z = sess.run(None, {"input": images.transpose(0, 3, 1, 2).astype(np.float32)})[0].astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True))[:, 0]


def test_step_rule_and_stable_order():
    assert step_counts(10, 4).tolist() == [0, 3, 5, 8, 10]  # ceil(k·10/4)
    assert step_counts(256, 100)[1] == 3 and step_counts(256, 100)[-1] == 256
    v = np.array([[0.5, 1.0, 0.5], [1.0, 0.0, 0.5]])
    assert pixel_order(v).tolist() == [1, 3, 0, 2, 5, 4]  # ties keep row-major order


def test_static_fills_are_as_specified(region_setup):
    clf, image, _, _ = region_setup
    np.testing.assert_array_equal(make_fill("blur", clf).replacements(image)[0], cv2.GaussianBlur(image, (11, 11), 5))
    assert not make_fill("black", clf).replacements(image).any()
    removed = np.zeros((2, H, W), bool)
    removed[1, 2:5, 3:9] = True
    got = make_fill("blur", clf).images(image, removed)
    assert got.shape == (1, 2, H, W, 3)
    np.testing.assert_array_equal(got[0, 0], image)
    np.testing.assert_array_equal(got[0, 1][~removed[1]], image[~removed[1]])
    np.testing.assert_array_equal(got[0, 1][removed[1]], cv2.GaussianBlur(image, (11, 11), 5)[removed[1]])


def test_the_mean_fill_is_zero_after_the_models_normalization(tmp_path):
    path = onnx_builders.region_classifier(tmp_path / "region.onnx", H, W, REGION)
    clf = OnnxClassifier(path, Preprocessing(resize="none", mean=(120.0, 100.0, 80.0), std=(50.0, 50.0, 50.0),
                                             channel_order="BGR"))
    colour = make_fill("mean", clf).replacements(np.zeros((H, W, 3), np.uint8))[0, 5, 5]
    assert colour.tolist() == [80, 100, 120]  # RGB: model channel 0 (B) has mean 120
    tensor = clf.normalize(np.broadcast_to(colour, (1, H, W, 3)).copy())
    np.testing.assert_allclose(tensor, 0, atol=1e-6)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_curve_and_auc_match_a_hand_computed_run(region_setup, mode):
    clf, image, good, _ = region_setup
    steps = 7
    fill = np.zeros_like(image)
    fractions, got = curve(clf, image, Black(), good, 0, steps, mode, batch_size=3)
    order = np.argsort(-good.ravel(), kind="stable")
    imgs = []
    for k in range(steps + 1):
        n = int(np.ceil(k * H * W / steps))
        cur = (image if mode == "deletion" else fill).reshape(-1, 3).copy()
        cur[order[:n]] = (fill if mode == "deletion" else image).reshape(-1, 3)[order[:n]]
        imgs.append(cur.reshape(H, W, 3))
    want = _direct_probs(clf.model_path, np.stack(imgs))
    np.testing.assert_allclose(fractions, np.linspace(0, 1, steps + 1))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    trapezoid = sum((want[i] + want[i + 1]) / 2 / steps for i in range(steps))
    assert auc(fractions, got) == pytest.approx(trapezoid, rel=1e-9)


def test_faithful_map_has_lower_deletion_and_higher_insertion_auc(region_setup, tmp_path):
    _, _, _, files = region_setup
    res = {}
    for name, npz in files.items():
        for mode in ("deletion", "insertion"):
            out = tmp_path / f"{name}_{mode}.json"
            r = run_cli("eval", mode, npz, "--fill", "black", "--steps", "20", "--json", out)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("AUC ")
            res[name, mode] = json.loads(out.read_text())
    assert res["good", "deletion"]["auc"] < res["random", "deletion"]["auc"] - 0.3
    assert res["good", "insertion"]["auc"] > res["random", "insertion"]["auc"] + 0.3
    rec = res["good", "deletion"]
    assert set(rec) >= {"auc", "curve", "fractions", "fill", "steps", "class", "map"}
    assert rec["fill"] == "black" and rec["steps"] == 20 and rec["class"] == 0 and rec["map"] == "pmi"
    assert len(rec["curve"]) == len(rec["fractions"]) == 21 and 0 <= rec["auc"] <= 1


@pytest.mark.slow
def test_eval_bad_input_is_one_line(region_setup, tmp_path):
    _, _, _, files = region_setup
    for args in (["--class", "1"], ["--steps", "0"], ["--map", "xyz"]):
        r = run_cli("eval", "deletion", files["good"], *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("eval", "deletion", tmp_path / "missing.npz")
    assert r.returncode == 2 and "cannot read explanation" in r.stderr


def test_negative_evidence_removes_only_negative_pixels_and_top_class_rises(tmp_path):
    path = onnx_builders.region_classifier(tmp_path / "region.onnx", H, W, REGION)
    clf = OnnxClassifier(path, Preprocessing(resize="none"))
    image = np.full((H, W, 3), 250, np.uint8)
    image[REGION[0]:REGION[1], REGION[2]:REGION[3]] = 140  # pulls class 0 down, but it stays on top
    probs = clf.predict_images(image[None])[0]
    assert probs.argmax() == 0
    pmi = np.full((H, W), 0.5, np.float32)
    pmi[REGION[0]:REGION[1], REGION[2]:REGION[3]] = -1.0
    e = Explanation(image=image, probs=probs, classes=np.array([0]), labels=["class 0"],
                    maps={"pmi": pmi[None], "ig": np.abs(pmi)}, params={"K": 4}, model=clf.describe(),
                    source="neg.png")
    npz = e.save(str(tmp_path), render=False)["npz"]
    r = run_cli("eval", "negative", npz, "--fill", "road", "--steps", "4", "--out", tmp_path / "neg")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "neg" / "neg_negative.json").read_text())
    assert rec["negative_pixels"] == 24 and rec["fractions"][-1] == pytest.approx(24 / 256)
    assert rec["curve"][0] == pytest.approx(probs[0]) and rec["curve"][-1] > 0.95 > probs[0]
    assert np.all(np.diff(rec["curve"]) > 0) and len(rec["curve"]) == 5
    assert (tmp_path / "neg" / "neg_negative.png").stat().st_size > 1000


def test_insertion_is_least_relevant_first_removal_read_backwards(region_setup):
    """LeRF done by hand (remove the lowest-ranked pixels first, black) is the insertion curve reversed, so
    SRG = AUC(LeRF) − AUC(MoRF) = AUC(insertion) − AUC(deletion); and the faithful map's SRG beats the random one's."""
    clf, image, good, _ = region_setup
    steps = 8  # 256 pixels: every step count is exact
    order = pixel_order(good)
    lerf = []
    for k in range(steps + 1):
        cur = image.reshape(-1, 3).copy()
        cur[order[::-1][:k * H * W // steps]] = 0
        lerf.append(cur.reshape(H, W, 3))
    lerf = _direct_probs(clf.model_path, np.stack(lerf))
    counts = step_counts(H * W, steps)
    ins = removal_probs(clf, image, Black(), order, counts, "insertion")[:, 0]
    np.testing.assert_allclose(ins, lerf[::-1], rtol=1e-6)
    fr = np.linspace(0, 1, steps + 1)
    srg = {}
    for name, m in (("good", good), ("random", np.random.default_rng(1).random((H, W)))):
        o = pixel_order(m)
        dele, ins = (removal_probs(clf, image, Black(), o, counts, mode)[:, 0] for mode in ("deletion", "insertion"))
        srg[name] = auc(fr, ins) - auc(fr, dele)
    assert srg["good"] > srg["random"] + 0.3


@pytest.mark.parametrize("fill", ["black", "road"])
def test_the_removal_study_scores_with_end_points_shared_by_every_map(region_setup, fill):
    """removal.score takes the intact and the fully removed image's p(class) once per photo and fill; its curves
    are the ones computed step by step, and a class-independent map serves both targets."""
    from infolens.evaluate.removal import end_points, score

    clf, image, good, _ = region_setup
    f = make_fill(fill, clf, seed=3)
    steps = 8
    counts = step_counts(H * W, steps)
    ends = end_points(clf, image, f)
    for m in (good, np.random.default_rng(2).random((H, W))):
        got = score(clf, image, f, {None: m}, {"pred": 0, "true": 0}, steps, ends=ends)
        dele, ins = (removal_probs(clf, image, f, pixel_order(m), counts, mode)[:, 0]
                     for mode in ("deletion", "insertion"))
        fr = np.linspace(0, 1, steps + 1)
        morf, lerf, c_morf, c_lerf, forwards = got["pred"]
        np.testing.assert_allclose(c_morf, dele, rtol=1e-9)
        np.testing.assert_allclose(c_lerf, ins[::-1], rtol=1e-9)
        assert morf == pytest.approx(auc(fr, dele)) and lerf == pytest.approx(auc(fr, ins))
        assert forwards == 2 * (steps - 1) and got["true"][4] == 0  # the second target reuses the curves
    assert score(clf, image, f, {0: good}, {"pred": 0}, 1)["pred"][2].tolist() == ends[:, 0].tolist()
