"""The PatchSampler's ONNX interface (DESIGN §3): the names export/patchsampler.py writes and samplers/patchsampler.py
reads, the check of a file against them, and the two halves of a split graph."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..catalog import cache_dir, file_sha256

CONTEXT = "context"  # input: uint8 [B, 3K, 3K, 3], the window around the patch
STAGE = "stage"  # input of a staged graph: int64 [B], the stage of each window
CATEGORICAL_OUTPUT = "probs"  # categorical head: float [B, K, K, 3, 256]
MIXTURE_OUTPUTS = ("patch_logits", "pixel_logits", "loc", "log_scale", "coeff")  # logistic-mixture head
META_STAGES = "stages"  # metadata: the stage of every pixel of the patch, a JSON [K, K] grid
META_FEATURES = "context_features"  # metadata: the ring-only tensor the graph may be cut at


@dataclass
class Interface:
    """What a PatchSampler file declares: K; `context` its input's name; `stage_input` whether it takes `stage`;
    `stages` int64 [K, K] the stage of every patch pixel and T their number; `head`; `expected` output name → its
    dims (ints or the names B, S, M); `features` the ring-only tensor a split graph is cut at (None: not split)."""

    K: int
    context: str
    stage_input: bool
    stages: np.ndarray
    T: int
    head: str
    expected: dict
    features: str | None

    @property
    def names(self) -> list[str]:
        """The head's output names, in the order the graph is run for."""
        return list(self.expected)


def read_interface(session, bad) -> Interface:
    """The interface of an opened PatchSampler file, checked against DESIGN §3; bad(reason) makes the error."""
    inputs = {i.name: i for i in session.get_inputs()}
    # DESIGN names the input `context`; a one-input file with another name is accepted as before
    others = [name for name in inputs if name != STAGE]
    ctx = inputs.get(CONTEXT, inputs[others[0]] if len(others) == 1 else None)
    if ctx is None:
        raise bad(f"inputs {', '.join(inputs)}: expected context and optionally stage")
    shape = ctx.shape
    if (ctx.type != "tensor(uint8)" or len(shape) != 4 or not isinstance(shape[1], int) or shape[1] % 3
            or shape[1] != shape[2] or shape[3] != 3):
        raise bad(f"input {ctx.name} is {ctx.type} {shape}, expected uint8 [B, 3K, 3K, 3]")
    K = shape[1] // 3
    stage = inputs.get(STAGE)
    if stage is not None and (stage.type != "tensor(int64)" or len(stage.shape) != 1):
        raise bad(f"input stage is {stage.type} {stage.shape}, expected int64 [B]")

    meta = session.get_modelmeta().custom_metadata_map.get(META_STAGES)
    if meta is None:
        if stage is not None:
            raise bad("it has a stage input but no 'stages' metadata (the K×K grid of stage indices)")
        stages = np.zeros((K, K), np.int64)
    else:
        stages = parse_stages(meta, K, bad)
    T = int(stages.max()) + 1
    if T > 1 and stage is None:
        raise bad(f"its 'stages' metadata has T={T} stages but the model has no stage input")

    outputs = {o.name: o for o in session.get_outputs()}
    mixture = [n for n in MIXTURE_OUTPUTS if n in outputs]
    if CATEGORICAL_OUTPUT in outputs and not mixture:
        head = "categorical"
        expected = {CATEGORICAL_OUTPUT: ["B", K, K, 3, 256]}
    elif len(mixture) == len(MIXTURE_OUTPUTS) and CATEGORICAL_OUTPUT not in outputs:
        head = "logistic_mixture"
        expected = {"patch_logits": ["B", "S"], "pixel_logits": ["B", "S", K, K, "M"],
                    **{n: ["B", "S", K, K, 3, "M"] for n in ("loc", "log_scale", "coeff")}}
    else:
        raise bad(f"outputs {', '.join(outputs)}: expected probs (categorical head) or "
                  f"{', '.join(MIXTURE_OUTPUTS)} (logistic_mixture head)")
    for name, dims in expected.items():
        o = outputs[name]
        declared = o.shape
        if o.type != "tensor(float)" or (isinstance(declared, list) and (
                len(declared) != len(dims) or any(isinstance(d, int) and isinstance(e, int) and d != e
                                                  for d, e in zip(declared, dims)))):
            raise bad(f"output {name} is {o.type} {declared}, expected float32 "
                      f"[{', '.join(map(str, dims))}]")
    return Interface(K=K, context=ctx.name, stage_input=stage is not None, stages=stages, T=T, head=head,
                     expected=expected, features=session.get_modelmeta().custom_metadata_map.get(META_FEATURES))


def parse_stages(text: str, K: int, bad) -> np.ndarray:
    """The `stages` metadata (a JSON K×K grid of stage indices 0..T−1, each used) → int64 [K, K]."""
    try:
        grid = json.loads(text)
    except ValueError:
        raise bad(f"its 'stages' metadata is not JSON: {text[:40]!r}") from None
    if not (isinstance(grid, list) and len(grid) == K
            and all(isinstance(row, list) and len(row) == K for row in grid)
            and all(isinstance(v, int) and not isinstance(v, bool) for row in grid for v in row)):
        raise bad(f"its 'stages' metadata must be a {K}×{K} grid (list of lists) of integer stage "
                  f"indices, got {text[:40]!r}")
    stages = np.array(grid, np.int64)
    used = np.unique(stages)
    if used[0] != 0 or len(used) != used[-1] + 1:
        raise bad(f"its 'stages' metadata must use every stage 0..T−1 and no other, got "
                  f"{', '.join(map(str, used))}")
    return stages


def split_parts(model_path: str, interface: Interface) -> list[bytes]:
    """The serialized graphs of a split file's two halves (the encoder up to `interface.features`, the rest).  Cut
    once with onnx.utils.Extractor and kept in the cache folder under the file's sha256, so that later runs skip
    importing the onnx package (0.8 s of start-up); the PatchSampler checks the halves against the whole graph on
    every load, cached or not."""
    folder = cache_dir("patchsampler")
    paths = [os.path.join(folder, f"{file_sha256(model_path)}.{part}.onnx") for part in ("encoder", "rest")]
    if all(os.path.isfile(p) for p in paths):
        parts = []
        for p in paths:
            with open(p, "rb") as f:
                parts.append(f.read())
        return parts
    import onnx.utils

    proto = onnx.load(model_path)
    if interface.features not in {v.name for v in proto.graph.value_info}:
        proto = onnx.shape_inference.infer_shapes(proto)
    inputs = [interface.context] + ([STAGE] if interface.stage_input else [])
    parts = [onnx.utils.Extractor(proto).extract_model(i, o).SerializeToString() for i, o in (
        ([interface.context], [interface.features]), ([interface.features, *inputs], interface.names))]
    try:
        os.makedirs(folder, exist_ok=True)
        for path, part in zip(paths, parts):
            with open(path + f".{os.getpid()}.tmp", "wb") as f:
                f.write(part)
            os.replace(path + f".{os.getpid()}.tmp", path)
    except OSError:  # a read-only home: cut again next time
        pass
    return parts
