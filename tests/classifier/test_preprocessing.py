"""Preprocessing that matches a vendor's code: the resize filter, letterbox with padding, resize-then-crop, single-
channel models; values a model cannot use are errors, and the JSON records only what was used."""
import json
import subprocess
import sys

import cv2
import numpy as np
import onnxruntime as ort
import pytest

import onnx_builders
from conftest import scene, write_card
from infolens import Explainer, OnnxClassifier, Preprocessing, load_sampler, params
from infolens.classifier import Tapped
from infolens.errors import InfolensError
from infolens.images import INTERPOLATIONS

H, W = 17, 19


def photo(h=45, w=31, seed=1):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 1.5)


# What each --interpolation name must mean, written out here rather than read from the implementation's own table
OPENCV_FILTERS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "nearest": cv2.INTER_NEAREST, "lanczos": cv2.INTER_LANCZOS4}


def test_every_filter_name_is_offered():
    assert set(INTERPOLATIONS) == set(OPENCV_FILTERS)
    assert set(params.PARAMS["interpolation"].allowed()) == {"auto", *OPENCV_FILTERS}


@pytest.mark.parametrize("name", sorted(OPENCV_FILTERS))
def test_the_resize_filter_is_the_one_asked_for(model_file, name):
    """Each filter is checked against OpenCV called directly with the filter the name stands for, on an image whose
    filters all give different pixels (so a swapped table entry fails)."""
    img = photo()
    clf = OnnxClassifier.from_card(model_file, resize="stretch", interpolation=name)
    want = cv2.resize(img, (W, H), interpolation=OPENCV_FILTERS[name])
    assert all(not np.array_equal(want, cv2.resize(img, (W, H), interpolation=other))
               for n, other in OPENCV_FILTERS.items() if n != name)
    np.testing.assert_array_equal(clf.load_image(img), want)


def test_auto_filter_is_area_when_shrinking_and_linear_when_enlarging(model_file):
    clf = OnnxClassifier.from_card(model_file, resize="stretch")
    big, small = photo(60, 70), photo(8, 9)
    np.testing.assert_array_equal(clf.load_image(big), cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(clf.load_image(small), cv2.resize(small, (W, H), interpolation=cv2.INTER_LINEAR))


def test_letterbox_fits_the_whole_image_and_pads_with_the_colour_given(model_file):
    img = photo(30, 60)  # wide: scaled by 19/60 to 9×19 (rounded 9.5 → 10? round half to even: 10) then padded
    clf = OnnxClassifier.from_card(model_file, resize="letterbox", pad_value=[114, 115, 116], interpolation="cubic")
    got = clf.load_image(img)
    nh = round(30 * 19 / 60)
    y0 = (H - nh) // 2
    expected = np.empty((H, W, 3), np.uint8)
    expected[:] = (114, 115, 116)
    expected[y0:y0 + nh] = cv2.resize(img, (W, nh), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(got, expected)


def test_crop_fraction_is_resize_then_centre_crop(model_file):
    img = photo(40, 50)
    clf = OnnxClassifier.from_card(model_file, resize="shorter-side-crop", crop_fraction=0.5, interpolation="linear")
    s = max(H / 40, W / 50) / 0.5
    nh, nw = round(40 * s), round(50 * s)
    scaled = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    y0, x0 = (nh - H) // 2, (nw - W) // 2
    np.testing.assert_array_equal(clf.load_image(img), scaled[y0:y0 + H, x0:x0 + W])


def test_probabilities_match_a_vendor_pipeline_written_by_hand(model_file):
    """A vendor's code: letterbox with grey 128, cubic filter, then (x − mean) / std: the same probabilities."""
    img = photo(60, 33)
    s = min(H / 60, W / 33)
    nh, nw = round(60 * s), round(33 * s)
    canvas = np.full((H, W, 3), 128, np.uint8)
    y0, x0 = (H - nh) // 2, (W - nw) // 2
    canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_CUBIC)
    vendor = onnx_builders.reference_probs(model_file, canvas[None].astype(np.float64))[0]
    clf = OnnxClassifier.from_card(model_file, resize="letterbox", pad_value=128, interpolation="cubic")
    np.testing.assert_allclose(clf.predict_images(clf.load_image(img)[None])[0], vendor, rtol=1e-5, atol=1e-7)


def grey_model(tmp_path, layout="NCHW", dtype="float32"):
    path = onnx_builders.classifier(tmp_path / f"grey_{layout}_{dtype}.onnx", layout=layout, dtype=dtype, channels=1)
    card = {"input": {"resize": "none", **({"mean": onnx_builders.MEAN[0], "std": onnx_builders.STD[0]}
                                          if dtype == "float32" else {})}}
    with open(path[:-5] + ".json", "w") as f:
        json.dump(card, f)
    return path


def grey_reference(path, images, layout, dtype):
    """The vendor's way: OpenCV's grey conversion, then the model's normalization, one image at a time."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = []
    for img in images:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        x = g.astype(np.uint8) if dtype == "uint8" else \
            ((g - onnx_builders.MEAN[0]) / onnx_builders.STD[0]).astype(np.float32)
        x = x[None, None] if layout == "NCHW" else x[None, :, :, None]
        out.append(sess.run(None, {"input": x})[0][0])
    z = np.array(out, np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("layout,dtype", [("NCHW", "float32"), ("NHWC", "uint8")])
def test_single_channel_models_see_the_grey_image_a_vendor_would_make(tmp_path, layout, dtype):
    path = grey_model(tmp_path, layout, dtype)
    clf = OnnxClassifier.from_card(path)
    assert clf.pre.channels == 1 and clf.describe()["grayscale"] == "bt601"
    images = np.stack([photo(H, W, seed) for seed in range(6)] + [scene()] +
                      [np.random.default_rng(s).integers(0, 256, (H, W, 3), dtype=np.uint8) for s in range(30)])
    grey = Tapped(clf, ["infolens_grey"]).run(clf.normalize(images))[1]["infolens_grey"]
    grey = grey.reshape(len(images), H, W)
    opencv = np.stack([cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in images])
    assert np.abs(grey - opencv).max() == 0, "the grey front must equal OpenCV's BT.601 conversion here"
    np.testing.assert_allclose(clf.predict_images(images), grey_reference(path, images, layout, dtype),
                               rtol=1e-5, atol=1e-7)
    e = Explainer(clf, load_sampler("gray", K=4), batch_size=5).explain(scene(), stride=4)
    assert np.abs(e.pmi).max() > 1e-3 and e.model["channels"] == 1


@pytest.mark.parametrize("formula", ["pil", "average"])
def test_grey_model_with_fixed_batch_and_other_formulas(tmp_path, formula):
    path = onnx_builders.classifier(tmp_path / "g.onnx", channels=1, batch=1)
    clf = OnnxClassifier(path, Preprocessing(resize="none", grayscale=formula))
    img = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    grey = Tapped(clf, ["infolens_grey"]).run(clf.normalize(img[None]))[1]["infolens_grey"].reshape(H, W)
    x = img.astype(np.int64)
    expected = ((x @ [19595, 38470, 7471] + 0x8000) >> 16) if formula == "pil" else (x.sum(-1) * 2 + 3) // 6
    np.testing.assert_array_equal(grey, expected)  # PIL's convert("L") integer formula; round((R + G + B) / 3)
    assert clf.predict_images(np.stack([img] * 3)).shape == (3, 5)


CANNOT_USE = [  # (model variant, keyword, value, param named in the error)
    ("uint8", "mean", [1, 2, 3], "mean"), ("uint8", "std", 2.0, "std"), ("uint8", "scale", 1 / 255, "scale"),
    ("float32", "pad_value", 114, "pad_value"), ("float32", "crop_fraction", 0.875, "crop_fraction"),
    ("float32", "grayscale", "bt709", "grayscale"), ("grey", "channel_order", "BGR", "channel_order"),
    ("grey", "mean", [1, 2, 3], "mean"),
]


@pytest.mark.parametrize("variant,key,value,param", CANNOT_USE)
def test_values_a_model_cannot_use_are_errors(tmp_path, variant, key, value, param):
    if variant == "grey":
        path = onnx_builders.classifier(tmp_path / "g.onnx", channels=1)
    else:
        path = onnx_builders.classifier(tmp_path / "m.onnx", dtype=variant)
    with pytest.raises(InfolensError) as err:
        OnnxClassifier(path, Preprocessing(resize="stretch" if key in ("pad_value", "crop_fraction") else None,
                                           **{key: value}))
    assert err.value.param == param


def test_identity_normalization_on_a_uint8_model_is_fine_and_not_recorded(tmp_path, image_file):
    path = onnx_builders.classifier(tmp_path / "u.onnx", dtype="uint8")
    write_card(path, "NCHW", "RGB", "uint8")  # scale 1, mean 0, std 1: nothing to apply
    d = OnnxClassifier.from_card(path).describe()
    assert d["dtype"] == "uint8" and not {"scale", "mean", "std", "pad_value", "crop_fraction", "grayscale",
                                            "interpolation"} & set(d)
    r = subprocess.run([sys.executable, "-m", "infolens", "explain", image_file, "--model", path, "--mean", "1,2,3",
                        "--out", str(tmp_path / "o"), "-q"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().endswith("(--mean)") and "uint8" in r.stderr


def test_letterbox_explanation_round_trips_through_its_json(tmp_path, model_file, image_file):
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "infolens", "explain", image_file, "--model", model_file,
                        "--resize", "letterbox", "--pad-value", "10,20,30", "--interpolation", "lanczos",
                        "--sampler", "gray", "-K", "4", "--no-png", "--out", str(out), "-q"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "scene.json").read_text())["model"]
    assert meta["pad_value"] == [10, 20, 30] and meta["interpolation"] == "lanczos" and "crop_fraction" not in meta
    again = OnnxClassifier.from_description(meta)
    assert again.pre == OnnxClassifier.from_card(model_file, resize="letterbox", pad_value=[10, 20, 30],
                                                 interpolation="lanczos").pre


def test_the_incremental_mode_round_trips_through_a_description(model_file):
    """A benchmark's Ray actors rebuild the classifier from its description: they run in the same --incremental mode;
    a description written before the mode was recorded rebuilds with it off."""
    d = OnnxClassifier.from_card(model_file, incremental="auto").describe()
    assert OnnxClassifier.from_description(d).incremental == "auto"
    assert OnnxClassifier.from_description({k: v for k, v in d.items() if k != "incremental"}).incremental == "off"
