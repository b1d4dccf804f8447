"""The ONNX classifier: its sessions, forwards and probabilities, and the float16 check."""
from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from .. import backends, catalog, params
from ..backends import sessions
from ..catalog import DEFAULT_CLASSIFIER, model_file
from ..errors import InfolensError
from .card import FIELDS, Preprocessing, read_card
from .outputs import Output, detect_kind, last_op, metadata_labels, to_probs
from .session import first_line, fixed_batch, load_graph, open_classifier, pick


def _names_the_model(init):
    """An error while a classifier is built names its model file (the CLI's one line says which file is wrong)."""
    @functools.wraps(init)
    def build(self, model_path, *args, **kwargs):
        try:
            init(self, model_path, *args, **kwargs)
        except InfolensError as e:
            path = os.fspath(model_path)
            if path in str(e):
                raise
            raise InfolensError(f"{path}: {e}", e.param) from None

    return build


class OnnxClassifier:
    """Any ONNX image classifier, seen as a function from uint8 RGB images to class probabilities.

    Parameters
    ----------
    model_path : path to the .onnx file.
    preprocessing : a `Preprocessing` (or a dict of its fields); fields left None are inferred from the graph
        (layout from the input shape, size from its static dims, dtype from its element type) or take the defaults.
        `from_card` builds it from the model card.
    output_kind : one of params.PARAMS["output_kind"].choices: "probs" (softmax probabilities), "logits" (softmax
        applied), "sigmoid" (multi-label: one independent probability per class), "sigmoid-logits" (sigmoid applied)
        or "auto" (from the graph's last op and probe forwards; an error asks for it when they cannot decide).
    labels : list of class names (default: the model's metadata, else "class i").
    input_name / output_name : which graph input/output (default: the first).  name : for files and reports.
    device : "cpu" | "cuda".  provider : "default" | "tensorrt" (device cuda).  cuda_graph : replay perturbation
        batches as CUDA graphs (device cuda, composer backend).  cpu_fallback : on CUDA, let ops without a CUDA
        kernel run on the CPU (default: an error).  See backends/sessions.Placement.
    batch_backend : "auto" | "host" | "composer": how perturbation batches are built (backends.choose).
    incremental : "auto" | "on" | "off": exact incremental inference, each perturbed copy recomputing only what its
        patch changes (backends/incremental/; auto: where its plan predicts a gain for the model and K).
    fp16 : run the graph in float16 (ONNX Runtime's converter, float32 inputs and outputs kept; TensorRT: fp16
        engines).  Refused when the probe images' log2 probabilities move by more than `fp16_tolerance` bits from
        float32's (`check_fp16`); `fp16_drift` records how far they moved.
    session : an onnxruntime.InferenceSession you opened on `model_path` yourself; it runs as it is (a fixed batch
        size is split, not relaxed; grey models and fp16 need infolens to open the graph).
    session_options, providers : what the classifier's sessions are opened with instead of infolens's own
        (backends/sessions.session_options and the device's providers); helper graphs keep infolens's.
    max_pixels : an image file's pixels at most (width × height), read from its header before it is decoded
        (default params.MAX_PIXELS, 50 million; None: no limit): `load_image` refuses a larger one, naming
        max_pixels.
    """

    @_names_the_model
    def __init__(self, model_path, preprocessing: Preprocessing | dict | None = None, *, output_kind="auto",
                 labels=None, input_name=None, output_name=None, name=None, device="cpu", provider="default",
                 cuda_graph=False, cpu_fallback=False, batch_backend="auto", incremental="off", fp16=False,
                 fp16_tolerance=0.1, session=None, session_options=None, providers=None, max_pixels=params.MAX_PIXELS):
        self.model_path = os.fspath(model_path)
        self.max_pixels = None if max_pixels is None else params.check("max_pixels", max_pixels)
        self.name = name or os.path.splitext(os.path.basename(self.model_path))[0]
        self.device = device
        self.fp16 = bool(fp16)
        self.fp16_tolerance = params.check("fp16_tolerance", fp16_tolerance)
        self.placement = sessions.Placement(device, provider, bool(cuda_graph), bool(cpu_fallback),
                                            fp16=self.fp16 and provider == "tensorrt",
                                            session_options=session_options,
                                            providers_given=None if providers is None else tuple(providers))
        self.batch_backend = backends.choose(batch_backend, self.placement)
        self.incremental = params.check("incremental", incremental)
        self.incremental_used: dict | None = None  # what the last explanation ran: backends.incremental.decide
        exact_where = dataclasses.replace(self.placement, fp16=False)  # TensorRT: float32 engines
        if session is not None:
            self.session, self.batch_limit = session, fixed_batch(session)
        else:
            self.session, self.batch_limit = open_classifier(self.model_path, exact_where)
        # the bytes loaded, hashed now: a file replaced while the session lives must not change the record
        self.sha256 = catalog.file_sha256(self.model_path)
        inp = pick(self.session.get_inputs(), input_name, "input", "input_name")
        out = pick(self.session.get_outputs(), output_name, "output", "output_name")
        self.input_name = self.feed_name = inp.name
        if isinstance(preprocessing, dict):
            preprocessing = Preprocessing(**preprocessing)
        self.pre = (preprocessing or Preprocessing()).resolve(inp)
        if session is not None and (self.pre.channels == 1 or self.fp16):
            raise InfolensError("a session you open yourself runs as it is: a grey model's front and --fp16 need "
                                "infolens to open the graph (pass session_options or providers instead)", "session")
        if self.pre.channels == 1:  # the session runs the graph behind a grey-level front that takes RGB
            from ..graphs import GREY_FRONT_INPUT

            self.feed_name = GREY_FRONT_INPUT
        exact = self.session
        if self.fp16 and self.pre.channels == 1:
            exact = open_classifier(self.model_path, exact_where, lambda m: self._edit(m, fp16=False))[0]
        if self.pre.channels == 1 or self.fp16:
            self.session, self.batch_limit = open_classifier(self.model_path, self.placement, self._edit)
        if cuda_graph and self.batch_limit:
            raise InfolensError(f"CUDA graphs need a model that takes any batch size; {self.model_path} takes "
                                f"{self.batch_limit}", "cuda_graph")
        self._lut, self._src = self.pre.lut(), self.pre.src()
        self.rows_run = 0
        params.check("output_kind", output_kind)
        self.output = Output(out.name, output_kind)
        self._exact = exact if self.fp16 else None
        self._probe(labels)
        # how far --fp16 moved the probe images (each explained image is checked too, by the Explainer)
        self.fp16_drift = self.check_fp16(self._probes) if self.fp16 else None

    @classmethod
    def from_card(cls, model_path=DEFAULT_CLASSIFIER, card_path=None, **overrides) -> "OnnxClassifier":
        """Build from `model.onnx` and its card `model.json` (DESIGN §2); keyword overrides that are not None win:
        any `Preprocessing` field (layout, size, mean, …) and any keyword of the constructor.
        model_path: a file, or the name of a shipped model ("efficientnet_lite0", the default), which works
        wherever infolens is installed."""
        model_path = model_file(model_path)
        if card_path is not None and not os.path.isfile(card_path):
            raise InfolensError(f"model card not found: {card_path}", "card")
        card = read_card(card_path or catalog.card_path(model_path))
        inp, out = card.get("input", {}), card.get("output", {})
        pre = Preprocessing.from_card(inp, **{k: overrides.pop(k) for k in FIELDS if k in overrides})
        kw = dict(input_name=inp.get("name"), output_name=out.get("name"), output_kind=out.get("kind", "auto"),
                  labels=card.get("labels"), name=card.get("name"))
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model_path, pre, **kw)

    @classmethod
    def from_description(cls, d: dict, device: str | None = None, model_path: str | None = None) -> "OnnxClassifier":
        """Rebuild the classifier an explanation recorded (`describe()` output, the JSON's "model"), from the file
        it names or from `model_path` (the same model found elsewhere); its `--incremental` mode too, so that a
        benchmark's Ray actors run as the process that started them."""
        return cls.from_card(model_path or d["model"], **{k: d.get(k) for k in FIELDS}, output_kind=d["output_kind"],
                             input_name=d["input_name"], output_name=d["output_name"],
                             device=device or d.get("device", "cpu"),
                             incremental=(d.get("incremental") or {}).get("mode"))

    def twin(self, model_path: str, device: str | None = None) -> "OnnxClassifier":
        """A classifier for another model file with this one's preprocessing, output handling and labels."""
        return OnnxClassifier(model_path, self.pre, output_kind=self.output.kind, labels=self.labels,
                              input_name=self.input_name, output_name=self.output.name, name=self.name,
                              device=device or self.device, max_pixels=self.max_pixels)

    # ---- images → tensors ------------------------------------------------------------------------------------
    def load_image(self, image, notes: list | None = None) -> np.ndarray:
        """A path or a uint8 RGB [h, w, 3] array → uint8 RGB [H, W, 3] in the model's input space (see
        Preprocessing.input_space; `notes` gets a line for each change a user should know of); a file over
        `max_pixels` is refused before it is decoded."""
        return self.pre.input_space(image, notes, self.max_pixels)

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

    # ---- the graph -------------------------------------------------------------------------------------------
    def graph(self):
        """The ONNX ModelProto this classifier runs: the file after the in-memory edits (float16 conversion, a grey
        model's front, whose input `feed_name` takes RGB).  The file is not changed."""
        return self._edit(load_graph(self.model_path))

    def open_graph(self, model=None, graph: bool = False):
        """A session on `model` (default: `graph()`; e.g. that graph with taps added, classifier/taps.py) on this
        classifier's placement; graph: capturing CUDA graphs when the placement has them."""
        model = self.graph() if model is None else model
        return self.placement.open(model.SerializeToString(), graph)

    # ---- tensors → probabilities -----------------------------------------------------------------------------
    def predict(self, tensor: np.ndarray) -> np.ndarray:
        """Model tensor [B, ...] → float64 probabilities [B, Y]: each row sums to 1, except for a multi-label
        (`output.bernoulli`) model, whose entries are each class's own probability."""
        return to_probs(self.forward(tensor), self.output.kind)

    def to_probs(self, raw: np.ndarray) -> np.ndarray:
        """Raw outputs float64 [m, Y] → probabilities as `predict` gives them."""
        return to_probs(raw, self.output.kind)

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
            y = self.session.run([self.output.name], {self.feed_name: chunk})[0]
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
        pre = self.pre.used()
        return {"model": os.path.abspath(self.model_path), "sha256": self.sha256, "name": self.name,
                "input_name": self.input_name,
                "output_name": self.output.name, "output_kind": self.output.kind, "n_classes": self.n_classes,
                "batch_limit": self.batch_limit, "device": self.device,
                "providers": self.session.get_providers(), "provider": self.placement.provider,
                "batch_backend": self.batch_backend, "cuda_graph": self.placement.cuda_graph,
                "incremental": {"mode": self.incremental, **(self.incremental_used or {"used": False})},
                **({"fp16": True, "fp16_drift": self.fp16_drift} if self.fp16 else {}), **pre}

    def _edit(self, model, fp16: bool = True):
        """The in-memory graph edits this classifier runs under: the float16 conversion (unless fp16=False; not for
        TensorRT, which builds fp16 engines itself), the grey front of a single-channel model."""
        from .. import graphs  # the onnx package: only where a graph is edited

        if fp16 and self.fp16 and self.placement.provider != "tensorrt":
            model = graphs.to_fp16(model)  # first: the grey front stays float32, exact as OpenCV's grey levels
        if self.pre.channels == 1:
            model = graphs.grey_front(model, self.input_name, self.pre.layout, self.pre.grayscale, self.pre.scale,
                                      self.pre.mean[0], self.pre.std[0])
        return model

    def _probe(self, labels):
        """Forwards on grey, black, white and noise images: checks the model runs, counts classes, detects the output
        kind (outputs.detect_kind)."""
        self._probes = probes = np.stack([np.full((*self.pre.size, 3), v, np.uint8) for v in (128, 0, 255)] +
                                         [np.random.default_rng(0).integers(0, 256, (*self.pre.size, 3),
                                                                            dtype=np.uint8)])
        try:
            raw = self.forward(self.normalize(probes))
        except InfolensError:
            raise
        except Exception as e:  # onnxruntime raises its own types; make them one line
            raise InfolensError(f"model {self.model_path} failed on a {self.pre.layout} {self.pre.dtype} input of size "
                                f"{list(self.pre.size)}: {first_line(e)} (check the layout and the size)",
                                "size") from None
        self.output.n_classes = raw.shape[1]
        bad = raw[~np.isfinite(raw)]
        if bad.size:  # every map would be NaN: say so rather than guess an output kind or explain garbage
            raise InfolensError(f"model {self.model_path} gives {'NaN' if np.isnan(bad).any() else 'Inf'} in output "
                                f"{self.output.name!r} on plain grey, black, white and noise images: it cannot be "
                                "explained", "model")
        if self.output.n_classes < 2:
            raise InfolensError(f"model output {self.output.name!r} has {raw.shape[1]} class: not a classifier",
                                "output_name")
        if self.output.kind == "auto":
            self.output.kind = detect_kind(raw, last_op(self.model_path, self.output.name), self.output.name)
        if labels is None:
            labels = metadata_labels(self.session)
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
            y = np.concatenate([self._exact.run([self.output.name], {self.feed_name: np.repeat(
                x[i:i + 1], self.batch_limit, 0)})[0][:1] for i in range(len(x))])
        else:
            y = self._exact.run([self.output.name], {self.feed_name: x})[0]
        full = to_probs(y.astype(np.float64).reshape(len(x), -1), self.output.kind)
        half = self.predict(x)
        self.rows_run -= len(x)  # predict counted the fp16 forwards again
        top = (np.argsort(-full, axis=1)[:, :3] if classes is None else
               np.repeat(np.asarray(classes, np.int64)[None], len(x), 0))
        pick_ = [np.take_along_axis(p, top, 1) for p in (full, half)]
        if self.output.bernoulli:
            pick_ = [np.concatenate([p, 1 - p], 1) for p in pick_]
        drift = float(np.abs(np.log2(np.maximum(pick_[0], 1e-300)) - np.log2(np.maximum(pick_[1], 1e-300))).max())
        if not np.isfinite(drift) or drift > self.fp16_tolerance:
            raise InfolensError(f"in float16 this model's log2 probabilities move by up to {drift:.3g} bits (more "
                                f"than --fp16-tolerance {self.fp16_tolerance:g}) on "
                                f"{'the probe images' if len(x) > 1 else 'this image'}: run it without --fp16", "fp16")
        return drift
