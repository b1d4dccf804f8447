"""infolens: information-theoretic PMI and IG maps (in bits) for any ONNX image classifier.

>>> from infolens import OnnxClassifier, Explainer, load_sampler
>>> clf = OnnxClassifier.from_card("models/efficientnet_lite0.onnx")
>>> ex = Explainer(clf, sampler=load_sampler("patchsampler", K=8))
>>> e = ex.explain("photo.jpg", classes="top3", stride=8, samples=8, seed=0)
>>> e.pmi.shape, e.ig.shape            # (3, 224, 224), (224, 224) — bits
"""
from importlib.metadata import PackageNotFoundError, version

from .classifier import OnnxClassifier, Preprocessing
from .methods import Explainer
from .errors import InfolensError
from .explanation import Explanation
from .samplers import SAMPLERS, load_sampler

__all__ = ["OnnxClassifier", "Preprocessing", "Explainer", "Explanation", "InfolensError", "load_sampler", "SAMPLERS"]
try:
    __version__ = version("infolens")  # one place: pyproject.toml, through the installed package's metadata
except PackageNotFoundError:  # a source tree used without installing it
    __version__ = "0+unknown"
