"""Methods as classes: one registry feeds the CLI, each method a thin sibling over the marginalization core; the
classifier's perturbation batch and intermediate outputs."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import onnx_builders
from conftest import REPO, scene
import infolens
from infolens import Explainer, InfolensError, OnnxClassifier, Preprocessing, backends, load_sampler, params
from infolens.classifier import Tapped
from infolens.cli import build_parser
from infolens.explanation import MAPS
from infolens.evaluate.fills import FILLS, make_fill
from infolens.methods import METHODS, PMI, RISE, Occlusion, PatchMarginalization, method_class, patch_grid
from infolens.samplers import SAMPLERS
from infolens.serve.models import check_params


def _choices(parser, dest, command):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest).choices


def test_registry_feeds_the_cli_and_declares_maps_and_samplers():
    assert list(_choices(build_parser(), "method", "explain")) == list(METHODS)
    for name, cls in METHODS.items():
        assert set(cls.maps) <= set(MAPS), name
        assert cls.default_sampler is None or cls.default_sampler in SAMPLERS, name


def _every_choices(parser, dest) -> list:
    """The choices of every `dest` option in the parser and its subcommands, at any depth."""
    found = []
    for a in parser._actions:
        if a.dest == dest and a.choices is not None:
            found.append(list(a.choices))
        if isinstance(a.choices, dict):
            for sub in {id(p): p for p in a.choices.values()}.values():
                found += _every_choices(sub, dest)
    return found


@pytest.mark.parametrize("param,registry", [("method", METHODS), ("sampler", SAMPLERS), ("fill", FILLS)])
def test_each_name_is_declared_once_in_its_registry(param, registry):
    """The registry is the one declaration: PARAMS' choices, the CLI's, and the one message for a wrong name, whether
    the library (load_sampler, method_class, make_fill), the CLI or the server is asked."""
    assert params.PARAMS[param].allowed() == tuple(registry)
    cli = _every_choices(build_parser(), param)
    assert list(registry) in cli and all(set(c) <= set(registry) for c in cli)  # perf measures two methods only
    make = {"method": method_class, "sampler": lambda name: load_sampler(name, 8), "fill": make_fill}[param]
    with pytest.raises(InfolensError) as e:
        make("nope")
    assert e.value.param == param and str(e.value) == f"{param} must be one of {', '.join(registry)}, got 'nope'"
    if param != "fill":
        with pytest.raises(InfolensError) as e:
            check_params({param: "nope"})
        assert e.value.param == f"params.{param}" and f"must be one of {', '.join(registry)}" in str(e.value)


def test_the_version_is_the_packages_own():
    import tomllib
    from importlib.metadata import version

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["version"]
    assert infolens.__version__ == version("infolens") == declared
    r = subprocess.run([sys.executable, "-m", "infolens", "--version"], capture_output=True, text=True)
    assert r.stdout.strip() == f"infolens {declared}"


def test_a_new_method_is_one_small_sibling(model_file):
    """What a later method (MIP-IN) needs: a subclass naming its reduction and default sampler, nothing else."""

    class MeanOcclusion(PatchMarginalization):
        name, maps, default_sampler, reduction = "mean-occlusion", ("occlusion",), "mean", "occlusion"

    clf = OnnxClassifier.from_card(model_file)
    e = MeanOcclusion(clf, load_sampler("mean", K=4)).attribute(scene(), target=[0, 2], stride=4)
    assert e.params["method"] == "mean-occlusion" and e.params["sampler"] == "mean"
    assert e.maps["occlusion"].shape == (2, *scene().shape[:2]) and (e.stderr["occlusion"] == 0).all()
    # the same numbers as the registered occlusion method with the same sampler
    same = Occlusion(clf, load_sampler("mean", K=4)).attribute(scene(), target=[0, 2], stride=4)
    np.testing.assert_array_equal(e.maps["occlusion"], same.maps["occlusion"])


def test_the_explainer_is_a_registry_lookup(model_file, monkeypatch):
    """A method registered in METHODS runs through the Explainer with the settings it asks for in its own
    `from_explainer`, the Explainer unchanged; the costly ones are opened once per Explainer."""

    class Sharpened(RISE):
        name = "sharpened-rise"

        @classmethod
        def from_explainer(cls, explainer):
            return cls(explainer.classifier, explainer.batch_size, explainer.progress, explainer.rise_grid, 0.9)

    monkeypatch.setitem(METHODS, "sharpened-rise", Sharpened)
    ex = Explainer(OnnxClassifier.from_card(model_file), rise_grid=3)
    m = ex.method("sharpened-rise")
    assert isinstance(m, Sharpened) and (m.grid, m.p_keep) == (3, 0.9)
    e = ex.explain(scene(), samples=8, method="sharpened-rise")
    assert e.params["method"] == "sharpened-rise" and e.params["p_keep"] == 0.9 and e.forwards == 1 + 8
    monkeypatch.setattr(Sharpened, "costly_to_open", True)
    assert ex.method("sharpened-rise") is ex.method("sharpened-rise") and ex.method("pmi") is not ex.method("pmi")


def test_explainer_uses_each_methods_own_default_sampler(model_file):
    clf = OnnxClassifier.from_card(model_file)
    e = Explainer(clf).explain(scene(), stride=4, method="occlusion")
    assert e.params["sampler"] == "gray" and e.params["K"] == params.ExplainConfig.K
    assert Explainer(clf, K=4).explain(scene(), method="occlusion").params["K"] == 4


def test_k_belongs_to_the_sampler(model_file):
    """A sampler by name is loaded at the K given (the CLI's default when none is); a loaded sampler brings its own
    K, and a different K beside it is refused, naming K, rather than one of them silently winning."""
    clf = OnnxClassifier.from_card(model_file)
    assert PMI(clf, "mean", K=4).attribute(scene()).params["K"] == 4
    assert Occlusion(clf).attribute(scene(), stride=4).params["K"] == params.ExplainConfig.K
    assert PMI(clf, load_sampler("mean", K=4), K=4).sampler.K == 4
    with pytest.raises(InfolensError, match="K=6 but the sampler given has K=4") as e:
        PMI(clf, load_sampler("mean", K=4), K=6)
    assert e.value.param == "K"
    with pytest.raises(InfolensError) as e:
        PMI(clf, "no-such-sampler")
    assert e.value.param == "sampler"


def test_perturbation_batch_writes_runs_and_restores(model_file):
    clf = OnnxClassifier.from_card(model_file)
    img = scene()
    base = clf.normalize(img[None])[0]
    batch = backends.perturbation_batch(clf, base, 4, 3)
    patches = np.random.default_rng(0).integers(0, 256, (3, 3, 3, 3), dtype=np.uint8)
    ys, xs = np.array([0, 5, 14]), np.array([2, 16, 7])
    batch.write(patches, ys, xs)
    want = np.repeat(img[None], 3, axis=0)
    for i, (y, x) in enumerate(zip(ys, xs)):
        want[i, y:y + 3, x:x + 3] = patches[i]
    np.testing.assert_allclose(batch.run(3), clf.predict_images(want), rtol=1e-6)
    batch.restore(ys, xs)
    np.testing.assert_allclose(batch.run(4), clf.predict_images(np.repeat(img[None], 4, axis=0)), rtol=1e-6)


def test_classifier_returns_named_intermediate_tensors(model_file):
    """Any node output, checked against ONNX's own reference evaluator (an independent implementation)."""
    clf = OnnxClassifier.from_card(model_file)
    x = clf.normalize(np.stack([scene(), scene(seed=1)]))
    p, got = Tapped(clf, ["r", "logits"]).run(x)
    ref = ReferenceEvaluator(onnx.load(model_file))
    for name in ("r", "logits"):
        np.testing.assert_allclose(got[name], ref.run([name], {clf.input_name: x})[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["logits"], clf.forward(x), rtol=1e-6)
    np.testing.assert_allclose(p, clf.predict(x), rtol=1e-6)
    with pytest.raises(InfolensError, match="no tensor named 'nope'"):
        Tapped(clf, ["nope"])


class _CountingSession:
    """The classifier's real ONNX Runtime session, counting the rows it is given (padding included)."""

    def __init__(self, session):
        self.session, self.rows, self.calls = session, 0, 0

    def run(self, names, feed):
        self.rows += len(next(iter(feed.values())))
        self.calls += 1
        return self.session.run(names, feed)

    def __getattr__(self, name):
        return getattr(self.session, name)


@pytest.mark.parametrize("method, sampler, samples", [("pmi", "noise", 3), ("pmi", "gray", 5), ("occlusion", None, 2),
                                                      ("rise", None, 30)])
def test_forwards_are_the_rows_the_session_ran(model_file, method, sampler, samples):
    clf = OnnxClassifier.from_card(model_file)
    counting = clf.session = _CountingSession(clf.session)
    ex = Explainer(clf, load_sampler(sampler, K=4) if sampler else None, batch_size=7)
    e = ex.explain(scene(), stride=3, samples=samples, method=method)
    assert e.forwards == counting.rows and counting.calls > 2


def test_forwards_do_not_count_the_padding_of_a_fixed_batch(tmp_path):
    path = onnx_builders.classifier(tmp_path / "fixed.onnx", batch=4, reshape_batch=4)
    clf = OnnxClassifier(path, Preprocessing(mean=list(onnx_builders.MEAN), std=list(onnx_builders.STD), resize="none"))
    assert clf.batch_limit == 4
    counting = clf.session = _CountingSession(clf.session)
    e = Explainer(clf, load_sampler("noise", K=4), batch_size=6).explain(scene(), stride=4, samples=3)
    padded = counting.rows
    assert e.forwards == 1 + e.params["positions"] * 3 < padded and padded % 4 == 0


def test_each_method_takes_its_own_keywords_and_one_image_or_a_list(model_file):
    """Captum's call: `attribute(images, target=…, **its settings)`; RISE takes masks, not a stride; a list of
    images gives a list of explanations, each what the single call gives."""
    clf = OnnxClassifier.from_card(model_file)
    pmi = PMI(clf, load_sampler("noise", K=4))
    one = pmi.attribute(scene(), target="top2", stride=4, samples=2, seed=3)
    both = pmi.attribute([scene(), scene(seed=1)], target="top2", stride=4, samples=2, seed=3)
    assert isinstance(both, list) and len(both) == 2
    np.testing.assert_array_equal(both[0].pmi, one.pmi)
    assert one.params["N"] == 2 and one.forwards == 1 + len(patch_grid(*scene().shape[:2], 4, 4)[0]) * 2
    rise = RISE(clf, grid=3)
    e = rise.attribute(scene(), target=[1], masks=16, seed=2)
    assert e.params["N"] == 16 and e.forwards == 1 + 16
    np.testing.assert_array_equal(e.maps["rise"], Explainer(clf, rise_grid=3).explain(
        scene(), classes=[1], samples=16, seed=2, method="rise").maps["rise"])
    for method, bad in ((rise, {"stride": 4}), (pmi, {"masks": 10})):
        with pytest.raises(InfolensError, match=f"takes .* besides target, not '{next(iter(bad))}'") as err:
            method.attribute(scene(), **bad)
        assert err.value.param == next(iter(bad))
