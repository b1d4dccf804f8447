"""The models a server serves, by name, from one folder (no upload endpoint), and the request's "params" checked
against the same constraint table as the CLI and the Python API (params.py)."""
from __future__ import annotations

import dataclasses
import os
import threading

from .. import params as P
from ..errors import InfolensError

# request field → API name (the Python API's names; "S" and "N" as the CLI spells them are accepted too)
FIELDS = {"method": "method", "sampler": "sampler", "K": "K", "stride": "stride", "S": "stride", "samples": "samples",
          "N": "samples", "classes": "classes", "seed": "seed", "target_se": "target_se",
          "max_samples": "max_samples", "rise_grid": "rise_grid", "rise_p": "rise_p"}
DEFAULTS = dataclasses.asdict(P.ExplainConfig())


def field_of(param: str, raw) -> str:
    """The request field a parameter's error names: the key the request used for it ("params.S" for stride)."""
    keys = [k for k, v in FIELDS.items() if v == param and isinstance(raw, dict) and k in raw]
    return f"params.{keys[0] if keys else param}" if param in FIELDS.values() else param


def check_params(raw) -> dict:
    """The request's "params" object → the API's names with defaults filled in; an InfolensError whose `param` is
    the JSON field at fault (e.g. "params.K")."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InfolensError("params must be a JSON object", "params")
    out, given = dict(DEFAULTS), {}
    for key, value in raw.items():
        if key not in FIELDS:
            raise InfolensError(f"unknown parameter {key!r}: use {', '.join(sorted(set(FIELDS)))}", f"params.{key}")
        name = FIELDS[key]
        if name in given:
            raise InfolensError(f"{key} and {given[name]} are the same parameter: give one", f"params.{key}")
        given[name] = key
        out[name] = value
    try:
        for name in ("method", "sampler", "K", "stride", "samples", "seed", "target_se", "max_samples", "rise_grid", "rise_p"):
            if out[name] is not None:
                P.check(name, out[name])
        if not isinstance(out["classes"], (str, list, int)) or isinstance(out["classes"], bool):
            raise InfolensError("classes must be \"topK\", \"285,281\", an index or a list of indices", "classes")
    except InfolensError as e:
        raise InfolensError(str(e), field_of(e.param, raw)) from None
    if out["samples"] is None:
        out["samples"] = P.ExplainConfig.default_samples(out["method"])
    return out


class ServedModels:
    """The classifiers in `folder`: every .onnx whose card (same stem, .json) has an "input" section, or that has no
    card and no second suffix (samplers and MIP-IN inverses have cards without "input", or names like
    x.mipin.onnx).  Sessions open on first use and stay open; `placement` keywords go to OnnxClassifier."""

    def __init__(self, folder: str | None = None, **placement):
        from ..catalog import list_cards, models_dir

        self.folder = os.path.abspath(folder or models_dir())
        self.placement = placement
        self.files: dict[str, str] = {}
        self.cards: dict[str, dict] = {}
        for path, card in list_cards(self.folder):
            stem = os.path.splitext(os.path.basename(path))[0]
            if "input" in card or (not card and "." not in stem):
                self.files[stem], self.cards[stem] = path, card
        if not self.files:
            raise InfolensError(f"no classifier models in {self.folder} (.onnx files with a card that has an "
                                "\"input\" section)", "models")
        self._classifiers: dict[str, object] = {}
        self._samplers: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.files)

    def check(self, name: str) -> str:
        if name not in self.files:
            raise InfolensError(f"no model named {name!r}: this server has {', '.join(self.files)}", "model")
        return name

    def describe(self) -> list[dict]:
        from ..catalog import file_sha256

        return [{"name": n, "sha256": file_sha256(p), "card": self.cards[n]} for n, p in self.files.items()]

    def classifier(self, name: str):
        """The OnnxClassifier of `name`, opened once (with its card)."""
        from ..classifier import OnnxClassifier

        with self._lock:
            if name not in self._classifiers:
                self._classifiers[name] = OnnxClassifier.from_card(self.files[self.check(name)], **self.placement)
            return self._classifiers[name]

    def method(self, name: str, p: dict):
        """The attribution method object for a job's checked params on model `name`."""
        from ..methods import Explainer, method_class
        from ..samplers import load_sampler

        clf = self.classifier(name)
        cls = method_class(p["method"])
        sampler = None
        if cls.default_sampler is not None:
            key = (name, p["sampler"] or cls.default_sampler, p["K"])
            with self._lock:
                if key not in self._samplers:
                    try:
                        self._samplers[key] = load_sampler(key[1], K=p["K"], device=clf.placement)
                    except InfolensError as e:
                        if e.param != "sampler_model":
                            raise
                        why = str(e).removesuffix(" (pass your own)")  # the library's advice: a client has no file
                        raise InfolensError(f"this server has no {key[1]} sampler for K={p['K']} ({why}): choose "
                                            "another K or sampler", "K") from None
                sampler = self._samplers[key]
        ex = Explainer(clf, sampler, batch_size=64, rise_grid=p["rise_grid"], rise_p=p["rise_p"],
                       target_se=p["target_se"], max_samples=p["max_samples"])
        return ex.method(p["method"])

    def forwards(self, name: str, p: dict) -> int:
        """The forwards a job will run at most (the budget checks use it): positions × N (adaptive N: × its cap;
        a deterministic sampler: × 1) + 1 for the patch methods, N + 1 for RISE, 1 for MIP-IN and CAM (their tapped
        forward)."""
        from ..methods import CAM, MIPIN, RISE, method_class
        from ..methods.grid import check_grid, patch_grid

        cls = method_class(p["method"])
        if cls in (MIPIN, CAM):
            return 1
        if cls is RISE:
            return p["samples"] + 1
        H, W = self.classifier(name).pre.size
        K = p["K"]
        S = p["stride"] or K
        check_grid(K, S, p["samples"], p["seed"], H, W)
        ys, _ = patch_grid(H, W, K, S)
        sampler = self.method(name, p).sampler
        if sampler.deterministic:
            return len(ys) + 1
        n = p["samples"]
        if p["target_se"] is not None:
            n = max(n, p["max_samples"] or 8 * n)
        return len(ys) * n + 1
