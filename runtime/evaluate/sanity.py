"""Model-randomization sanity check (Adebayo et al. 2018; Yi et al. Figs. 15/24) on the ONNX graph itself.

Protocol, exactly:
  * layers: the graph's nodes, in graph (topological) order, that consume float weight initializers; a layer's
    tensors are those initializers.  Never touched: integer tensors (shapes, axes, indices), inputs that configure
    an op rather than weigh its data (Clip bounds, Resize/Pad/Range arguments, Reshape/Expand shapes,
    BatchNormalization's running mean and variance — data statistics, and a variance must stay positive), and
    single-element tensors (their own std is 0, so randomizing them would change nothing).  An initializer shared
    by several nodes belongs to the last of them in graph order: the first one the cascade reaches.
  * quantized (QDQ) models: a weight that reaches its layer through DequantizeLinear (or QuantizeLinear →
    DequantizeLinear) belongs to that layer, not to the Q/DQ nodes; an integer weight (int8, uint8, int32 bias) is
    randomized in its own integer type (rounded, clipped to the type's range), and the scales and zero points are
    kept, so the layer still dequantizes the way it did.
  * randomizing a tensor replaces it by normal values with the tensor's own mean and standard deviation, same shape
    and dtype, drawn from the Philox stream keyed by (seed, index of the initializer in the graph), so a tensor's
    random values do not depend on which other tensors are randomized with it or in what order.
  * cascade: step 0 is the original model; step i randomizes the top n_i of the L layers counted from the output,
    cumulatively: n_1 = 1, then --steps-every more per step (default ceil((L − 1) / 10), so at most 11 steps after
    step 0), and the last step randomizes all L layers.
  * after each step the maps are recomputed with the same explainer settings (sampler, K, S, N, method, seed) for
    the step-0 top class, and each map is compared with its step-0 map by Spearman's rank correlation and Pearson's
    correlation over all pixels (scipy.stats); a constant map has no ranking, so its correlations are null.
A map that passes the check loses its correlation with the original as the weights go: near 0 once all are random.
"""
from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .. import outfiles
from ..classifier import OnnxClassifier
from ..methods import Explainer
from ..errors import InfolensError
from ..explanation import MAPS
from .plots import pyplot
from ..samplers import Sampler

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
INT_WEIGHT_TYPES = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32}  # quantized weights and biases (QDQ)
# Input slots that configure the op instead of weighing its data; float ones exist (Clip bounds, Resize scales…).
CONFIG_INPUTS = {"Clip": {1, 2}, "Resize": {1, 2, 3}, "Upsample": {1}, "Pad": {1, 2, 3}, "Range": {0, 1, 2},
                 "Reshape": {1}, "Expand": {1}, "Tile": {1}, "ConstantOfShape": {0}, "Dropout": {1, 2},
                 "BatchNormalization": {3, 4}}
TARGET_STEPS = 10  # --steps-every default: about this many steps after the single-layer one
ARRAY_KEYS = ("image", "maps")  # keys of a cascade result that hold arrays (kept out of the JSON)


def layer_table(model: onnx.ModelProto) -> list[dict]:
    """The layers in graph order: [{"node": name, "op": op_type, "tensors": [initializer names]}] (see module doc)."""
    inits = {t.name: t for t in model.graph.initializer}
    # a Q/DQ node's output → the tensor it (de)quantizes, to trace a layer's input back to its weight
    through = {node.output[0]: node.input[0] for node in model.graph.node
               if node.op_type in ("DequantizeLinear", "QuantizeLinear") and node.input and node.output}

    def weight(name, quantized):
        t = inits.get(name)
        kinds = FLOAT_TYPES | (INT_WEIGHT_TYPES if quantized else set())
        return t is not None and t.data_type in kinds and math.prod(t.dims) > 1

    owner: dict[str, int] = {}
    claimed: list[list[str]] = []  # per node, in input order, the weights it consumes
    for i, node in enumerate(model.graph.node):
        claimed.append([])
        if node.op_type in ("DequantizeLinear", "QuantizeLinear"):
            continue  # their weight belongs to the layer that consumes their output; scales and zero points stay
        skip = CONFIG_INPUTS.get(node.op_type, set())
        for slot, name in enumerate(node.input):
            quantized = False
            while name in through and name not in inits:
                name, quantized = through[name], True
            if slot not in skip and weight(name, quantized):
                owner[name] = i  # a later consumer takes it over: the cascade reaches it first
                claimed[i].append(name)
    table = []
    for i, node in enumerate(model.graph.node):
        tensors = [n for n in dict.fromkeys(claimed[i]) if owner[n] == i]
        if tensors:
            table.append({"node": node.name or f"{node.op_type}_{i}", "op": node.op_type, "tensors": tensors})
    return table


def layers(model: onnx.ModelProto) -> list[list[str]]:
    """Each layer's float weight initializer names, layers in graph (topological) order — input side first."""
    return [row["tensors"] for row in layer_table(model)]


def randomize(model: onnx.ModelProto, layer_names, seed: int = 0) -> onnx.ModelProto:
    """A copy of `model` whose listed initializers hold normal values with each tensor's own mean and std (std 0 →
    the mean), same shape and dtype (integer weights rounded and clipped to their type); tensor j draws from Philox
    keyed by (seed, j).  Others are untouched."""
    wanted = set(layer_names)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    found = set()
    for j, t in enumerate(out.graph.initializer):
        if t.name not in wanted:
            continue
        if t.data_type not in FLOAT_TYPES | INT_WEIGHT_TYPES:
            raise InfolensError(f"initializer {t.name!r} is neither a float nor a quantized weight: only weights are "
                                f"randomized")
        a = numpy_helper.to_array(t)
        v = a.astype(np.float64)
        rng = np.random.Generator(np.random.Philox(key=np.array([seed, j], np.uint64)))
        new = rng.standard_normal(a.shape) * v.std() + v.mean()
        if t.data_type in INT_WEIGHT_TYPES:
            info = np.iinfo(a.dtype)
            new = np.clip(np.rint(new), info.min, info.max)
        t.CopyFrom(numpy_helper.from_array(new.astype(a.dtype), t.name))
        found.add(t.name)
    missing = wanted - found
    if missing:
        raise InfolensError(f"no initializer named {sorted(missing)[0]!r} in the model")
    return out


def default_every(n_layers: int) -> int:
    """ceil((n_layers − 1) / 10): at most 11 randomized steps, the first and the last included."""
    return max(1, math.ceil((n_layers - 1) / TARGET_STEPS))


def schedule(n_layers: int, every: int | None = None) -> list[int]:
    """Layers randomized at steps 1, 2, …: 1, 1 + every, 1 + 2·every, … and finally n_layers (step 0: none).
    every defaults to default_every(n_layers)."""
    if n_layers < 1:
        raise InfolensError("the model has no float weight initializers to randomize")
    every = default_every(n_layers) if every is None else every
    if not isinstance(every, (int, np.integer)) or every < 1:
        raise InfolensError(f"steps-every must be a positive integer, got {every}", "steps_every")
    return sorted({*range(1, n_layers, every), n_layers})


def step_model(model: onnx.ModelProto, layer_list: list[list[str]], count: int, seed: int = 0) -> onnx.ModelProto:
    """The model with its top `count` layers (counted from the output) randomized."""
    return randomize(model, [n for layer in layer_list[len(layer_list) - count:] for n in layer], seed)


def correlations(a: np.ndarray, b: np.ndarray) -> dict:
    """{"spearman", "pearson"} of two maps over all pixels; None for both when either map is constant."""
    try:
        from scipy import stats
    except ImportError:
        raise InfolensError("the sanity check needs scipy for its correlations: pip install scipy") from None
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"spearman": None, "pearson": None}
    return {"spearman": float(stats.spearmanr(a, b)[0]), "pearson": float(stats.pearsonr(a, b)[0])}


def cascade(classifier: OnnxClassifier, image, sampler: Sampler | None = None, *, stride: int | None = None,
            samples: int = 2, method: str = "pmi", seed: int = 0, steps_every: int | None = None,
            batch_size: int = 64, progress: bool = False, source: str | None = None,
            runs: list[tuple[str, Sampler | None, int]] | None = None) -> dict:
    """Run the cascade (module doc) for one image.

    image: path or uint8 RGB [h, w, 3].  sampler, stride, samples, method, seed: the Explainer settings, kept for
    every step; seed also keys the weight randomization.  runs: several methods at once instead, each (method,
    sampler, samples), all on the same randomized models (their map names must differ); MIP-IN applies the
    original classifier's inverse to the randomized weights' activations.  Returns the JSON-ready record (per step:
    randomized nodes, correlations per map, top class, forwards, seconds) plus, under ARRAY_KEYS, "image" (uint8
    [H, W, 3]) and "maps" (per step, map name → float32 [H, W] for the fixed class).
    """
    t_start = time.perf_counter()
    if isinstance(image, (str, os.PathLike)):
        source = source or os.fspath(image)
    runs = runs or [(method, sampler, samples)]
    model = onnx.load(classifier.model_path)
    table = layer_table(model)
    every = default_every(len(table)) if steps_every is None else steps_every
    counts = [0] + schedule(len(table), every)
    layer_list = [row["tensors"] for row in table]
    record = {"sanity_check": 1, "source": source, "protocol": __doc__, "model": classifier.describe(),
              "randomization_seed": seed, "steps_every": every, "n_layers": len(table), "layers": table,
              "steps": []}
    step_maps, cls, first = [], None, {}
    with tempfile.TemporaryDirectory(prefix="infolens-sanity-") as tmp:
        for i, count in enumerate(counts):
            t0 = time.perf_counter()
            clf = classifier if count == 0 else twin(classifier, step_model(model, layer_list, count, seed),
                                                      os.path.join(tmp, f"step{i}.onnx"))
            maps, forwards = {}, 0
            for name, run_sampler, n in runs:
                e = _method(clf, classifier, name, run_sampler, batch_size, progress).explain(
                    image, "top1" if cls is None else [cls], stride, n, seed, source)
                if cls is None:
                    cls = int(e.classes[0])
                    record["params"], record["image_size"] = e.params, list(e.image.shape[:2])
                    record["class"] = {"index": cls, "label": e.labels[0], "prob": float(e.probs[cls])}
                maps.update({m: e.map_for(m, cls) for m in e.maps})
                forwards += e.forwards
            if i == 0:
                first, image_used = maps, e.image
            step_maps.append(maps)
            top = int(np.argmax(e.probs))
            record["steps"].append({
                "step": i, "layers_randomized": count,
                "nodes": [row["node"] for row in reversed(table[len(table) - count:])] if count else [],
                "correlation": {name: correlations(first[name], m) for name, m in maps.items()},
                "constant_maps": [name for name, m in maps.items() if np.ptp(m) == 0],
                "top1": {"index": top, "label": clf.labels[top], "prob": float(e.probs[top])},
                "p_class": float(e.probs[cls]), "forwards": forwards, "seconds": time.perf_counter() - t0})
    record["forwards"] = sum(s["forwards"] for s in record["steps"])
    record["seconds"] = time.perf_counter() - t_start
    record["image"], record["maps"] = image_used, step_maps
    return record


def _method(clf: OnnxClassifier, original: OnnxClassifier, name: str, sampler, batch_size: int, progress: bool):
    """The attribution method on `clf` (a step's model); MIP-IN keeps the inverse fitted for `original`."""
    if name == "mipin":
        from ..catalog import file_sha256
        from ..methods.mipin import MIPIN, default_inverse

        return MIPIN(clf, default_inverse(original), batch_size, progress,
                     fitted_for=file_sha256(original.model_path))
    return Explainer(clf, sampler, batch_size=batch_size, progress=progress).method(name)


def twin(classifier: OnnxClassifier, model: onnx.ModelProto, path: str) -> OnnxClassifier:
    """`model` saved at `path`, as a classifier with exactly `classifier`'s preprocessing, output handling and
    labels."""
    onnx.save(model, path)
    return classifier.twin(path)


# ---- outputs -----------------------------------------------------------------------------------------------------
def save(result: dict, out_dir: str) -> dict[str, str]:
    """Write sanity.json, sanity_correlation.png and sanity_maps.png into out_dir; returns name → path."""
    os.makedirs(out_dir, exist_ok=True)
    files = {k: os.path.join(out_dir, f) for k, f in (("json", "sanity.json"), ("plot", "sanity_correlation.png"),
                                                      ("maps", "sanity_maps.png"))}
    record = {k: v for k, v in result.items() if k not in ARRAY_KEYS}
    record["files"] = {k: os.path.basename(v) for k, v in files.items()}
    outfiles.write_json(files["json"], record)
    correlation_plot(record, files["plot"])
    map_strip(result, files["maps"])
    return files


def table_lines(record: dict) -> list[str]:
    """The per-step table printed by `infolens eval sanity`."""
    names = list(record["steps"][0]["correlation"])
    head = f"{'step':>4}  {'layers':>7}  " + "  ".join(f"{n + ' spearman':>13}  {n + ' pearson':>12}" for n in names)
    lines = [head + "  top class"]
    for s in record["steps"]:
        cells = []
        for n in names:
            c = s["correlation"][n]
            cells += [_fmt(c["spearman"]).rjust(13), _fmt(c["pearson"]).rjust(12)]
        t = s["top1"]
        lines.append(f"{s['step']:>4}  {s['layers_randomized']:>3}/{record['n_layers']:<3}  " + "  ".join(cells)
                     + f"  {t['label']} ({t['index']}) p={t['prob']:.3f}")
    return lines


def _fmt(v):
    return "null" if v is None else f"{v:+.3f}"


def correlation_plot(record: dict, path: str) -> None:
    """Correlation with the step-0 map against the cascade step (matplotlib PNG): per map a Spearman line (solid,
    circles) and a Pearson line (dashed, squares); null values break the line."""
    plt = pyplot()
    steps = record["steps"]
    x = [s["layers_randomized"] for s in steps]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    for k, name in enumerate(steps[0]["correlation"]):
        for kind, style in (("spearman", "-o"), ("pearson", "--s")):
            y = [np.nan if s["correlation"][name][kind] is None else s["correlation"][name][kind] for s in steps]
            ax.plot(x, y, style, color=f"C{3 if k == 0 else k - 1}", ms=4, label=f"{name} {kind}")
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel(f"layers randomized, from the output down (of {record['n_layers']})")
    ax.set_ylabel("correlation with the original map")
    p = record.get("params", {})
    ax.set_title(f"Cascading randomization: {record['model'].get('name')}, {p.get('method')} / "
                 f"{p.get('sampler', '')} K={p.get('K', '')} S={p.get('S', '')}, class {record['class']['label']}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    outfiles.save_figure(fig, path)
    plt.close(fig)


def map_strip(result: dict, path: str) -> None:
    """The input image, then one column per step (matplotlib PNG): a row per map, each tile scaled to its own
    range (the pattern, not the magnitude, is compared), captioned with the layers randomized and Spearman's ρ."""
    plt = pyplot()
    names = list(result["maps"][0])
    cols = len(result["maps"]) + 1
    fig, axes = plt.subplots(len(names), cols, figsize=(1.3 * cols, 1.55 * len(names)), dpi=110, squeeze=False)
    for r, name in enumerate(names):
        axes[r, 0].imshow(result["image"])
        axes[r, 0].set_ylabel(name.upper(), fontsize=8)
        for c, (maps, s) in enumerate(zip(result["maps"], result["steps"]), start=1):
            m = maps[name]
            if MAPS[name][1] == "diverging":
                v = float(np.abs(m).max()) or 1e-12
                axes[r, c].imshow(m, cmap="bwr", vmin=-v, vmax=v)
            else:
                axes[r, c].imshow(m, cmap="inferno")
            axes[r, c].set_xlabel(f"ρ {_fmt(s['correlation'][name]['spearman'])}", fontsize=7)
            if r == 0:
                axes[r, c].set_title(f"{s['layers_randomized']}/{result['n_layers']}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    outfiles.save_figure(fig, path)
    plt.close(fig)
