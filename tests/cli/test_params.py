"""Parameters declared once (infolens.params): the library names parameters, the CLI names flags, same message."""
import argparse

import numpy as np
import pytest

from conftest import run_cli, scene
from infolens import Explainer, InfolensError, OnnxClassifier, load_sampler, params
from infolens.cli import build_parser


def _cli_flags() -> set[str]:
    flags, todo = set(), [build_parser()]
    while todo:
        parser = todo.pop()
        for action in parser._actions:
            flags.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                todo += list(action.choices.values())
    return flags


@pytest.mark.slow
def test_every_declared_flag_is_a_cli_flag():
    missing = {name: p.flag for name, p in params.PARAMS.items() if p.flag not in _cli_flags()}
    assert not missing


@pytest.mark.parametrize("name, good, bad", [
    ("K", [1, np.int64(16)], [0, -3, 2.0, True, "8"]),
    ("seed", [0, 2**64 - 1, np.uint64(7)], [-1, 2**64, 0.5]),
    ("rise_p", [1, 0.5, np.float32(0.25)], [0, 0.0, 1.5, "x"]),
    ("device", ["cpu", "cuda"], ["gpu", None]),
])
def test_check_accepts_and_refuses(name, good, bad):
    for v in good:
        assert params.check(name, v) is v
    for v in bad:
        with pytest.raises(InfolensError) as info:
            params.check(name, v)
        assert info.value.param == name and str(info.value).startswith(f"{name} must be ")


def test_library_errors_name_the_parameter_and_no_flag(model_file):
    clf = OnnxClassifier.from_card(model_file)
    ex = Explainer(clf, load_sampler("gray", K=4))
    cases = {
        "stride": lambda: ex.explain(scene(), stride=0, samples=1),
        "samples": lambda: ex.explain(scene(), stride=4, samples=0),
        "seed": lambda: ex.explain(scene(), stride=4, samples=1, seed=-1),
        "classes": lambda: ex.explain(scene(), classes="top0", stride=4, samples=1),
        "batch_size": lambda: Explainer(clf, load_sampler("gray", K=4), batch_size=0),
        "K": lambda: load_sampler("gray", K=0),
        "sampler": lambda: load_sampler("magic", K=4),
        "rise_p": lambda: Explainer(clf, rise_p=0.0).explain(scene(), method="rise", samples=4),
    }
    for name, call in cases.items():
        with pytest.raises(InfolensError) as info:
            call()
        message = str(info.value)
        assert info.value.param == name, (name, message)
        assert "--" not in message and f"({params.flag(name)})" not in message, message


def test_cli_gives_the_library_message_plus_the_flag(tmp_path, image_file, model_file):
    clf = OnnxClassifier.from_card(model_file)
    with pytest.raises(InfolensError) as info:
        Explainer(clf, load_sampler("gray", K=4)).explain(scene(), stride=0, samples=1)
    r = run_cli("explain", image_file, "--model", model_file, "--out", tmp_path, "-K", "4", "-S", "0", "--quiet",
                "--sampler", "gray")
    assert r.returncode == 2
    assert r.stderr.strip() == f"infolens: error: {image_file}: {info.value} (-S)"
