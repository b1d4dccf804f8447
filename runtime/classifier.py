"""ONNX classifier adapter: model card, per-pixel affine preprocessing, layout, batching, providers, outputs → probs."""
from __future__ import annotations

import ast
import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from . import graphs, params
from .backends import sessions
from .catalog import DEFAULT_CLASSIFIER, model_file, shipped_names
from .errors import InfolensError
from .images import read_image, rgb_value, to_input_space

_DTYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}
# ops whose outputs are unbounded scores even when a probe happens to land in [0, 1]
_SCORE_OPS = {"Gemm", "MatMul", "Conv", "Add", "Sub", "GlobalAveragePool", "ReduceMean", "AveragePool", "MatMulInteger",
              "QLinearMatMul", "QLinearConv", "Einsum", "BatchNormalization"}
_LABEL_KEYS = ("labels", "classes", "class_names", "names")


@dataclass
class Preprocessing:
    """How a uint8 RGB image becomes the model tensor.

    The image reaches `size` by `resize` (images.to_input_space, with `interpolation`, `pad_value` for letterbox,
    `crop_fraction` for shorter-side-crop); then each pixel v = (pixel[channel_order] * scale - mean) / std per
    model channel (a uint8 model takes the pixels as they are).  A single-channel model (`channels` 1) takes the grey
    level Y = ⌊luma(R, G, B) + 0.5⌋ by the `grayscale` formula (graphs.LUMA), then (Y * scale - mean) / std.
    """

    layout: str = "NCHW"
    size: tuple[int, int] = (224, 224)
    channel_order: str = "RGB"
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    dtype: str = "float32"
    resize: str = "shorter-side-crop"
    interpolation: str = "auto"
    pad_value: tuple[int, int, int] = (0, 0, 0)
    crop_fraction: float = 1.0
    channels: int = 3
    grayscale: str = "bt601"

    def lut(self) -> np.ndarray:
        """[3, 256] table: value of model channel c for pixel value v (dtype of the model input).  A grey model's
        table is the identity: its graph front (graphs.grey_front) computes the grey level and normalizes it."""
        v = np.arange(256, dtype=np.float64)
        if self.dtype == "uint8":
            return np.tile(np.arange(256, dtype=np.uint8), (3, 1))
        if self.channels == 1:
            return np.tile(v.astype(np.float32), (3, 1))
        rows = [(v * self.scale - m) / s for m, s in zip(self.mean, self.std)]
        return np.stack(rows).astype(np.float32)

    def src(self) -> np.ndarray:
        """[3] int64: the RGB channel that feeds each model channel."""
        return np.array(["RGB".index(ch) for ch in self.channel_order], dtype=np.int64)

    def used(self) -> dict:
        """The values this model and resize mode actually use (what an explanation records), JSON-ready."""
        d = asdict(self)
        d["size"] = list(self.size)
        drop = set()
        if self.dtype == "uint8":
            drop |= {"scale", "mean", "std"}
        if self.channels == 1:
            drop.add("channel_order")
        else:
            drop.add("grayscale")
        if self.resize != "letterbox":
            drop.add("pad_value")
        if self.resize != "shorter-side-crop":
            drop.add("crop_fraction")
        if self.resize == "none":
            drop.add("interpolation")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items() if k not in drop}


@dataclass
class _Output:
    name: str
    kind: str  # one of OUTPUT_KINDS but "auto"
    n_classes: int = 0
    labels: list[str] = field(default_factory=list)

    @property
    def bernoulli(self) -> bool:
        """Multi-label: each class is its own Bernoulli variable (the probabilities need not sum to 1)."""
        return self.kind in ("sigmoid", "sigmoid-logits")


class OnnxClassifier:
    """Any ONNX image classifier, seen as a function from uint8 RGB images to class probabilities.

    Every preprocessing value may be given explicitly; those left as None come from the model card (see
    `from_card`) or are inferred from the graph: layout from the input shape, size from its static dims, dtype
    from its element type, output kind ("probs" or "logits") from a probe forward.

    Parameters
    ----------
    model_path : path to the .onnx file.
    layout : "NCHW" | "NHWC".  size : (H, W) in pixels.  channel_order : "RGB" | "BGR".
    scale, mean, std : per-pixel affine map v = (pixel * scale - mean) / std, mean/std per model channel.
    dtype : "float32" | "uint8" (uint8 models take raw pixels; scale, mean, std other than 1, 0, 1 are an error).
    resize : one of images.RESIZE_MODES; interpolation : one of images.INTERPOLATIONS or "auto"; pad_value :
        letterbox padding, one value or R, G, B; crop_fraction : shorter-side-crop's share (e.g. 0.875).
    grayscale : single-channel models, how RGB becomes grey (graphs.LUMA: "bt601" as OpenCV, "pil" as PIL,
        "bt709", "average"; default bt601).
    A value the model or the resize mode cannot use (mean on a uint8 input, pad_value without letterbox, …) is an
    InfolensError naming it, never silently ignored.
    output_kind : one of params.PARAMS["output_kind"].choices: "probs" (softmax probabilities), "logits" (softmax applied), "sigmoid"
        (multi-label: one independent probability per class), "sigmoid-logits" (sigmoid applied) or "auto" (from
        the graph's last op and probe forwards; an error asks for it when they cannot decide).
    labels : list of class names.
    device : "cpu" | "cuda".  input_name / output_name : which graph input/output (default: the first).
    batch_backend : "auto" (composer on CUDA, host on the CPU) | "host" | "composer": how perturbation batches are
        built (see perturbation_batch).
    provider : "default" | "tensorrt" (device cuda).  cuda_graph : replay perturbation batches as CUDA graphs
        (device cuda, composer backend).  cpu_fallback : on CUDA, let ops without a CUDA kernel run on the CPU
        (default: an error).  See backends/sessions.Placement.
    fp16 : run the graph in float16 (ONNX Runtime's converter, float32 inputs and outputs kept; TensorRT: fp16
        engines).  Refused when the probe images' log2 probabilities move by more than `fp16_tolerance` bits from
        float32's (`check_fp16`); `fp16_drift` records how far they moved.
    """

    def __init__(self, model_path, *, layout=None, size=None, channel_order=None, scale=None, mean=None, std=None,
                 dtype=None, resize=None, interpolation=None, pad_value=None, crop_fraction=None, grayscale=None,
                 output_kind="auto", labels=None, device="cpu", input_name=None, output_name=None, name=None,
                 batch_backend="auto", provider="default", fp16=False, cuda_graph=False, cpu_fallback=False,
                 fp16_tolerance=0.1):
        self.model_path = os.fspath(model_path)
        self.name = name or os.path.splitext(os.path.basename(self.model_path))[0]
        self.device = device
        self.fp16 = bool(fp16)
        self.fp16_tolerance = params.check("fp16_tolerance", fp16_tolerance)
        self.placement = sessions.Placement(device, provider, bool(cuda_graph), bool(cpu_fallback),
                                            fp16=self.fp16 and provider == "tensorrt")
        self.batch_backend = params.check("batch_backend", batch_backend)
        if self.batch_backend == "auto":
            self.batch_backend = "composer" if device == "cuda" else "host"
        if cuda_graph and self.batch_backend != "composer":
            raise InfolensError("CUDA graphs replay the composer's batches: use --batch-backend composer (or auto)",
                                "cuda_graph")
        exact_where = dataclasses.replace(self.placement, fp16=False)  # TensorRT: float32 engines
        self.session, self.batch_limit = _open_session(self.model_path, exact_where)
        inp = _pick(self.session.get_inputs(), input_name, "input", "input_name")
        out = _pick(self.session.get_outputs(), output_name, "output", "output_name")
        self.input_name = self._feed = inp.name
        self.pre = _resolve_preprocessing(inp, layout, size, channel_order, scale, mean, std, dtype, resize,
                                          interpolation, pad_value, crop_fraction, grayscale)
        if self.pre.channels == 1:  # the session runs the graph behind a grey-level front that takes RGB
            self._feed = graphs.GREY_FRONT_INPUT
        exact = self.session
        if self.fp16 and self.pre.channels == 1:
            exact = _open_session(self.model_path, exact_where, lambda m: self._edit(m, fp16=False))[0]
        if self.pre.channels == 1 or self.fp16:
            self.session, self.batch_limit = _open_session(self.model_path, self.placement, self._edit)
        if cuda_graph and self.batch_limit:
            raise InfolensError(f"CUDA graphs need a model that takes any batch size; {self.model_path} takes "
                                f"{self.batch_limit}", "cuda_graph")
        self._lut, self._src = self.pre.lut(), self.pre.src()
        self._with_outputs: dict[tuple, object] = {}  # sessions with intermediate tensors as outputs
        self._composers: dict[tuple, object] = {}  # composer batches by (capacity, K)
        self.rows_run = 0
        params.check("output_kind", output_kind)
        self.output = _Output(out.name, output_kind)
        self._exact = exact if self.fp16 else None
        self._probe(labels)
        # how far --fp16 moved the probe images (each explained image is checked too, by the Explainer)
        self.fp16_drift = self.check_fp16(self._probes) if self.fp16 else None

    @classmethod
    def from_card(cls, model_path=DEFAULT_CLASSIFIER, card_path=None, **overrides) -> "OnnxClassifier":
        """Build from `model.onnx` and its card `model.json` (DESIGN §2); keyword overrides that are not None win.
        model_path: a file, or the name of a shipped model ("efficientnet_lite0", the default), which works
        wherever infolens is installed."""
        model_path = model_file(model_path)
        if card_path is not None and not os.path.isfile(card_path):
            raise InfolensError(f"model card not found: {card_path}", "card")
        card_path = card_path or os.path.splitext(model_path)[0] + ".json"
        card = {}
        if os.path.exists(card_path):
            try:
                with open(card_path) as f:
                    card = json.load(f)
            except (OSError, ValueError) as e:
                raise InfolensError(f"cannot read model card {card_path}: {e}", "card") from None
        inp, out = card.get("input", {}), card.get("output", {})
        kw = dict(layout=inp.get("layout"), size=inp.get("size"), channel_order=inp.get("channel_order"),
                  scale=inp.get("scale"), mean=inp.get("mean"), std=inp.get("std"), dtype=inp.get("dtype"),
                  resize=inp.get("resize"), interpolation=inp.get("interpolation"), pad_value=inp.get("pad_value"),
                  crop_fraction=inp.get("crop_fraction"), grayscale=inp.get("grayscale"),
                  input_name=inp.get("name"), output_name=out.get("name"),
                  output_kind=out.get("kind", "auto"), labels=card.get("labels"), name=card.get("name"))
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model_path, **kw)

    @classmethod
    def from_description(cls, d: dict, device: str | None = None, model_path: str | None = None) -> "OnnxClassifier":
        """Rebuild the classifier an explanation recorded (`describe()` output, the JSON's "model"), from the file
        it names or from `model_path` (the same model found elsewhere)."""
        pre = {k: d.get(k) for k in ("layout", "size", "channel_order", "scale", "mean", "std", "dtype", "resize",
                                     "interpolation", "pad_value", "crop_fraction", "grayscale")}
        return cls.from_card(model_path or d["model"], **pre, output_kind=d["output_kind"],
                             input_name=d["input_name"], output_name=d["output_name"],
                             device=device or d.get("device", "cpu"))

    # ---- images → tensors ------------------------------------------------------------------------------------
    def load_image(self, image, notes: list | None = None) -> np.ndarray:
        """A path or a uint8 RGB [h, w, 3] array → uint8 RGB [H, W, 3] in the model's input space.  `notes` (a list)
        gets a line for each change a user should know of: the file's (images.read_image: transparency, frames,
        16 bits) and an image smaller than the input, which is enlarged."""
        notes = [] if notes is None else notes
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image, notes=notes)
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InfolensError(f"image array must be uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
        pre = self.pre
        (h, w), (H, W) = image.shape[:2], pre.size
        if (h < H or w < W) and pre.resize != "none":
            notes.append(f"the image ({h}x{w}) is smaller than the model input ({H}x{W}): enlarged ({pre.resize})")
        return to_input_space(image, pre.size, pre.resize, pre.interpolation, pre.pad_value, pre.crop_fraction)

    @property
    def lut(self) -> np.ndarray:
        """[3, 256] model-input values per model channel and pixel value (see Preprocessing.lut)."""
        return self._lut

    @property
    def src(self) -> np.ndarray:
        """[3] int64 RGB channel feeding each model channel."""
        return self._src

    @property
    def nchw(self) -> bool:
        return self.pre.layout == "NCHW"

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB [B, H, W, 3] → model tensor [B, 3, H, W] or [B, H, W, 3] of the input dtype."""
        chans = [self._lut[c][images[..., s]] for c, s in enumerate(self._src)]
        return np.ascontiguousarray(np.stack(chans, axis=1 if self.nchw else -1))

    # ---- tensors → probabilities -----------------------------------------------------------------------------
    def predict(self, tensor: np.ndarray) -> np.ndarray:
        """Model tensor [B, ...] → float64 probabilities [B, Y]: each row sums to 1, except for a multi-label
        (`output.bernoulli`) model, whose entries are each class's own probability."""
        return _to_probs(self.forward(tensor), self.output.kind)

    def intermediates(self, tensor: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """Named tensors of the graph (any node output, e.g. a layer's activations) for a model tensor [B, ...], as
        float arrays by name; the graph is re-opened once per set of names with those tensors as extra outputs."""
        key = tuple(names)
        if key not in self._with_outputs:
            import onnx

            model = graphs.with_outputs(self._edit(onnx.load(self.model_path)), list(names))
            self._with_outputs[key] = self.placement.open(model.SerializeToString())
        outs = self._with_outputs[key].run(list(names), {self._feed: tensor})
        return dict(zip(names, outs))

    def open_edited(self, edit, graph: bool = False):
        """A session on this classifier's graph after `edit` (ModelProto → ModelProto; e.g. taps added), on the same
        placement, for `predict_with`; graph: capturing CUDA graphs when the placement has them."""
        import onnx

        model = edit(self._edit(onnx.load(self.model_path)))
        return self.placement.open(model.SerializeToString(), graph)

    def predict_with(self, session, tensor: np.ndarray, names: list[str]) -> tuple[np.ndarray, dict]:
        """One forward of an `open_edited` session on a model tensor [B, ...]: float64 probabilities [B, Y] (as
        `predict`) and the tensors `names` (counted in `rows_run` like any forward)."""
        self.rows_run += len(tensor)
        outs = session.run([self.output.name, *names], {self._feed: tensor})
        raw = outs[0].astype(np.float64).reshape(len(tensor), -1)
        return _to_probs(raw, self.output.kind), dict(zip(names, outs[1:]))

    def perturbation_batch(self, base: np.ndarray, capacity: int, K: int):
        """A batch of `capacity` copies of the normalized image `base` (one row of `normalize`) to write K×K in-fills
        into and classify.  `batch_backend` "host": composited in numpy/C++ (backends/cpu.py); "composer": composed
        by an ONNX graph on the classifier's device and bound to it (backends/composer.py; made once per capacity
        and K, its device buffers reused image after image; a model of fixed batch size uses the host batch)."""
        if self.batch_backend == "composer" and not self.batch_limit:
            from .backends.composer import ComposerPerturbationBatch

            key = (capacity, K)
            if key not in self._composers:
                self._composers[key] = ComposerPerturbationBatch(self, base, capacity, K)
            return self._composers[key].load(base)
        from .backends.cpu import CpuPerturbationBatch

        return CpuPerturbationBatch(self, base, capacity, K)

    def to_probs(self, raw: np.ndarray) -> np.ndarray:
        """Raw outputs float64 [m, Y] → probabilities as `predict` gives them."""
        return _to_probs(raw, self.output.kind)

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB [B, H, W, 3] in input space → float64 probabilities [B, Y]."""
        return self.predict(self.normalize(images))

    def forward(self, tensor: np.ndarray) -> np.ndarray:
        """Raw model output as float64 [B, Y] (trailing singleton axes dropped); splits batches the model cannot
        take.  Adds B to `rows_run`, the images classified so far (padding of a fixed batch not counted)."""
        n = len(tensor)
        self.rows_run += n
        step = self.batch_limit or n
        outs = []
        for i in range(0, n, step):
            chunk = tensor[i:i + step]
            if self.batch_limit and len(chunk) < step:
                pad = np.repeat(chunk[-1:], step - len(chunk), axis=0)
                chunk = np.concatenate([chunk, pad])
            y = self.session.run([self.output.name], {self._feed: chunk})[0]
            outs.append(y[: min(step, n - i)])
        y = np.concatenate(outs).astype(np.float64)
        y = y.reshape(y.shape[0], *[d for d in y.shape[1:] if d != 1]) if y.ndim > 2 else y
        if y.ndim != 2:
            raise InfolensError(f"model output {self.output.name!r} has shape {list(y.shape)}: no single class axis "
                                f"(is this an image classifier? pick another output)", "output_name")
        return y

    @property
    def n_classes(self) -> int:
        return self.output.n_classes

    @property
    def labels(self) -> list[str]:
        return self.output.labels

    def describe(self) -> dict:
        """Everything needed to rebuild this classifier: model path and sha256 (to find it again elsewhere),
        preprocessing actually used, output kind."""
        from .catalog import file_sha256

        pre = self.pre.used()
        return {"model": os.path.abspath(self.model_path), "sha256": file_sha256(self.model_path), "name": self.name,
                "input_name": self.input_name,
                "output_name": self.output.name, "output_kind": self.output.kind, "n_classes": self.n_classes,
                "batch_limit": self.batch_limit, "device": self.device,
                "providers": self.session.get_providers(), "provider": self.placement.provider,
                "batch_backend": self.batch_backend, "cuda_graph": self.placement.cuda_graph,
                **({"fp16": True, "fp16_drift": self.fp16_drift} if self.fp16 else {}), **pre}

    @property
    def _converts_fp16(self) -> bool:
        return self.fp16 and self.placement.provider != "tensorrt"

    def _edit(self, model, fp16: bool = True):
        """The in-memory graph edits this classifier runs under: the float16 conversion (unless fp16=False), the grey
        front of a single-channel model."""
        if fp16 and self._converts_fp16:  # first: the grey front stays float32, exact as OpenCV's grey levels
            model = graphs.to_fp16(model)
        if self.pre.channels == 1:
            model = graphs.grey_front(model, self.input_name, self.pre.layout, self.pre.grayscale, self.pre.scale,
                                      self.pre.mean[0], self.pre.std[0])
        return model

    def _probe(self, labels):
        """Forwards on grey, black, white and noise images: checks the model runs, counts classes, detects the output
        kind (see _detect_kind)."""
        self._probes = probes = np.stack([np.full((*self.pre.size, 3), v, np.uint8) for v in (128, 0, 255)] +
                          [np.random.default_rng(0).integers(0, 256, (*self.pre.size, 3), dtype=np.uint8)])
        try:
            raw = self.forward(self.normalize(probes))
        except InfolensError:
            raise
        except Exception as e:  # onnxruntime raises its own types; make them one line
            raise InfolensError(f"model {self.model_path} failed on a {self.pre.layout} {self.pre.dtype} input of size "
                                f"{list(self.pre.size)}: {_first_line(e)} (check the layout and the size)",
                                "size") from None
        self.output.n_classes = raw.shape[1]
        if self.output.n_classes < 2:
            raise InfolensError(f"model output {self.output.name!r} has {raw.shape[1]} class: not a classifier",
                                "output_name")
        if self.output.kind == "auto":
            self.output.kind = _detect_kind(raw, _last_op(self.model_path, self.output.name), self.output.name)
        if labels is None:
            labels = _metadata_labels(self.session)
        if labels is not None and len(labels) != self.output.n_classes:
            raise InfolensError(f"{len(labels)} labels given but the model has {self.output.n_classes} classes",
                                "card")
        self.output.labels = [str(x) for x in labels] if labels is not None else [
            f"class {i}" for i in range(self.output.n_classes)]

    def check_fp16(self, images: np.ndarray, classes=None) -> float:
        """An fp16 classifier against its float32 graph on uint8 RGB images [B, H, W, 3] in input space: the largest
        change, in bits, of log2 p of `classes` (default: each image's three most probable; a multi-label model: of
        log2 p and log2(1 − p)), the terms the maps are made of.  Above `fp16_tolerance` bits it is an
        InfolensError naming --fp16.  One float32 forward per image, counted in `rows_run`."""
        x = self.normalize(images)
        self.rows_run += len(x)
        if self.batch_limit:  # one image per call, repeated to the model's fixed batch
            y = np.concatenate([self._exact.run([self.output.name], {self._feed: np.repeat(
                x[i:i + 1], self.batch_limit, 0)})[0][:1] for i in range(len(x))])
        else:
            y = self._exact.run([self.output.name], {self._feed: x})[0]
        full = _to_probs(y.astype(np.float64).reshape(len(x), -1), self.output.kind)
        half = self.predict(x)
        self.rows_run -= len(x)  # predict counted the fp16 forwards again
        top = (np.argsort(-full, axis=1)[:, :3] if classes is None else
               np.repeat(np.asarray(classes, np.int64)[None], len(x), 0))
        pick = [np.take_along_axis(p, top, 1) for p in (full, half)]
        if self.output.bernoulli:
            pick = [np.concatenate([p, 1 - p], 1) for p in pick]
        drift = float(np.abs(np.log2(np.maximum(pick[0], 1e-300)) - np.log2(np.maximum(pick[1], 1e-300))).max())
        if not np.isfinite(drift) or drift > self.fp16_tolerance:
            raise InfolensError(f"in float16 this model's log2 probabilities move by up to {drift:.3g} bits (more "
                                f"than --fp16-tolerance {self.fp16_tolerance:g}) on "
                                f"{'the probe images' if len(x) > 1 else 'this image'}: run it without --fp16", "fp16")
        return drift


def _open_session(path: str, where, edit=None):
    """Session plus batch limit: None when any batch size runs, else the fixed batch size to pad/split to.
    edit: ModelProto → ModelProto applied in memory before opening (the file is not changed).

    A fixed batch dimension is first rewritten to a symbolic one (the common export accident); the rewrite is kept
    only if a two-image batch then gives the same answers as two single-image calls.
    """
    if not os.path.isfile(path):
        raise InfolensError(f"model file not found: {path} (or name a shipped model: {', '.join(shipped_names())})",
                            "model")
    try:
        source = path if edit is None else edit(_onnx_load(path)).SerializeToString()
        session = where.open(source)
    except InfolensError:
        raise
    except Exception as e:
        raise InfolensError(f"cannot load ONNX model {path}: {_first_line(e)}", "model") from None
    dim0 = session.get_inputs()[0].shape[0] if session.get_inputs()[0].shape else None
    if not isinstance(dim0, int):
        return session, None
    relaxed = _relax_batch(path, where, session, edit)
    return (relaxed, None) if relaxed is not None else (session, dim0)


def _onnx_load(path: str):
    import onnx

    return onnx.load(path)


def _relax_batch(path, where, fixed, edit=None):
    model = _onnx_load(path)
    if edit is not None:
        model = edit(model)
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    try:
        session = where.open(model.SerializeToString())
        inp = session.get_inputs()[0]
        shape = [2] + [d if isinstance(d, int) else 1 for d in fixed.get_inputs()[0].shape[1:]]
        dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        x = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
        both = session.run(None, {inp.name: x})[0]
        one = np.concatenate([fixed.run(None, {inp.name: x[i:i + 1]})[0] for i in range(2)])
        return session if both.shape == one.shape and np.allclose(both, one, rtol=1e-4, atol=1e-5) else None
    except Exception:  # any failure of the relaxed graph means: keep the fixed batch and split calls
        return None


def _pick(args, name, what, param):
    if name is None:
        if what == "input" and len(args) > 1:
            raise InfolensError(f"model has {len(args)} inputs ({', '.join(a.name for a in args)}); "
                                f"infolens needs exactly one image input", param)
        return args[0]
    for a in args:
        if a.name == name:
            return a
    raise InfolensError(f"model has no {what} named {name!r}; it has {', '.join(a.name for a in args)}", param)


def _resolve_preprocessing(inp, layout, size, channel_order, scale, mean, std, dtype, resize, interpolation=None,
                           pad_value=None, crop_fraction=None, grayscale=None) -> Preprocessing:
    shape = inp.shape
    if len(shape) != 4:
        raise InfolensError(f"model input {inp.name!r} has rank {len(shape)} {shape}; an image classifier takes "
                            f"[batch, C, H, W] or [batch, H, W, C] with C = 3 or 1")
    if layout is None:
        first, last = shape[1] in (1, 3), shape[3] in (1, 3)
        if first == last:
            raise InfolensError(f"cannot infer the layout from input shape {shape}: give it (NCHW or NHWC)",
                                "layout")
        layout = "NCHW" if first else "NHWC"
    layout = params.check("layout", str(layout).upper())
    c_dim, hw = (shape[1], shape[2:4]) if layout == "NCHW" else (shape[3], shape[1:3])
    if isinstance(c_dim, int) and c_dim not in (1, 3):
        raise InfolensError(f"model input {inp.name!r} has {c_dim} channels in layout {layout}; infolens explains "
                            f"3-channel colour and 1-channel grey models (wrong layout?)", "layout")
    channels = 1 if c_dim == 1 else 3
    if size is None:
        if not all(isinstance(d, int) for d in hw):
            raise InfolensError(f"input shape {shape} has no fixed height/width: give the size H,W", "size")
        size = hw
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise InfolensError(f"bad input size {list(size)}: expected H,W", "size")
    if dtype is None:
        if inp.type not in _DTYPES:
            raise InfolensError(f"model input type {inp.type} is not supported (float32 or uint8 inputs only)",
                                "model")
        dtype = _DTYPES[inp.type]
    if dtype == "uint8":  # raw pixels: a normalization given for it would be silently ignored
        for name, value, identity in (("scale", scale, 1.0), ("mean", mean, 0.0), ("std", std, 1.0)):
            if value is not None and any(v != identity for v in _values(value)):
                raise InfolensError(f"model input {inp.name!r} is uint8 (raw pixels, normalized inside the graph if "
                                    f"at all): a {name} cannot apply; remove it", name)
    if channels == 1:
        if channel_order is not None and str(channel_order).upper() != "RGB":
            raise InfolensError(f"model input {inp.name!r} has one channel (grey): a channel order cannot apply; "
                                f"remove it (grayscale chooses how RGB becomes grey)", "channel_order")
        grayscale = params.check("grayscale", grayscale or "bt601")
    elif grayscale is not None:
        raise InfolensError(f"grayscale applies to single-channel models; model input {inp.name!r} has 3 channels",
                            "grayscale")
    channel_order = params.check("channel_order", str(channel_order or "RGB").upper())
    n = channels
    mean = _values(0.0 if mean is None else mean, n, "mean")
    std = _values(1.0 if std is None else std, n, "std")
    if min(abs(s) for s in std) == 0:
        raise InfolensError("std must not be 0", "std")
    resize = params.check("resize", resize or "shorter-side-crop")
    for name, value, unused, mode in (("pad_value", pad_value, None, "letterbox"),
                                      ("crop_fraction", crop_fraction, 1.0, "shorter-side-crop")):
        if value is not None and value != unused and resize != mode:
            raise InfolensError(f"{name} applies to resize {mode}, not {resize}", name)
    if resize == "none" and interpolation not in (None, "auto"):
        raise InfolensError("interpolation does not apply with resize none (images must have the input size)",
                            "interpolation")
    interpolation = params.check("interpolation", interpolation or "auto")
    crop_fraction = params.check("crop_fraction", float(1.0 if crop_fraction is None else crop_fraction))
    pad = rgb_value(0 if pad_value is None else pad_value, "pad_value")
    return Preprocessing(layout, size, channel_order, float(1.0 if scale is None else scale), mean, std, dtype,
                         resize, interpolation, pad, crop_fraction, channels, grayscale or "bt601")


def _values(v, n: int | None = None, param: str = "") -> tuple[float, ...]:
    """A number or a list of numbers → a tuple; with n: 1 value repeated to n, or exactly n values."""
    vals = [float(x) for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])]
    if n is None:
        return tuple(vals)
    if len(vals) == 1:
        vals *= n
    if len(vals) != n:
        raise InfolensError(f"{param} needs {'1 value' if n == 1 else f'1 or {n} values'} for this model, got "
                            f"{len(vals)}", param)
    return tuple(vals)


def _metadata_labels(session):
    meta = session.get_modelmeta().custom_metadata_map
    for key in _LABEL_KEYS:
        if key in meta:
            text = meta[key]
            for parse in (json.loads, ast.literal_eval):
                try:
                    v = parse(text)
                    break
                except (ValueError, SyntaxError):
                    v = None
            if isinstance(v, dict):
                return [v[k] for k in sorted(v, key=int)]
            if isinstance(v, list):
                return v
            return [s.strip() for s in text.split(",")]
    return None


def _to_probs(raw: np.ndarray, kind: str) -> np.ndarray:
    if kind == "logits":
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if kind == "probs":
        return raw / raw.sum(axis=1, keepdims=True)
    if kind == "sigmoid":
        return np.clip(raw, 0.0, 1.0)
    return np.exp(-np.logaddexp(0.0, -raw))  # sigmoid without overflow


def _last_op(model_path: str, output: str) -> str | None:
    """The op that computes graph output `output`, looking through ops that only reshape, cast or (de)quantize it."""
    import onnx

    try:
        graph = onnx.load(model_path, load_external_data=False).graph
    except Exception:  # the session loaded it; an unreadable graph only means no evidence from it
        return None
    node = graphs.walk_back(graph, output)[1]
    return None if node is None else node.op_type


def _detect_kind(raw: np.ndarray, op: str | None, name: str) -> str:
    """The output kind from the op that makes the scores (Sigmoid, Softmax, LogSoftmax decide) and else from their
    values on the probes `raw` [B, Y]: outside [0, 1] → logits; rows summing to 1 → probs; in [0, 1] but not summing
    to 1 → sigmoid, unless a linear op made them (unbounded scores that happen to fall in [0, 1]): then it cannot
    decide and asks."""
    if op in ("Sigmoid", "Softmax", "LogSoftmax"):
        return {"Sigmoid": "sigmoid", "Softmax": "probs", "LogSoftmax": "logits"}[op]
    if raw.min() < 0 or raw.max() > 1:
        return "logits"
    if np.allclose(raw.sum(axis=1), 1.0, atol=1e-3):
        return "probs"
    if op in _SCORE_OPS or op is None:
        raise InfolensError(f"cannot tell what output {name!r} holds: its values lie in [0, 1] without summing to 1, "
                            f"but it comes from {op or 'an unknown op'}, not a Sigmoid: give the output kind (sigmoid "
                            f"for independent per-class probabilities, logits for scores to softmax)", "output_kind")
    return "sigmoid"


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
