"""Fitting MIP-IN's inverse network on a classifier's own activations (DESIGN §8, our reconstruction), in closed form.

Every inverse layer is linear without bias and fitted on centred data: for each tensor T of the inverted part, from
the top down, T's signal is the sum of its readers' inverses applied to their outputs' signals, and the readers'
parameters are chosen jointly by ridge regression so that the sum reconstructs X_T − μ_T over the fitting crops:

* Gemm/MatMul, a 1×1 Conv, each input of an Add of two activations: a linear map over channels (dense);
* any other Conv (stride, padding, groups, depthwise), AveragePool, BatchNormalization: a ConvTranspose of the same
  geometry, fitted per group on the features each kernel tap places (exact least squares, small per group);
* Relu / Clip(min 0): the signal times 1[X_l ≠ 0], the forward pattern; MaxPool: unpooled to the argmax;
  GlobalAveragePool / ReduceMean: broadcast; reshapes, transposes, Concat, Q/DQ: their inverses.

The signal at the logits is y − μ_y; at inference it is e_c ⊙ (y − μ_y) for class c, so the classes' signals sum to
the one the layers were fitted on.  A fit never sees a signal computed differently from inference: both are run by
the same ONNX emitters (inverse.py).  Ridge: λ = `ridge` · tr(G)/d added to the Gram matrix G (d its size), pulling
a Gemm/MatMul/1×1-conv inverse toward the pseudo-inverse of the forward weights and the others toward 0 — our
choice (on the shipped EfficientNet-Lite0, 384 crops: held-out R² of the pooled features 0.38 without the pull,
0.86 with it, ridge 0.1); R² per fitted tensor on held-out crops.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm import tqdm

from ..errors import InfolensError
from . import inverse as inv
from .activations import BATCH, Activations
from .part import InvertedPart, taps



def dequantize(node, values: dict) -> np.ndarray:
    """DequantizeLinear of constants: (x − zero point) · scale, per tensor or along `axis`."""
    x = values[node.input[0]].astype(np.float64)
    scale = values[node.input[1]].astype(np.float64)
    zero = values[node.input[2]].astype(np.float64) if len(node.input) > 2 and node.input[2] else np.zeros(1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[inv.attrs(node).get("axis", 1) % x.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((x - zero) * scale).astype(np.float32)


class Fitter:
    """Records the crops' activations (mipin/activations.py), then fits the inverse top-down.  `plan` records every step so that `export` can emit the same inverse as one graph."""

    def __init__(self, classifier, part: InvertedPart, images: np.ndarray, ridge: float = 0.1,
                 holdout: float = 0.2, seed: int = 0, progress: bool = True, workdir: str | None = None,
                 prior: bool = True):
        self.clf, self.part, self.ridge, self.progress = classifier, part, ridge, progress
        self.use_prior = prior
        model = classifier.graph()
        self.tapped, self.indices = taps(model, part)
        self.inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for n in model.graph.node:
            if n.op_type == "Constant":
                self.inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            elif n.op_type == "DequantizeLinear" and all(i in self.inits for i in n.input if i):
                self.inits[n.output[0]] = dequantize(n, self.inits)  # a QDQ model's weight: a constant
        self.readers: dict[str, list] = {}
        for n in part.nodes:
            for t in dict.fromkeys(n.input):
                if t and t not in self.inits:
                    self.readers.setdefault(t, []).append(n)
        mask_of = {n.output[0] for n in part.nodes if n.op_type in ("Relu", "Clip")}
        wanted = [part.logits] + list(self.readers) + [n.output[0] for n in part.nodes] + list(self.indices.values())
        self.acts = Activations(classifier, self.tapped, [t for t in dict.fromkeys(wanted) if t not in self.inits],
                                images, set(self.indices.values()), mask_of, holdout, seed, progress, workdir)
        self.plan: list[dict] = []
        self.r2: dict[str, float] = {}

    # ---- fitting ----------------------------------------------------------------------------------------------
    def fit(self) -> None:
        part = self.part
        signals = {part.logits: self.acts.centred(part.logits, np.arange(self.acts.N))}
        done: set[str] = set()
        bar = tqdm(total=len(part.nodes), unit="op", desc="mipin: inverse layers", disable=not self.progress,
                   leave=False)
        for node in reversed(part.nodes):
            done.add(id(node))
            for t in dict.fromkeys(node.input):
                if not t or t in self.inits or t in signals:
                    continue
                if all(id(r) in done for r in self.readers.get(t, [])):
                    signals[t] = self._resolve(t, signals)
            bar.update(1)
        bar.close()
        if part.map_tensor not in signals:
            raise InfolensError(f"the inverse did not reach the map layer {part.map_tensor}", "map_layer")
        self.map_signal = signals[part.map_tensor]

    def _resolve(self, t: str, signals: dict) -> np.ndarray:
        shape = self.acts.shapes[t]  # every tensor a part node reads was recorded
        free, param = [], []
        for n in self.readers[t]:
            (param if self._parametric(n, t) else free).append(n)
        terms = [self._apply_free(n, t, shape, signals) for n in free]
        step = {"tensor": t, "shape": shape, "free": [n.output[0] for n in free], "param": []}
        if param:
            target = self.acts.centred(t, np.arange(self.acts.N))
            for term in terms:
                target -= term
            fitted = self._fit_joint(t, shape, param, signals, target)
            step["param"] = fitted
            terms += [self._apply_param(f, signals) for f in fitted]
            self.r2[t] = self._r2(t, sum(terms))
        self.plan.append(step)
        return sum(terms).astype(np.float32)

    def _parametric(self, n, t) -> bool:
        if n.op_type in ("Gemm", "MatMul", "Conv", "BatchNormalization", "AveragePool"):
            return True
        if n.op_type == "Add":
            return all(i not in self.inits for i in n.input)
        return False

    def _apply_free(self, n, t, shape, signals) -> np.ndarray:
        """A parameter-free reader's contribution to t's signal, on the crops: the export's emitter, run."""
        taps_in = {}
        if n.op_type in ("Relu", "Clip"):
            taps_in[n.output[0]] = self.acts.masks[n.output[0]]  # 0/1: Sign() of it is the mask, as of X at inference
        elif n.op_type == "MaxPool":
            taps_in[self.indices[n.output[0]]] = self.acts.x[self.indices[n.output[0]]]
        return self._run(lambda g, x: inv.free_layer(g, n, t, shape, x, self.acts.shapes, self.indices), signals[n.output[0]], taps_in)

    # dense: a linear map over channels (per position); general: a ConvTranspose of the conv's geometry
    def _kind(self, n, t, shape):
        op = n.op_type
        if op in ("Gemm", "MatMul") or len(shape) == 2:
            if op == "Gemm" and inv.attrs(n).get("transA", 0):
                raise InfolensError("MIP-IN cannot invert a Gemm with transA=1 yet", "model")
            return "dense", None
        out_shape = self.acts.shapes[n.output[0]]
        if op == "Add":
            return "dense", None
        if op == "Conv":
            w = self.inits[n.input[1]]
            kernel = list(w.shape[2:])
            group = inv.attrs(n).get("group", 1)
            geom = inv.conv_geometry(n, shape, out_shape, kernel)
            if kernel == [1, 1] and group == 1 and geom["strides"] == [1, 1] and not any(geom["pads"]):
                return "dense", None
            return "conv", {"kernel": kernel, "group": group, "geom": geom, "c_out": out_shape[1]}
        c = shape[1]
        kernel = list(inv.attrs(n).get("kernel_shape", [1, 1])) if op == "AveragePool" else [1, 1]
        return "conv", {"kernel": kernel, "group": c, "geom": inv.conv_geometry(n, shape, out_shape, kernel), "c_out": c}

    def _fit_joint(self, t, shape, readers, signals, target) -> list[dict]:
        kinds = [self._kind(n, t, shape) for n in readers]
        if all(k == "dense" or spec["group"] == 1 for k, spec in kinds):
            return self._fit_shared(shape, readers, kinds, signals, target)
        if len(readers) == 1:
            return [self._fit_conv(t, shape, readers[0], kinds[0][1], signals, target)]
        raise InfolensError(f"tensor {t} is read by {', '.join(n.op_type for n in readers)}: a joint inverse of a "
                            f"grouped conv and other layers is not supported yet", "map_layer")

    def _features_dense(self, s):  # [B, C, h, w] or [B, C] → [B·h·w, C]
        return s.reshape(len(s), s.shape[1], -1).transpose(0, 2, 1).reshape(-1, s.shape[1]) if s.ndim > 2 else s

    def _features(self, n, kind, spec, s):
        """The features a reader's inverse is linear in, shared by every channel of its input: its output signal
        itself (dense), or what each kernel tap places of each of its channels (a conv of group 1)."""
        if kind == "dense":
            return self._features_dense(s)
        kh, kw = spec["kernel"]
        return self._features_dense(self._run(lambda g, x: inv.delta_features(g, x, spec["c_out"], (kh, kw),
                                                                             spec["geom"]), s, {}))

    def _fit_shared(self, shape, readers, kinds, signals, target) -> list[dict]:
        """Readers whose inverses are linear in features shared by all channels (dense maps, convs of group 1),
        fitted jointly: one ridge regression."""
        sizes = [signals[n.output[0]].shape[1] * (1 if k == "dense" else spec["kernel"][0] * spec["kernel"][1])
                 for n, (k, spec) in zip(readers, kinds)]
        d = sum(sizes)
        gram, cross = np.zeros((d, d)), np.zeros((d, shape[1]))
        for i in range(0, len(self.acts.fit_idx), BATCH):
            idx = self.acts.fit_idx[i:i + BATCH]
            f = np.concatenate([self._features(n, k, spec, signals[n.output[0]][idx])
                                for n, (k, spec) in zip(readers, kinds)], 1).astype(np.float64)
            y = self._features_dense(target[idx]).astype(np.float64)
            gram += f.T @ f
            cross += f.T @ y
        prior = np.concatenate([self._prior(n, k, size, shape[1]) for n, (k, _), size in zip(readers, kinds, sizes)])
        theta = self._solve(gram, cross, prior)
        out, at = [], 0
        for n, (k, spec), size in zip(readers, kinds, sizes):
            part = theta[at:at + size].astype(np.float32)
            at += size
            if k == "dense":
                out.append({"kind": "dense", "reader": n.output[0], "rank": len(shape), "theta": part,
                            "shape": shape})
                continue
            kh, kw = spec["kernel"]
            weight = part.reshape(spec["c_out"], kh * kw, shape[1]).transpose(0, 2, 1).reshape(
                spec["c_out"], shape[1], kh, kw)
            out.append({"kind": "conv", "reader": n.output[0], "weight": np.ascontiguousarray(weight),
                        "geom": {**spec["geom"], "group": 1}})
        return out

    def _fit_conv(self, t, shape, n, spec, signals, target) -> dict:
        c_out, c_in, group = spec["c_out"], shape[1], spec["group"]
        kh, kw = spec["kernel"]
        taps_k = kh * kw
        fo, fi = c_out // group, c_in // group  # channels per group, out and in
        f_dim = fo * taps_k
        gram, cross = np.zeros((group, f_dim, f_dim)), np.zeros((group, f_dim, fi))
        s = signals[n.output[0]]
        for i in range(0, len(self.acts.fit_idx), BATCH):
            idx = self.acts.fit_idx[i:i + BATCH]
            feats = self._run(lambda g, x: inv.delta_features(g, x, c_out, (kh, kw), spec["geom"]), s[idx], {})
            b = len(idx)
            f = feats.reshape(b, group, f_dim, -1).astype(np.float64)
            y = target[idx].reshape(b, group, fi, -1).astype(np.float64)
            gram += np.einsum("bgfp,bgep->gfe", f, f)
            cross += np.einsum("bgfp,bgcp->gfc", f, y)
        theta = np.stack([self._solve(gram[j], cross[j]) for j in range(group)])  # [group, fo·k², fi]
        weight = theta.reshape(group, fo, taps_k, fi).transpose(0, 1, 3, 2).reshape(c_out, fi, kh, kw)
        return {"kind": "conv", "reader": n.output[0], "weight": weight.astype(np.float32),
                "geom": {**spec["geom"], "group": group}}

    def _prior(self, n, kind, size, c_in) -> np.ndarray:
        """What the ridge pulls a dense inverse toward: the pseudo-inverse of the forward weights (Gemm, MatMul,
        1×1 Conv: x ≈ W⁺ y, exact where W has full column rank); zero for the others (Add inputs, spatial convs)."""
        if kind != "dense" or n.op_type not in ("Gemm", "MatMul", "Conv") or not self.use_prior:
            return np.zeros((size, c_in))
        w = self.inits.get(n.input[1])
        if w is None:
            return np.zeros((size, c_in))
        if n.op_type == "Gemm":  # y = x·Wᵀ (transB) or x·W: as a map x → y, A [Y, F]
            a = w if inv.attrs(n).get("transB", 0) else w.T
        elif n.op_type == "MatMul":
            a = w.T
        else:
            a = w.reshape(w.shape[0], -1)  # [C_out, C_in]
        return np.linalg.pinv(a.astype(np.float64)).T  # S_x = S_y · (A⁺)ᵀ

    def _solve(self, gram, cross, prior=None):
        """argmin ‖Fθ − Y‖² + λ‖θ − prior‖², λ = ridge · tr(G)/d."""
        d = len(gram)
        lam = self.ridge * max(np.trace(gram) / d, 1e-12)
        rhs = cross if prior is None else cross + lam * prior
        return np.linalg.solve(gram + lam * np.eye(d), rhs)

    def _apply_param(self, f, signals) -> np.ndarray:
        return self._run(lambda g, x: inv.param_layer(g, f, x), signals[f["reader"]], {})

    def _r2(self, t, estimate) -> float:
        truth = self.acts.centred(t, self.acts.held)
        est = estimate[self.acts.held]
        return float(1 - ((truth - est) ** 2).sum() / max((truth ** 2).sum(), 1e-30))

    def _run(self, emit, s, taps_in: dict) -> np.ndarray:
        """emit(graph, signal name) on the signal s [B, …] (with per-crop taps), in batches, on ONNX Runtime."""
        outs = []
        for i in range(0, len(s), 4 * BATCH):
            g = inv.Graph()
            x = g.input("s")
            out = emit(g, x)
            feeds = {"s": np.ascontiguousarray(s[i:i + 4 * BATCH], np.float32)}
            for k, v in taps_in.items():
                v = v[i:i + 4 * BATCH]
                feeds[k] = np.ascontiguousarray(v, np.int64 if v.dtype == np.int64 else np.float32)
            outs.append(inv.run(g, feeds, [out])[0])
        return np.concatenate(outs)

    # ---- export ----------------------------------------------------------------------------------------------
    def export(self) -> onnx.ModelProto:
        """The fitted inverse as one ONNX graph (inverse.network)."""
        return inv.network(self.part, self.plan, self.acts.shapes, self.acts.mu, self.indices)


def fit(classifier, part: InvertedPart, images: np.ndarray, ridge: float = 0.1, holdout: float = 0.2, seed: int = 0,
        progress: bool = True) -> tuple[onnx.ModelProto, dict]:
    """Fit the inverse of `part` on uint8 RGB input-space crops [N, H, W, 3]; returns the inverse ONNX model and a
    record: the taps it reads, the map layer and its shape, held-out R² per fitted tensor, seconds."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="infolens-mipin-") as work:
        f = Fitter(classifier, part, images, ridge, holdout, seed, progress, work)
        f.fit()
        model = f.export()
        f.acts.release()
    taps_in = [i.name for i in model.graph.input if i.name not in (part.logits, "classes")]
    record = {"logits": part.logits, "taps": taps_in, "map_layer": part.map_tensor,
              "map_shape": f.acts.shapes[part.map_tensor], "ridge": ridge, "holdout": holdout, "seed": seed,
              "crops": int(f.acts.N), "held_out_crops": int(len(f.acts.held)), "r2": f.r2,
              "seconds": time.perf_counter() - t0}
    return model, record


def save(model: onnx.ModelProto, record: dict, classifier, path: str, data: list[str] | None = None) -> dict:
    """Write the inverse to `path` (<stem>.mipin.onnx) and its card beside it (<stem>.mipin.json), atomically; the
    card names the classifier (name, sha256), the taps, the map layer, the data and the fit's record."""
    from .. import outfiles
    from ..catalog import card_path, file_sha256

    card = {"task": "mipin-inverse", "classifier": classifier.name,
            "classifier_sha256": file_sha256(classifier.model_path), **record, "data": data or [],
            "inputs": "the logits tensor [1, Y], classes int64 [k], the taps (batch 1): the ReLU outputs whose "
                      "pattern masks the signal, the MaxPool argmax indices and the map layer's activation X",
            "output": "maps float [k, h, w] at the map layer: Σ_channels signal ⊙ (X − map_mean); signal "
                      "[k, C, h, w], the class's signal there; map_mean [C, h, w], the map layer's mean activation "
                      "on the fitting crops",
            "method": __doc__.split("\n\n")[1].replace("\n", " ")}
    outfiles.write_atomic(path, lambda f: f.write(model.SerializeToString()))
    outfiles.write_json(card_path(path), card)
    return card
