"""The fills that are not a fixed image: ROAD's noisy linear imputation and the PatchSampler's in-fills."""
import json

import cv2
import numpy as np
import pytest

import onnx_builders
from conftest import run_cli
from infolens import Explanation, OnnxClassifier, Preprocessing
from infolens.evaluate.curves import removal_probs, step_counts, pixel_order
from infolens.evaluate.fills import ROAD_WEIGHTS, Road, dissection_rank, make_fill, road_impute


def dense_road(image, mask):
    """ROAD's imputation solved directly: one equation per removed pixel, a dense matrix, numpy's solver."""
    H, W = mask.shape
    img = image.astype(np.float64) / 255
    removed = [(y, x) for y in range(H) for x in range(W) if mask[y, x]]
    var = {p: i for i, p in enumerate(removed)}
    A, b = np.zeros((len(removed), len(removed))), np.zeros((len(removed), 3))
    for i, (y, x) in enumerate(removed):
        for dy, dx, w in ROAD_WEIGHTS:
            yy, xx = y + dy, x + dx
            if not (0 <= yy < H and 0 <= xx < W):
                continue
            A[i, i] += w  # w·x_i = Σ w_j x_j over in-image neighbours: x_i is their weighted mean
            if (yy, xx) in var:
                A[i, var[yy, xx]] -= w
            else:
                b[i] += w * img[yy, xx]
    x = np.linalg.solve(A, b)
    out = img.copy()
    for i, p in enumerate(removed):
        out[p] = x[i]
    return 255 * out


@pytest.mark.parametrize("kind", ["scattered", "block", "border", "blobs"])
def test_road_solves_the_same_system_as_a_dense_solve(kind):
    """Also on blobs over a grid large enough for several levels of the nested-dissection order."""
    rng = np.random.default_rng(3)
    shape = (37, 29) if kind == "blobs" else (9, 11)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = {"scattered": rng.random(shape) < 0.4,
            "block": np.pad(np.ones((5, 6), bool), ((2, 2), (2, 3))),
            "border": np.pad(np.ones((4, 4), bool), ((0, 5), (7, 0))),
            "blobs": cv2.GaussianBlur(rng.random(shape), (0, 0), 3) > 0.5}[kind]
    got = road_impute(image, mask, noise=0)
    np.testing.assert_allclose(got, dense_road(image, mask), atol=1e-9)
    np.testing.assert_array_equal(got[~mask], image[~mask])  # kept pixels stay


def test_the_dissection_order_is_a_permutation_with_separators_last():
    for shape in ((224, 224), (37, 29), (1, 5), (3, 3)):
        rank = dissection_rank(*shape)
        assert sorted(rank.tolist()) == list(range(shape[0] * shape[1]))
    rank = dissection_rank(64, 64).reshape(64, 64)
    assert rank[32].min() > max(rank[:32].max(), rank[33:].max())  # the first separator, row 32, comes last


def test_road_noise_has_the_stated_size_and_is_seeded():
    image = np.full((40, 40, 3), 100, np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    noisy = road_impute(image, mask, 0.01, np.random.default_rng(0))
    d = (noisy - 100)[mask]  # a flat image imputes to the same level: only the noise is left
    assert abs(d.mean()) < 0.1 and d.std() == pytest.approx(2.55, rel=0.05)  # σ = 0.01 on [0, 1]
    a, b = (Road(seed=5).images(image, np.stack([mask, ~mask])) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 2, 40, 40, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, Road(seed=6).images(image, np.stack([mask, ~mask])))


@pytest.mark.slow
def test_the_patchsampler_fill_averages_its_draws_at_the_explanations_K(tmp_path):
    """`eval deletion --fill patchsampler` uses the explanation's K (here 8 and 16, the shipped PatchSamplers),
    and each curve point is the mean p(class) over the D draws, which differ."""
    path = onnx_builders.region_classifier(tmp_path / "region.onnx", 32, 32, (4, 20, 6, 22))
    clf = OnnxClassifier(path, Preprocessing(resize="none"))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fill = make_fill("patchsampler", clf, K=8, draws=3, seed=2)
    reps = fill.replacements(image)
    assert reps.shape == (3, 32, 32, 3) and not np.array_equal(reps[0], reps[1])
    values = np.random.default_rng(1).random((32, 32))
    counts = step_counts(32 * 32, 4)
    got = removal_probs(clf, image, fill, pixel_order(values), counts)
    by_hand = []
    for rep in reps:
        rows = []
        for n in counts:
            cur = image.reshape(-1, 3).copy()
            o = pixel_order(values)[:n]
            cur[o] = rep.reshape(-1, 3)[o]
            rows.append(cur.reshape(32, 32, 3))
        by_hand.append(clf.predict_images(np.stack(rows)))
    np.testing.assert_allclose(got, np.mean(by_hand, 0), rtol=1e-12)
    probs = clf.predict_images(image[None])[0]
    for K in (8, 16):
        e = Explanation(image=image, probs=probs, classes=np.array([probs.argmax()]), labels=["top"],
                        maps={"pmi": values[None].astype(np.float32), "ig": values.astype(np.float32)},
                        params={"K": K, "sampler": "gray"}, model=clf.describe(), source="x.png")
        npz = e.save(str(tmp_path), f"k{K}", render=False)["npz"]
        out = tmp_path / f"k{K}.rec.json"
        r = run_cli("eval", "deletion", npz, "--fill", "patchsampler", "--fill-draws", "2", "--steps", "4",
                    "--json", out)
        assert r.returncode == 0, r.stderr
        rec = json.loads(out.read_text())
        assert rec["fill_settings"]["K"] == K and rec["fill_settings"]["draws"] == 2 and rec["forwards"] == 10
    r = run_cli("eval", "deletion", npz, "--fill", "patchsampler", "--fill-draws", "0")
    assert r.returncode == 2 and "--fill-draws" in r.stderr and len(r.stderr.strip().splitlines()) == 1
