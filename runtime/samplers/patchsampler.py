"""The learned PatchSampler (Yi et al.) as an ONNX file with the interface of DESIGN §3: both heads, optional stages.

Input `context` uint8 [B, 3K, 3K, 3], the 3K×3K window of the image zero-padded by K (the model ignores the centre
K×K, so raw windows may be passed).  The head is recognised from the output names:

* `categorical`: `probs` float32 [B, K, K, 3, 256]; sub-pixels independent, each drawn by inverse CDF.
* `logistic_mixture`: `patch_logits` [B, S], `pixel_logits` [B, S, K, K, M], `loc`, `log_scale`, `coeff`
  [B, S, K, K, 3, M] (float32, grey levels; coeff channels α, β, γ): a mixture over S patch hypotheses of per-pixel
  mixtures of M discretized logistics with linear channel coupling (the formula in `logistic_mixture_log2prob`).

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

import json
import math
import os

import numpy as np

from .. import kernels
from ..catalog import file_sha256
from ..errors import InfolensError
from . import pad, windows

COUPLINGS = ("pixel", "none")  # categorical head: channels of a pixel share one uniform, or every sub-pixel its own
# The PatchSampler's ONNX interface (DESIGN §3): export/patchsampler.py writes these names, this module reads them.
CONTEXT = "context"  # input: uint8 [B, 3K, 3K, 3], the window around the patch
STAGE = "stage"  # input of a staged graph: int64 [B], the stage of each window
CATEGORICAL_OUTPUT = "probs"  # categorical head: float [B, K, K, 3, 256]
MIXTURE_OUTPUTS = ("patch_logits", "pixel_logits", "loc", "log_scale", "coeff")  # logistic-mixture head
META_STAGES = "stages"  # metadata: the stage of every pixel of the patch, a JSON [K, K] grid
META_FEATURES = "context_features"  # metadata: the ring-only tensor the graph may be cut at
HEADS = ("categorical", "logistic_mixture")
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
        self._read_interface()
        self._split(open_session)
        q = self.stages.ravel()
        self._pixels = [np.flatnonzero(q == t) for t in range(self.T)]  # flat pixel indices of each stage
        self._probe()

    # -- interface ------------------------------------------------------------------------------------------------

    def _bad(self, reason: str) -> InfolensError:
        return InfolensError(f"{self.model_path} is not a PatchSampler: {reason}", "sampler_model")

    def _read_interface(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        # DESIGN names the input `context`; a one-input file with another name is accepted as before
        others = [name for name in inputs if name != STAGE]
        ctx = inputs.get(CONTEXT, inputs[others[0]] if len(others) == 1 else None)
        if ctx is None:
            raise self._bad(f"inputs {', '.join(inputs)}: expected context and optionally stage")
        shape = ctx.shape
        if (ctx.type != "tensor(uint8)" or len(shape) != 4 or not isinstance(shape[1], int) or shape[1] % 3
                or shape[1] != shape[2] or shape[3] != 3):
            raise self._bad(f"input {ctx.name} is {ctx.type} {shape}, expected uint8 [B, 3K, 3K, 3]")
        self.K = K = shape[1] // 3
        self._context = ctx.name
        stage = inputs.get(STAGE)
        if stage is not None and (stage.type != "tensor(int64)" or len(stage.shape) != 1):
            raise self._bad(f"input stage is {stage.type} {stage.shape}, expected int64 [B]")
        self._stage_input = stage is not None

        meta = self.session.get_modelmeta().custom_metadata_map.get(META_STAGES)
        if meta is None:
            if stage is not None:
                raise self._bad("it has a stage input but no 'stages' metadata (the K×K grid of stage indices)")
            self.stages = np.zeros((K, K), np.int64)
        else:
            self.stages = self._parse_stages(meta)
        self.T = int(self.stages.max()) + 1
        if self.T > 1 and stage is None:
            raise self._bad(f"its 'stages' metadata has T={self.T} stages but the model has no stage input")

        outputs = {o.name: o for o in self.session.get_outputs()}
        mixture = [n for n in MIXTURE_OUTPUTS if n in outputs]
        if CATEGORICAL_OUTPUT in outputs and not mixture:
            self.head = "categorical"
            expected = {CATEGORICAL_OUTPUT: ["B", K, K, 3, 256]}
        elif len(mixture) == len(MIXTURE_OUTPUTS) and CATEGORICAL_OUTPUT not in outputs:
            self.head = "logistic_mixture"
            expected = {"patch_logits": ["B", "S"], "pixel_logits": ["B", "S", K, K, "M"],
                        **{n: ["B", "S", K, K, 3, "M"] for n in ("loc", "log_scale", "coeff")}}
        else:
            raise self._bad(f"outputs {', '.join(outputs)}: expected probs (categorical head) or "
                            f"{', '.join(MIXTURE_OUTPUTS)} (logistic_mixture head)")
        for name, dims in expected.items():
            o = outputs[name]
            declared = o.shape
            if o.type != "tensor(float)" or (isinstance(declared, list) and (
                    len(declared) != len(dims) or any(isinstance(d, int) and isinstance(e, int) and d != e
                                                      for d, e in zip(declared, dims)))):
                raise self._bad(f"output {name} is {o.type} {declared}, expected float32 "
                                f"[{', '.join(map(str, dims))}]")
        self._expected = expected
        self._names = list(expected)

    def _split(self, open_session) -> None:
        """Sessions for the two halves of a split graph (module docstring), or None when the file is not split."""
        self.encoder = self.head_session = None
        self.features_name = self.session.get_modelmeta().custom_metadata_map.get(META_FEATURES)
        if self.features_name is None:
            return
        try:
            self.encoder, self.head_session = (open_session(part) for part in self._split_parts())
        except Exception as e:
            raise self._bad(f"its graph cannot be cut at the 'context_features' tensor {self.features_name!r} "
                            f"into a context-only encoder and the rest: {str(e).splitlines()[0]}") from None

    def _split_parts(self) -> list[bytes]:
        """The encoder's and the rest's serialized graphs.  Cut once with onnx.utils.Extractor and kept in the cache
        folder under the file's sha256, so that later runs skip importing the onnx package (0.8 s of start-up);
        `_probe_split` checks the halves against the whole graph on every load, cached or not."""
        from ..catalog import cache_dir

        folder = cache_dir("patchsampler")
        paths = [os.path.join(folder, f"{file_sha256(self.model_path)}.{part}.onnx") for part in ("encoder", "rest")]
        if all(os.path.isfile(p) for p in paths):
            parts = []
            for p in paths:
                with open(p, "rb") as f:
                    parts.append(f.read())
            return parts
        import onnx.utils

        proto = onnx.load(self.model_path)
        if self.features_name not in {v.name for v in proto.graph.value_info}:
            proto = onnx.shape_inference.infer_shapes(proto)
        inputs = [self._context] + ([STAGE] if self._stage_input else [])
        parts = [onnx.utils.Extractor(proto).extract_model(i, o).SerializeToString() for i, o in (
            ([self._context], [self.features_name]), ([self.features_name, *inputs], self._names))]
        try:
            os.makedirs(folder, exist_ok=True)
            for path, part in zip(paths, parts):
                with open(path + f".{os.getpid()}.tmp", "wb") as f:
                    f.write(part)
                os.replace(path + f".{os.getpid()}.tmp", path)
        except OSError:  # a read-only home: cut again next time
            pass
        return parts

    def _parse_stages(self, text: str) -> np.ndarray:
        K = self.K
        try:
            grid = json.loads(text)
        except ValueError:
            raise self._bad(f"its 'stages' metadata is not JSON: {text[:40]!r}") from None
        if not (isinstance(grid, list) and len(grid) == K
                and all(isinstance(row, list) and len(row) == K for row in grid)
                and all(isinstance(v, int) and not isinstance(v, bool) for row in grid for v in row)):
            raise self._bad(f"its 'stages' metadata must be a {K}×{K} grid (list of lists) of integer stage "
                            f"indices, got {text[:40]!r}")
        stages = np.array(grid, np.int64)
        used = np.unique(stages)
        if used[0] != 0 or len(used) != used[-1] + 1:
            raise self._bad(f"its 'stages' metadata must use every stage 0..T−1 and no other, got "
                            f"{', '.join(map(str, used))}")
        return stages

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
        for name, dims in self._expected.items():
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
            for name in self._names:
                if not np.allclose(whole[name], parts[name], rtol=1e-5, atol=1e-4):
                    raise self._bad(f"cut at its 'context_features' tensor {self.features_name!r}, its output "
                                    f"{name} differs from the whole graph's at stage {t}")

    def _features(self, contexts: np.ndarray) -> np.ndarray | None:
        """The split graph's `context_features` for uint8 contexts [B, 3K, 3K, 3]; None when the file is not split."""
        if self.encoder is None:
            return None
        return self.encoder.run([self.features_name], {self._context: contexts})[0]

    def _run(self, contexts: np.ndarray, stage: int, features: np.ndarray | None = None) -> dict:
        """The model's outputs (name → float32 array) for uint8 contexts [B, 3K, 3K, 3] at `stage`; with `features`
        (`_features` of these contexts, B rows) through the split graph's second half, else the whole graph."""
        feed = {self._context: contexts}
        if self._stage_input:
            feed[STAGE] = np.full(len(contexts), stage, np.int64)
        if features is None:
            return dict(zip(self._names, self.session.run(self._names, feed)))
        feed[self.features_name] = features
        return dict(zip(self._names, self.head_session.run(self._names, feed)))

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
            _softmax(out["patch_logits"], -1), _softmax(stage_pixels(out["pixel_logits"].reshape(B, S, K2, M), 2), -1),
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
             "sampler_sha256": file_sha256(self.model_path), "head": self.head, "stages": self.T, "split": self.encoder is not None}
        if self.head == "categorical":
            d["coupling"] = self.coupling
        return d


# -- the logistic-mixture density ----------------------------------------------------------------------------------


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    """float64 softmax, C-contiguous (the kernels' input)."""
    x = np.asarray(logits, np.float64)
    e = np.exp(x - x.max(axis, keepdims=True))
    return np.ascontiguousarray(e / e.sum(axis, keepdims=True))


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # all −inf stays −inf, without inf − inf
    return (m + np.log(np.exp(x - m).sum(axis, keepdims=True))).squeeze(axis)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _log_bin(v: np.ndarray, mu: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    """Natural log of L(v; μ, σ): the logistic mass of [v − ½, v + ½] (of (−∞, ½] at v = 0, [254.5, ∞) at 255).

    With a = (v − ½ − μ)/σ and b = (v + ½ − μ)/σ, exactly F(b) − F(a) = F(b)·(1 − F(a))·(1 − e^(a−b)), where
    1 − F(a) is the upper tail sigmoid(−a): a product of a lower tail, an upper tail and 1 − e^(−1/σ), each taken
    in log space, so no bin cancels to 0 however far it lies in either tail.
    """
    inv = np.exp(-log_scale)
    lo, hi = v <= 0, v >= 255
    a = np.where(lo, -np.inf, (v - 0.5 - mu) * inv)
    b = np.where(hi, np.inf, (v + 0.5 - mu) * inv)
    a_minus_b = np.where(lo | hi, -np.inf, -inv)
    return _log_sigmoid(b) + _log_sigmoid(-a) + np.log(-np.expm1(a_minus_b))


def logistic_mixture_log2prob(outputs: dict, patches: np.ndarray, select: np.ndarray | None = None) -> np.ndarray:
    """float64 [B]: log2 p(x) of the selected pixels of each patch under logistic-mixture outputs (DESIGN §3), bits.

        p(x) = Σ_s π_s · Π_{ij selected} Σ_m w_{s,ij,m} · L(x_R; μ_R, σ_R) · L(x_G; μ_G, σ_G) · L(x_B; μ_B, σ_B)
        π = softmax(patch_logits), w = softmax(pixel_logits[s, i, j]), σ = exp(log_scale),
        μ_R = loc_R, μ_G = loc_G + α·x_R, μ_B = loc_B + β·x_R + γ·x_G

    outputs: "patch_logits" [B, S], "pixel_logits" [B, S, K, K, M], "loc", "log_scale", "coeff" [B, S, K, K, 3, M]
    (any float dtype; grey levels; coeff channels α, β, γ).  patches: uint8 [B, K, K, 3], the true pixel values.
    select: bool [K, K], the pixels scored (one stage's), or None for all.  Computed in float64 with logsumexp over
    components and hypotheses and the tail-stable bin masses of `_log_bin`.
    """
    patch_logits = np.asarray(outputs["patch_logits"], np.float64)
    B, S = patch_logits.shape
    K = patches.shape[1]
    M = outputs["pixel_logits"].shape[-1]
    q = np.flatnonzero(np.ones((K, K), bool) if select is None else select)

    def params(name):
        return np.asarray(outputs[name], np.float64).reshape(B, S, K * K, 3, M)[:, :, q]  # [B, S, Q, 3, M]

    loc, log_scale, coeff = params("loc"), params("log_scale"), params("coeff")
    logits = np.asarray(outputs["pixel_logits"], np.float64).reshape(B, S, K * K, M)[:, :, q]
    log_w = logits - _logsumexp(logits, -1)[..., None]
    x = patches.reshape(B, 1, K * K, 3, 1)[:, :, q].astype(np.float64)  # [B, 1, Q, 3, 1]
    r, g, b = x[..., 0, :], x[..., 1, :], x[..., 2, :]
    mu = (loc[..., 0, :], loc[..., 1, :] + coeff[..., 0, :] * r,
          loc[..., 2, :] + coeff[..., 1, :] * r + coeff[..., 2, :] * g)
    per_component = log_w + sum(_log_bin(v, m, log_scale[..., c, :]) for c, (v, m) in enumerate(zip((r, g, b), mu)))
    per_hypothesis = _logsumexp(per_component, -1).sum(-1)  # [B, S]
    log_pi = patch_logits - _logsumexp(patch_logits, -1)[..., None]
    return _logsumexp(log_pi + per_hypothesis, -1) / math.log(2)
