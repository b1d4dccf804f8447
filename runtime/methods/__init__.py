"""Attribution methods, one class per method, all sharing `attribute(image, classes=…) -> Explanation`
(methods/base.py).  The patch-marginalization core (methods/marginalize.py) owns the grid, the scheduling, the RNG
streams and the streaming reduction; PMI/IG, PDA and occlusion only name their reduction and default sampler.
METHODS, the registry, feeds the CLI's choices, the suite and (later) the server; a new method (MIP-IN) is one
more sibling file and one more entry."""
from __future__ import annotations

from .. import params
from ..classifier import OnnxClassifier
from ..errors import InfolensError
from ..explanation import Explanation
from ..samplers import Sampler
from .base import Attribution, resolve_classes
from .cam import CAM
from .grid import patch_grid
from .marginalize import PatchMarginalization, Shard
from .mipin import MIPIN
from .occlusion import Occlusion
from .pda import PDA
from .pmi import PMI
from .rise import RISE

METHODS: dict[str, type[Attribution]] = {"pmi": PMI, "ig": PMI, "pda": PDA, "occlusion": Occlusion, "rise": RISE,
                                         "mipin": MIPIN, "cam": CAM}


def method_class(name: str) -> type[Attribution]:
    """The class registered under `name` (InfolensError naming the parameter `method` otherwise)."""
    return METHODS[params.check("method", name)]


class Explainer:
    """One classifier and one sampler, any method by name: `explain(image, …, method="pmi")`.

    classifier : OnnxClassifier.  sampler : a Sampler for the patch methods (its K is the patch size); default: the
    method's own (`default_sampler`) at `K` (default `ExplainConfig.K`, the CLI's -K).  batch_size : classifier images per call.  progress : a tqdm bar.
    rise_grid, rise_p : RISE's mask grid and keep probability.  target_se, max_samples : adaptive N for the patch
    methods (PatchMarginalization).  inverse : MIP-IN's fitted inverse (default: mipin.default_inverse).
    """

    def __init__(self, classifier: OnnxClassifier, sampler: Sampler | None = None, batch_size: int = 64,
                 progress: bool = False, rise_grid: int = 7, rise_p: float = 0.5, target_se: float | None = None,
                 max_samples: int | None = None, inverse: str | None = None, K: int | None = None):
        params.check("batch_size", batch_size)
        self.classifier, self.sampler, self.batch_size, self.progress = classifier, sampler, batch_size, progress
        self.K = K
        self.rise_grid, self.rise_p = rise_grid, rise_p
        self.target_se, self.max_samples = target_se, max_samples
        self.inverse = inverse
        self._opened = {}  # the methods that are costly to open (MIP-IN, CAM), opened once

    def method(self, name: str = "pmi", also: tuple = ()) -> Attribution:
        """The method object `name` (a METHODS key) with this explainer's classifier, sampler and settings: a
        registry lookup, each class taking what it needs (`Attribution.from_explainer`).  also: other
        patch-marginalization methods whose maps the same forwards give (PatchMarginalization)."""
        cls = method_class(name)
        if also:
            if not issubclass(cls, PatchMarginalization):
                raise InfolensError(f"also: {name} does not marginalize patches, so no other method can share its "
                                    "forwards", "also")
            return cls.from_explainer(self, also)
        if not cls.costly_to_open:
            return cls.from_explainer(self)
        if cls not in self._opened:
            self._opened[cls] = cls.from_explainer(self)
        return self._opened[cls]

    def explain(self, image, classes="top3", stride: int | None = None, samples: int = 8, seed: int = 0,
                source: str | None = None, method: str = "pmi", notes: list[str] | None = None,
                also: tuple = ()) -> Explanation:
        """One image by the method `name` ("ig" is PMI: one run gives both maps) with the shared settings, each
        method reading those it has (`Attribution.explain`: RISE's masks from `samples`; MIP-IN and CAM none);
        `source` and `notes` are recorded (the CLI's bookkeeping).  also: other patch-marginalization methods
        whose maps come from the same forwards (e.g. method "pmi" with the gaussian sampler, also ("pda",): PMI, IG
        and PDA's woe from one run)."""
        return self.method(method, also).explain(image, classes, stride, samples, seed, source, notes)

    # ---- one explanation split by patch positions (DESIGN §12): any engine runs the shards, `merge` joins them ----
    def positions(self, image, stride: int | None = None, method: str = "pmi") -> int:
        """How many patch positions an explanation of `image` has (shards index them 0..positions−1); no forward."""
        m = self._splittable(method)
        return m.positions(self.classifier.load_image(image), stride)

    def explain_shard(self, image, positions, classes="top3", stride: int | None = None, samples: int = 8,
                      seed: int = 0, method: str = "pmi") -> Shard:
        """The per-position results of `positions` (grid indices) of the explanation `explain` would give with the
        same arguments; a shard's forwards include the p(Y|x) forward each shard runs (its plan), so that the
        merged explanation counts every forward that was run."""
        m = self._splittable(method)
        plan = m.plan(image, classes, stride, samples, seed)
        shard = m.run(plan, positions)
        shard.forwards += plan.forwards
        return shard

    def merge(self, image, shards: list[Shard], classes="top3", stride: int | None = None, samples: int = 8,
              seed: int = 0, source: str | None = None, method: str = "pmi",
              notes: list[str] | None = None) -> Explanation:
        """The Explanation from shards covering every position once: exactly `explain`'s maps."""
        m = self._splittable(method)
        return m.merge(m.plan(image, classes, stride, samples, seed, source, notes), shards)

    def _splittable(self, method: str) -> PatchMarginalization:
        m = self.method(method)
        if not isinstance(m, PatchMarginalization):
            raise InfolensError(f"method {method} is not a patch marginalization: it cannot be split by positions",
                                "method")
        return m


__all__ = ["METHODS", "Attribution", "PatchMarginalization", "Shard", "PMI", "PDA", "Occlusion", "RISE", "MIPIN", "CAM", "Explainer",
           "method_class", "patch_grid", "resolve_classes"]
