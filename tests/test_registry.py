"""Methods as classes: one registry feeds the CLI, each method a thin sibling over the marginalization core."""
import numpy as np

from conftest import scene
from infolens import Explainer, OnnxClassifier, load_sampler
from infolens.cli import build_parser
from infolens.explanation import MAPS
from infolens.methods import METHODS, Occlusion, PatchMarginalization
from infolens.samplers import SAMPLERS


def _choices(parser, dest, command):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest).choices


def test_registry_feeds_the_cli_and_declares_maps_and_samplers():
    assert list(_choices(build_parser(), "method", "explain")) == list(METHODS)
    for name, cls in METHODS.items():
        assert set(cls.maps) <= set(MAPS), name
        assert cls.default_sampler is None or cls.default_sampler in SAMPLERS, name


def test_a_new_method_is_one_small_sibling(model_file):
    """What a later method (MIP-IN) needs: a subclass naming its reduction and default sampler, nothing else."""

    class MeanOcclusion(PatchMarginalization):
        name, maps, default_sampler, reduction = "mean-occlusion", ("occlusion",), "mean", "occlusion"

    clf = OnnxClassifier.from_card(model_file)
    e = MeanOcclusion(clf, load_sampler("mean", K=4)).attribute(scene(), classes=[0, 2], stride=4)
    assert e.params["method"] == "mean-occlusion" and e.params["sampler"] == "mean"
    assert e.maps["occlusion"].shape == (2, *scene().shape[:2]) and (e.stderr["occlusion"] == 0).all()
    # the same numbers as the registered occlusion method with the same sampler
    same = Occlusion(clf, load_sampler("mean", K=4)).attribute(scene(), classes=[0, 2], stride=4)
    np.testing.assert_array_equal(e.maps["occlusion"], same.maps["occlusion"])


def test_explainer_uses_each_methods_own_default_sampler(model_file):
    clf = OnnxClassifier.from_card(model_file)
    e = Explainer(clf).explain(scene(), stride=4, method="occlusion")
    assert e.params["sampler"] == "gray" and e.params["K"] == 8
