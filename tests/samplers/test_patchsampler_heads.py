"""The runtime PatchSampler on real ONNX Runtime sessions: head and stage recognition, malformed files, exact
log2prob against the session's outputs, staged sampling against a per-sample reference, determinism, and the
Explainer end to end with a staged logistic-mixture model."""
import functools
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from scipy.special import logit, softmax

import onnx_builders
from conftest import REPO, REQUIRE_EXT, scene
from infolens import Explainer, InfolensError, OnnxClassifier, kernels, load_sampler
from infolens.samplers.rng import streams
from infolens.samplers import PatchSampler, pad, windows

TESTS = os.path.join(REPO, "tests")
from test_logistic_mixture import direct_log2prob

K = 4
CHECKER = onnx_builders.checkerboard(K)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name → path of the small samplers: logistic mixture (S=2, M=2; S=3, M=3 with symbolic output shapes),
    staged T=2 checkerboard, and the categorical head, one-stage and staged."""
    d = tmp_path_factory.mktemp("samplers")
    build = onnx_builders.context_sampler
    return {"mixture": build(d / "mixture.onnx", K),
            "mixture_s3m3": build(d / "mixture_s3m3.onnx", K, S=3, M=3, seed=1, symbolic=True),
            "staged": build(d / "staged.onnx", K, stages=CHECKER, seed=2),
            "categorical": build(d / "categorical.onnx", K, head="categorical", seed=3),
            "categorical_staged": build(d / "categorical_staged.onnx", K, head="categorical", stages=CHECKER,
                                        seed=4)}


@functools.lru_cache(maxsize=None)
def session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_session(path, contexts, stage=None):
    """The model's outputs by name, straight from onnxruntime."""
    sess = session(path)
    feed = {"context": contexts}
    if stage is not None:
        feed["stage"] = np.full(len(contexts), stage, np.int64)
    return {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, feed))}


def photo_windows(n, seed=0):
    """n uint8 [3K, 3K, 3] windows of a smooth test picture zero-padded by K (centres included)."""
    image = scene(24, 26, seed)
    rng = np.random.default_rng(seed)
    ys, xs = rng.integers(0, 24 - K + 1, n), rng.integers(0, 26 - K + 1, n)
    return windows(pad(image, K), ys, xs, 3 * K)


# -- recognition and malformed files ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,head,T,S,M", [("mixture", "logistic_mixture", 1, 2, 2),
                                             ("mixture_s3m3", "logistic_mixture", 1, 3, 3),
                                             ("staged", "logistic_mixture", 2, 2, 2),
                                             ("categorical", "categorical", 1, 1, 256),
                                             ("categorical_staged", "categorical", 2, 1, 256)])
def test_head_and_stages_recognised(models, name, head, T, S, M):
    s = load_sampler("patchsampler", K, model=models[name])
    assert (s.head, s.K, s.T, s.S, s.M) == (head, K, T, S, M)
    assert s.stages.dtype == np.int64 and s.stages.shape == (K, K)
    np.testing.assert_array_equal(s.stages, CHECKER if T == 2 else np.zeros((K, K)))
    d = s.describe()
    assert (d["head"], d["stages"], d["K"]) == (head, T, K)
    assert ("coupling" in d) == (head == "categorical")  # --coupling applies to the categorical head only
    fills = s.sample(scene(), np.array([0, 3, 13]), np.array([0, 9, 15]), 2, streams(0, np.arange(3)))
    assert fills.shape == (3, 2, K, K, 3) and fills.dtype == np.uint8


def _drop_output(path, name, out):
    proto = onnx.load(path)
    keep = [o for o in proto.graph.output if o.name != name]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    onnx.save(proto, out)
    return str(out)


BAD_FILES = {
    "loc without channel axis": (dict(loc_dims=[2, K, K, 6]), "output loc"),
    "wrong shape found only by running": (dict(loc_dims=[2, K, K, 2, 3], symbolic=True), "output loc has shape"),
    "stages not JSON": (dict(stages=CHECKER, metadata={"stages": "[[0, 1], oops"}), "not JSON"),
    "stages grid 3x3": (dict(stages=CHECKER, metadata={"stages": json.dumps([[0, 1, 0]] * 3)}), "4×4 grid"),
    "stages skip one": (dict(stages=CHECKER, metadata={"stages": json.dumps((CHECKER * 2).tolist())}),
                        "every stage 0..T−1"),
    "stages negative": (dict(stages=CHECKER, metadata={"stages": json.dumps((CHECKER - 1).tolist())}),
                        "every stage 0..T−1"),
    "stages floats": (dict(stages=CHECKER, metadata={"stages": json.dumps((CHECKER * 1.0).tolist())}),
                      "integer stage"),
    "stages without stage input": (dict(metadata={"stages": json.dumps(CHECKER.tolist())}), "no stage input"),
    "stage input without stages": (dict(stages=CHECKER, drop_metadata=True), "no 'stages' metadata"),
}


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_malformed_file_is_a_one_line_error(tmp_path, case):
    kwargs, match = dict(BAD_FILES[case][0]), BAD_FILES[case][1]
    drop_metadata = kwargs.pop("drop_metadata", False)
    path = onnx_builders.context_sampler(tmp_path / "m.onnx", K, **kwargs)
    if drop_metadata:
        proto = onnx.load(path)
        del proto.metadata_props[:]
        onnx.save(proto, path)
    with pytest.raises(InfolensError, match=match) as info:
        load_sampler("patchsampler", K, model=path)
    message = str(info.value)  # the library names the parameter; only the CLI adds its flag
    assert "\n" not in message and "--" not in message and info.value.param == "sampler_model"


def test_missing_or_mixed_outputs_are_one_line_errors(models, tmp_path):
    for path in (_drop_output(models["mixture"], "coeff", tmp_path / "no_coeff.onnx"),
                 _drop_output(models["mixture"], "loc", tmp_path / "no_loc.onnx")):
        with pytest.raises(InfolensError, match="expected probs .*logistic_mixture head") as info:
            PatchSampler(path)
        assert info.value.param == "sampler_model"
    with pytest.raises(InfolensError, match=r"input input is tensor\(float\) .*expected uint8 \[B, 3K, 3K, 3\]$"):
        PatchSampler(onnx_builders.classifier(tmp_path / "clf.onnx"))


# -- scoring ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mixture", "mixture_s3m3"])
def test_log2prob_equals_direct_formula_on_session_outputs(models, name):
    w = photo_windows(7)
    got = PatchSampler(models[name]).log2prob(w, batch=3)
    want = direct_log2prob(run_session(models[name], w), w[:, K:2 * K, K:2 * K], None)
    assert got.dtype == np.float64 and got.shape == (7,)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (got < 0).all()


def test_staged_log2prob_is_the_sum_of_stage_scores(models):
    path, w = models["staged"], photo_windows(9, seed=1)
    centre = w[:, K:2 * K, K:2 * K]
    per_stage = [direct_log2prob(run_session(path, w, t), centre, CHECKER == t) for t in (0, 1)]
    np.testing.assert_allclose(PatchSampler(path).log2prob(w, batch=4), per_stage[0] + per_stage[1], rtol=1e-6)
    # the model is what a staged model must be: stage 0 ignores the whole centre, stage 1 sees stage 0's pixels
    other = w.copy()
    other[:, K:2 * K, K:2 * K][:, CHECKER == 1] = 255 - other[:, K:2 * K, K:2 * K][:, CHECKER == 1]
    for t in (0, 1):
        a, b = run_session(path, w, t), run_session(path, other, t)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    other[:, K:2 * K, K:2 * K][:, CHECKER == 0] = 0
    assert not np.array_equal(run_session(path, w, 1)["loc"], run_session(path, other, 1)["loc"])
    assert np.array_equal(run_session(path, w, 0)["loc"], run_session(path, other, 0)["loc"])


@pytest.mark.parametrize("name", ["categorical", "categorical_staged"])
def test_categorical_log2prob_sums_floored_probs(models, name):
    path, w = models[name], photo_windows(5, seed=2)
    centre = w[:, K:2 * K, K:2 * K].astype(np.intp)
    want = np.zeros(5)
    for t in range(2 if name.endswith("staged") else 1):
        probs = run_session(path, w, t if name.endswith("staged") else None)["probs"]
        p = np.take_along_axis(probs, centre[..., None], -1)[..., 0].astype(np.float64)
        sel = (CHECKER == t) if name.endswith("staged") else np.ones((K, K), bool)
        want += np.log2(np.maximum(p, 1e-12))[:, sel].sum((1, 2))
    np.testing.assert_allclose(PatchSampler(path).log2prob(w), want, rtol=1e-12)


def test_log2prob_checks_its_input(models):
    s = PatchSampler(models["mixture"])
    with pytest.raises(InfolensError, match=r"uint8 \[B, 12, 12, 3\]"):
        s.log2prob(np.zeros((2, 12, 12, 3), np.float32))
    assert s.log2prob(np.zeros((0, 12, 12, 3), np.uint8)).shape == (0,)


# -- sampling ---------------------------------------------------------------------------------------------------

def reference_fills(path, image, ys, xs, n, seed, stages, feed_drawn=True):
    """What DESIGN §3 says a staged logistic-mixture PatchSampler draws, one position and one sample at a time,
    with the uniform layout of infolens.samplers.patchsampler and scipy's softmax and logit: stage 0 from the
    position's window, each later stage from a window whose centre holds the sample's pixels drawn so far
    (feed_drawn=False: the image's own centre instead, a wrong sampler for comparison)."""
    T, K2 = int(stages.max()) + 1, K * K
    out = np.zeros((len(ys), n, K2, 3), np.uint8)
    contexts = windows(pad(image, K), ys, xs, 3 * K)
    for p, rng in enumerate(streams(seed, np.arange(len(ys)))):
        u = rng.random((n, T + 4 * K2))
        for i in range(n):
            ctx = contexts[p:p + 1].copy()
            for t in range(T):
                q = np.flatnonzero(stages.ravel() == t)
                o = run_session(path, ctx, t if T > 1 else None)
                S, M = o["patch_logits"].shape[1], o["pixel_logits"].shape[-1]
                prm = {k: np.ascontiguousarray(o[k].reshape(S, K2, 3, M)[:, q].astype(np.float64)[None])
                       for k in ("loc", "log_scale", "coeff")}
                w = softmax(o["pixel_logits"].astype(np.float64).reshape(1, S, K2, M)[:, :, q], -1)
                v = np.clip(u[i, T + K2:].reshape(K2, 3)[q], 1e-12, 1 - 1e-12)
                draw = kernels.numpy_impl.sample_logistic_mixture(
                    softmax(o["patch_logits"].astype(np.float64), -1), np.ascontiguousarray(w), prm["loc"],
                    np.exp(prm["log_scale"]), prm["coeff"], u[i:i + 1, t:t + 1].copy(), u[i, T + q][None, None].copy(),
                    np.ascontiguousarray(logit(v)[None, None]))[0, 0]
                out[p, i, q] = draw
                if feed_drawn:
                    ctx[0, K + q // K, K + q % K] = draw
    return out.reshape(len(ys), n, K, K, 3)


@pytest.mark.parametrize("name", ["mixture", "staged"])
def test_sampling_equals_per_sample_reference(models, name):
    image, ys, xs = scene(), np.array([0, 6, 13]), np.array([2, 9, 15])
    s = PatchSampler(models[name])
    got = s.sample(image, ys, xs, 3, streams(5, np.arange(3)))
    np.testing.assert_array_equal(got, reference_fills(models[name], image, ys, xs, 3, 5, s.stages))
    if name == "staged":
        # stage 1 really depends on the drawn stage-0 pixels: the same uniforms with the true centre differ
        image2 = image.copy()
        image2[ys[0]:ys[0] + K, xs[0]:xs[0] + K][CHECKER == 0] = 255 - got[0, 0][CHECKER == 0]
        alt = s.sample(image2, ys[:1], xs[:1], 3, streams(5, np.arange(1)))
        np.testing.assert_array_equal(alt[0], got[0])  # the image's own centre never matters
        wrong = reference_fills(models["staged"], image, ys, xs, 3, 5, s.stages, feed_drawn=False)
        np.testing.assert_array_equal(wrong[..., CHECKER == 0, :], got[..., CHECKER == 0, :])
        assert (wrong[..., CHECKER == 1, :] != got[..., CHECKER == 1, :]).mean() > 0.3


@pytest.mark.parametrize("name", ["mixture", "staged", "categorical_staged"])
def test_fills_do_not_depend_on_grouping(models, name):
    """Counter-based streams: a position's in-fills are the same alone, in any group, in any order; and its
    first samples are the same whatever n is."""
    s = load_sampler("patchsampler", K, model=models[name])
    image = scene()
    ys, xs = np.array([0, 4, 8, 13, 2]), np.array([0, 5, 15, 1, 11])
    whole = s.sample(image, ys, xs, 4, streams(9, np.arange(5)))
    alone = np.stack([s.sample(image, ys[i:i + 1], xs[i:i + 1], 4, streams(9, [i]))[0] for i in range(5)])
    order = np.array([3, 0, 4, 1, 2])
    shuffled = s.sample(image, ys[order], xs[order], 4, streams(9, order))
    np.testing.assert_array_equal(whole, alone)
    np.testing.assert_array_equal(whole[order], shuffled)
    np.testing.assert_array_equal(s.sample(image, ys, xs, 2, streams(9, np.arange(5))), whole[:, :2])
    assert not np.array_equal(whole, s.sample(image, ys, xs, 4, streams(10, np.arange(5))))


@pytest.mark.slow
def test_numpy_fallback_gives_the_same_fills(models):
    """INFOLENS_NO_EXT=1 in a fresh process: the staged model's in-fills are identical without the extension."""
    code = (f"import sys, numpy as np; sys.path.insert(0, {TESTS!r}); from conftest import scene; "
            "from infolens import load_sampler, kernels; from infolens.samplers.rng import streams; "
            f"s = load_sampler('patchsampler', {K}, model={models['staged']!r}); "
            "f = s.sample(scene(), np.array([0, 7]), np.array([3, 12]), 3, streams(1, np.arange(2))); "
            "sys.stdout.write(kernels.backend() + ' ' + f.tobytes().hex())")
    results = {}
    for flag in ("1", "0"):
        env = {**os.environ, "INFOLENS_NO_EXT": flag}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        backend, fills = out.stdout.split()
        results[backend] = fills
    assert "numpy" in results and len(set(results.values())) == 1
    assert "c++" in results or not REQUIRE_EXT


def test_explainer_with_staged_mixture_end_to_end(models, model_file):
    """A staged logistic-mixture PatchSampler through Explainer: maps that react to the patches, the head and T in
    the parameters, and identical maps for different classifier batch sizes."""
    clf = OnnxClassifier.from_card(model_file)
    sampler = load_sampler("patchsampler", K, model=models["staged"])
    runs = [Explainer(clf, sampler, batch_size=b).explain(scene(), classes=[0, 1], stride=3, samples=3, seed=4)
            for b in (5, 64)]
    e = runs[0]
    assert e.pmi.shape == (2, 17, 19) and np.isfinite(e.pmi).all() and np.abs(e.pmi).max() > 1e-3
    assert (e.params["head"], e.params["stages"], e.params["K"]) == ("logistic_mixture", 2, K)
    assert e.forwards == 1 + e.params["positions"] * 3
    np.testing.assert_array_equal(runs[0].pmi, runs[1].pmi)
    np.testing.assert_array_equal(runs[0].ig, runs[1].ig)


def test_invalid_model_parameters_are_a_one_line_error(tmp_path):
    """A model whose outputs are unusable (σ = 0 everywhere) fails with the kernel's reason, naming the flag."""
    path = onnx_builders.context_sampler(tmp_path / "m.onnx", K)
    proto = onnx.load(path)
    for init in proto.graph.initializer:
        if init.name == "w_log_scale":
            init.CopyFrom(onnx.numpy_helper.from_array(np.full(onnx.numpy_helper.to_array(init).shape, -1e4,
                                                               np.float32), init.name))
    onnx.save(proto, path)
    with pytest.raises(InfolensError, match=r"scale > 0$") as info:
        PatchSampler(path).sample(scene(), np.array([0]), np.array([0]), 2, streams(0, [0]))
    assert info.value.param == "sampler_model"


@pytest.mark.slow
def test_a_split_graphs_halves_are_cut_once_and_cached(tmp_path):
    """The shipped K=16 PatchSampler is a split graph: the first load cuts it (the onnx package) and keeps the halves
    under the cache folder; a later process loads them without importing onnx, and draws the same in-fills."""
    import os
    import subprocess
    import sys

    code = ("import sys, numpy as np\nfrom infolens import load_sampler\nfrom infolens.samplers.rng import streams\n"
            "s = load_sampler('patchsampler', K=16)\nassert s.encoder is not None\n"
            "img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)\n"
            "x = s.sample(img, np.array([0, 24]), np.array([8, 40]), 2, streams(3, np.arange(2)))\n"
            "print('onnx' in sys.modules, x.tobytes().hex()[:4000])\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
                     for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.split()[0] == "True" and second.stdout.split()[0] == "False"
    assert first.stdout.split()[1] == second.stdout.split()[1]
    assert len(list((tmp_path / "infolens" / "patchsampler").glob("*.onnx"))) == 2
