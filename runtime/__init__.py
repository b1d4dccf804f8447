"""infolens: information-theoretic PMI and IG maps (in bits) for any ONNX image classifier.

>>> from infolens import OnnxClassifier, Explainer, load_sampler
>>> clf = OnnxClassifier.from_card("models/efficientnet_lite0.onnx")
>>> ex = Explainer(clf, sampler=load_sampler("patchsampler", K=8))
>>> e = ex.explain("photo.jpg", classes="top3", stride=8, samples=8, seed=0)
>>> e.pmi.shape, e.ig.shape            # (3, 224, 224), (224, 224) — bits
"""
from .classifier import OnnxClassifier, Preprocessing
from .methods import Explainer
from .errors import InfolensError
from .explanation import Explanation
from .samplers import SAMPLERS, load_sampler

__all__ = ["OnnxClassifier", "Preprocessing", "Explainer", "Explanation", "InfolensError", "load_sampler", "SAMPLERS"]


def __getattr__(name: str):
    """`__version__`, read when first asked from the installed package's metadata (pyproject.toml is its one
    declaration; importlib.metadata costs 40 ms of start-up otherwise)."""
    if name != "__version__":
        raise AttributeError(f"module 'infolens' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("infolens")
    except PackageNotFoundError:  # a source tree used without installing it
        return "0+unknown"
