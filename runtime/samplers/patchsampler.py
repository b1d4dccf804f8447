"""The learned PatchSampler (Yi et al.) as an ONNX file with the interface of DESIGN §3: both heads, optional stages.

Input `context` uint8 [B, 3K, 3K, 3], the 3K×3K window of the image zero-padded by K (the model ignores the centre
K×K, so raw windows may be passed).  The head is recognised from the output names:

* `categorical`: `probs` float32 [B, K, K, 3, 256]; sub-pixels independent, each drawn by inverse CDF.
* `logistic_mixture`: `patch_logits` [B, S], `pixel_logits` [B, S, K, K, M], `loc`, `log_scale`, `coeff`
  [B, S, K, K, 3, M] (float32, grey levels; coeff channels α, β, γ): a mixture over S patch hypotheses of per-pixel
  mixtures of M discretized logistics with linear channel coupling (the formula in `mixture.logistic_mixture_log2prob`).

Stages (either head): an int64 input `stage` [B] and the ONNX metadata `stages`, a JSON K×K grid of stage indices
0..T−1.  The call with stage t sees the true centre pixels of stages < t and scores the pixels of stage t.  Without
the input, T = 1.

Split graph (optional): the ONNX metadata `context_features` names an intermediate tensor computed from the ring
alone (not the centre, not the stage).  The file is then run as two graphs cut there (onnx.utils.Extractor): the
encoder once per position, the rest once per stage and sample with the encoder's output repeated — the same
outputs as the whole graph (checked on load), at a fraction of the cost when the encoder is the heavy part.

Uniform layout (what each position's counter-based stream rngs[p] is consumed for, in this order, so a position's
in-fills never depend on the batch or on the other positions of the call):

* categorical: rng.random((n, K·K), float32) with coupling "pixel" (a pixel's three channels share one uniform),
  rng.random((n, K·K·3), float32) with "none"; pixel index q = i·K + j, channel innermost.
* logistic_mixture: rng.random((n, T + 4·K·K)) float64; per sample: T hypothesis uniforms (one per stage),
  K·K component uniforms (pixel q at T + q), 3·K·K value uniforms (pixel q, channel c at T + K·K + 3q + c).
  A value uniform u becomes the logistic quantile log(u/(1−u)) after clipping u to [1e-12, 1 − 1e-12].
"""
from __future__ import annotations

import os

import numpy as np

from .. import kernels
from ..catalog import file_sha256
from ..errors import InfolensError
from . import pad, windows
from .interface import CATEGORICAL_OUTPUT, STAGE, read_interface, split_parts
from .mixture import logistic_mixture_log2prob, softmax

COUPLINGS = ("pixel", "none")  # categorical head: channels of a pixel share one uniform, or every sub-pixel its own
PROB_FLOOR = 1e-12  # categorical scores: as export/patchsampler.nll_bits, so one zero cannot make a score infinite
U_CLIP = 1e-12  # value uniforms are kept this far from 0 and 1, so every logistic quantile is finite (|z| < 27.7)

class PatchSampler:
    """An ONNX PatchSampler: draws in-fills (`sample`) and scores true patches (`log2prob`).

    Attributes: `head` ("categorical" or "logistic_mixture"), `K`, `stages` (int64 [K, K] stage of every patch
    pixel), `T` (number of stages), `S` and `M` (hypotheses and components; 1 and 256 levels for categorical),
    `coupling` (categorical head only: "pixel" or "none"; the logistic-mixture head couples the channels itself).
    Sampling runs the model once per position for stage 0 (shared by the n samples), then once per sample for each
    later stage, with that sample's drawn pixels of the earlier stages written into the context's centre; a split
    graph's encoder (`encoder`, None when not split) runs once per position for all of them.
    """

    name = "patchsampler"
    deterministic = False

    def __init__(self, model_path: str, device="cpu", coupling: str = "pixel"):
        from ..backends import sessions

        self.model_path = os.fspath(model_path)
        if not os.path.isfile(self.model_path):
            raise InfolensError(f"PatchSampler model not found: {self.model_path}", "sampler_model")
        if coupling not in COUPLINGS:
            raise InfolensError(f"unknown coupling {coupling!r}: choose {' or '.join(COUPLINGS)}", "coupling")
        self.coupling = coupling
        where = sessions.placement(device).helper()

        def open_session(source):  # a path or a serialized model
            return where.open(source)

        try:
            self.session = open_session(self.model_path)
        except InfolensError:
            raise
        except Exception as e:
            raise InfolensError(f"cannot load PatchSampler {self.model_path}: {str(e).splitlines()[0]}",
                                "sampler_model") from None
        self.sha256 = file_sha256(self.model_path)  # the bytes loaded: a file replaced later must not change the record
        self.interface = read_interface(self.session, self._bad)
        i = self.interface
        self.K, self.stages, self.T, self.head = i.K, i.stages, i.T, i.head
        self._split(open_session)
        q = self.stages.ravel()
        self._pixels = [np.flatnonzero(q == t) for t in range(self.T)]  # flat pixel indices of each stage
        self._probe()

    # -- interface ------------------------------------------------------------------------------------------------

    def _bad(self, reason: str) -> InfolensError:
        return InfolensError(f"{self.model_path} is not a PatchSampler: {reason}", "sampler_model")

    def _split(self, open_session) -> None:
        """Sessions for the two halves of a split graph (module docstring), or None when the file is not split."""
        self.encoder = self.head_session = None
        self.features_name = self.interface.features
        if self.features_name is None:
            return
        try:
            self.encoder, self.head_session = (open_session(part) for part in split_parts(self.model_path,
                                                                                           self.interface))
        except Exception as e:
            raise self._bad(f"its graph cannot be cut at the 'context_features' tensor {self.features_name!r} "
                            f"into a context-only encoder and the rest: {str(e).splitlines()[0]}") from None

    def _probe(self) -> None:
        """One call on zero contexts: checks the actual output shapes and reads S and M.  A split graph must give the
        whole graph's outputs, at every stage, with its encoder blind to the centre."""
        K = self.K
        try:
            out = self._run(np.zeros((2, 3 * K, 3 * K, 3), np.uint8), 0)
        except Exception as e:  # onnxruntime raises its own types; make them one line
            raise self._bad(f"it fails on a zero context: {str(e).splitlines()[0]}") from None
        if self.encoder is not None:
            try:
                self._probe_split()
            except InfolensError:
                raise
            except Exception as e:
                raise self._bad(f"its graph cut at the 'context_features' tensor {self.features_name!r} fails on a "
                                f"random context: {str(e).splitlines()[0]}") from None
        if self.head == "categorical":
            self.S, self.M = 1, 256
        else:
            shape = out["patch_logits"].shape
            self.S = shape[1] if len(shape) == 2 else 0
            pl = out["pixel_logits"].shape
            self.M = pl[-1] if len(pl) == 5 else 0
        sizes = {"S": self.S, "M": self.M, "B": 2}
        for name, dims in self.interface.expected.items():
            want = tuple(sizes.get(d, d) for d in dims)
            a = out[name]
            if a.shape != want or a.dtype != np.float32 or min(want) < 1:
                raise self._bad(f"output {name} has shape {list(a.shape)} ({a.dtype}) for a batch of 2, expected "
                                f"float32 [{', '.join(map(str, dims))}] = {list(want)}")

    def _probe_split(self) -> None:
        K = self.K
        contexts = np.random.default_rng(0).integers(0, 256, (2, 3 * K, 3 * K, 3), dtype=np.uint8)
        features = self._features(contexts)
        other = contexts.copy()
        other[:, K:2 * K, K:2 * K] = 255 - other[:, K:2 * K, K:2 * K]
        if not np.array_equal(features, self._features(other)):
            raise self._bad(f"its 'context_features' tensor {self.features_name!r} changes with the hidden centre")
        for t in range(self.T):
            whole = self._run(contexts, t)
            parts = self._run(contexts, t, features)
            for name in self.interface.names:
                if not np.allclose(whole[name], parts[name], rtol=1e-5, atol=1e-4):
                    raise self._bad(f"cut at its 'context_features' tensor {self.features_name!r}, its output "
                                    f"{name} differs from the whole graph's at stage {t}")

    def _features(self, contexts: np.ndarray) -> np.ndarray | None:
        """The split graph's `context_features` for uint8 contexts [B, 3K, 3K, 3]; None when the file is not split."""
        if self.encoder is None:
            return None
        return self.encoder.run([self.features_name], {self.interface.context: contexts})[0]

    def _run(self, contexts: np.ndarray, stage: int, features: np.ndarray | None = None) -> dict:
        """The model's outputs (name → float32 array) for uint8 contexts [B, 3K, 3K, 3] at `stage`; with `features`
        (`_features` of these contexts, B rows) through the split graph's second half, else the whole graph."""
        feed = {self.interface.context: contexts}
        if self.interface.stage_input:
            feed[STAGE] = np.full(len(contexts), stage, np.int64)
        if features is None:
            return dict(zip(self.interface.names, self.session.run(self.interface.names, feed)))
        feed[self.features_name] = features
        return dict(zip(self.interface.names, self.head_session.run(self.interface.names, feed)))

    # -- sampling -------------------------------------------------------------------------------------------------

    def probs(self, image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """float32 [P, K, K, 3, 256]: the distributions of the patches at (ys, xs) (one-stage categorical only)."""
        if self.head != "categorical" or self.T != 1:
            raise InfolensError(f"PatchSampler.probs needs a one-stage categorical model; {self.model_path} has "
                                f"the {self.head} head with T={self.T}")
        return self._run(windows(pad(image, self.K), ys, xs, 3 * self.K), 0)[CATEGORICAL_OUTPUT]

    def _uniforms(self, rngs, n: int, start: int = 0) -> np.ndarray:
        """The layout of the module docstring: [P, n, D] for samples start..start+n−1, float32 (categorical) or
        float64 (logistic_mixture)."""
        K2, m = self.K * self.K, start + n
        if self.head == "logistic_mixture":
            return np.stack([rng.random((m, self.T + 4 * K2))[start:] for rng in rngs])
        if self.coupling == "pixel":
            # One uniform per pixel for all three channels: each sub-pixel keeps the model's marginal exactly, but the
            # channels move together (comonotone), as they do in photos, instead of speckling in random colours.
            return np.stack([rng.random((m, K2), dtype=np.float32)[start:] for rng in rngs]).repeat(3, axis=2)
        return np.stack([rng.random((m, K2 * 3), dtype=np.float32)[start:] for rng in rngs])

    def _draw(self, out: dict, t: int, u: np.ndarray) -> np.ndarray:
        """uint8 [B, N, Q, 3]: draws of the Q pixels of stage t from the model outputs of B rows, with uniforms
        u [B, N, D] laid out as `_uniforms`."""
        q = self._pixels[t]
        B, N, Q, K2 = u.shape[0], u.shape[1], len(q), self.K * self.K

        def stage_pixels(a, axis):  # a with its pixel axis cut to this stage's pixels (a view for one stage)
            return a if Q == K2 else np.take(a, q, axis)

        if self.head == "categorical":
            probs = stage_pixels(out[CATEGORICAL_OUTPUT].reshape(B, K2, 3, 256), 1).reshape(B, Q * 3, 256)
            uq = stage_pixels(u.reshape(B, N, K2, 3), 2).reshape(B, N, Q * 3)
            return kernels.sample_categorical(np.ascontiguousarray(probs), np.ascontiguousarray(uq)).reshape(
                B, N, Q, 3)
        S, M, T = self.S, self.M, self.T

        def params(name):
            return np.ascontiguousarray(stage_pixels(out[name].reshape(B, S, K2, 3, M), 2), np.float64)

        v = np.clip(stage_pixels(u[:, :, T + K2:].reshape(B, N, K2, 3), 2), U_CLIP, 1 - U_CLIP)
        return kernels.sample_logistic_mixture(
            softmax(out["patch_logits"], -1), softmax(stage_pixels(out["pixel_logits"].reshape(B, S, K2, M), 2), -1),
            params("loc"), np.exp(params("log_scale")), params("coeff"), np.ascontiguousarray(u[:, :, t]),
            np.ascontiguousarray(u[:, :, T + q]), np.ascontiguousarray(np.log(v / (1 - v))))

    def sample(self, image, ys, xs, n, rngs, start=0):
        """uint8 [P, n, K, K, 3] in-fills start..start+n−1 of the patches at (ys[p], xs[p]), drawn with rngs[p]
        (Sampler protocol)."""
        K, P, K2 = self.K, len(ys), self.K * self.K
        contexts = windows(pad(image, K), ys, xs, 3 * K)
        u = self._uniforms(rngs, n, start)
        fills = np.empty((P, n, K2, 3), np.uint8)
        try:
            features = self._features(contexts)
            fills[:, :, self._pixels[0]] = self._draw(self._run(contexts, 0, features), 0, u)
            if self.T > 1:
                # From stage 1 on the context differs per sample: one row per (position, sample).
                rows = np.repeat(contexts, n, axis=0)
                features = None if features is None else np.repeat(features, n, axis=0)
                flat, u = fills.reshape(P * n, K2, 3), u.reshape(P * n, 1, -1)
                for t in range(1, self.T):
                    done = self._pixels[t - 1]
                    rows[:, K + done // K, K + done % K] = flat[:, done]
                    flat[:, self._pixels[t]] = self._draw(self._run(rows, t, features), t, u)[:, 0]
        except InfolensError:
            raise
        except ValueError as e:  # a kernel's check: the model produced unusable parameters
            raise InfolensError(f"PatchSampler {self.model_path} produced invalid parameters: {e}",
                                "sampler_model") from None
        return fills.reshape(P, n, K, K, 3)

    # -- scoring --------------------------------------------------------------------------------------------------

    def log2prob(self, windows: np.ndarray, batch: int = 256) -> np.ndarray:
        """float64 [B]: log2 p(true centre | context) of each window, in bits (≤ 0), all T stages chained.

        windows: uint8 [B, 3K, 3K, 3], each the 3K×3K window of an image zero-padded by K, centre included; every
        stage is run on the true centre (the model sees only the pixels of earlier stages).  `batch` windows per
        model call.  Logistic mixture: `logistic_mixture_log2prob` per stage, summed.  Categorical: the sum of
        log2 of the probabilities of the true sub-pixels, each floored at 1e-12.  NLL in bits per sub-pixel is
        −log2prob / (3K²).
        """
        K = self.K
        if not (isinstance(windows, np.ndarray) and windows.dtype == np.uint8 and windows.ndim == 4
                and windows.shape[1:] == (3 * K, 3 * K, 3)):
            raise InfolensError(f"windows must be uint8 [B, {3 * K}, {3 * K}, 3], got "
                                f"{getattr(windows, 'dtype', type(windows).__name__)} {np.shape(windows)}")
        if batch < 1:
            raise InfolensError(f"batch must be at least 1, got {batch}")
        bits = np.zeros(len(windows))
        for i in range(0, len(windows), batch):
            w = np.ascontiguousarray(windows[i:i + batch])
            centre, features = w[:, K:2 * K, K:2 * K], self._features(w)
            for t in range(self.T):
                out, select = self._run(w, t, features), self.stages == t
                if self.head == "categorical":
                    p = np.take_along_axis(out[CATEGORICAL_OUTPUT], centre[..., None].astype(np.intp), axis=-1)[..., 0]
                    logs = np.log2(np.maximum(p.astype(np.float64), PROB_FLOOR))
                    bits[i:i + len(w)] += logs[:, select].sum((1, 2))
                else:
                    bits[i:i + len(w)] += logistic_mixture_log2prob(out, centre, select)
        return bits

    def describe(self):
        d = {"sampler": self.name, "K": self.K, "sampler_model": os.path.abspath(self.model_path),
             "sampler_sha256": self.sha256, "head": self.head, "stages": self.T, "split": self.encoder is not None}
        if self.head == "categorical":
            d["coupling"] = self.coupling
        return d
