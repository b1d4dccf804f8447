"""The perturbation batch built by ONNX Runtime itself (DESIGN §11): a small "composer" graph makes the classifier's
input batch from the normalized image and the in-fills, and IO binding hands its output to the classifier without a
copy through numpy.  On the CPU provider this is the code path the CUDA backend will run (only in-fills and offsets
cross the bus there); its batches equal the host batch (backends/cpu.py) bit for bit.

The composer uses no ScatterND (which falls back to the CPU provider on recent opsets): each in-fill is placed by
two one-hot matrix products, R_b · P_b · C_bᵀ with R_b [H, K] and C_b [W, K] selecting its rows and columns (every
output value is one in-fill value times 1 plus zeros, so exact), and mapped through the classifier's per-channel
lookup table with Gather, as the host kernels do.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import sessions

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8}


def composer_model(H: int, W: int, K: int, channels: int, dtype, nchw: bool) -> onnx.ModelProto:
    """inputs: base [1, C, H, W] (or [1, H, W, C]) of the model's dtype, patches uint8 [B, K, K, 3], ys, xs int64
    [B], lut [C, 256] (model dtype), src int64 [C] → batch [B, C, H, W] (or NHWC): the base with patch b at
    (ys[b], xs[b]), each model channel c reading RGB channel src[c] through lut[c]."""
    elem = _ELEM[np.dtype(dtype)]
    c = channels
    consts = {
        "h_range": np.arange(H, dtype=np.int64).reshape(1, H, 1), "w_range": np.arange(W, dtype=np.int64).reshape(1, W, 1),
        "k_range": np.arange(K, dtype=np.int64).reshape(1, 1, K), "offsets": (np.arange(c, dtype=np.int64) * 256),
        "one": np.ones(1, np.float32), "to_b1": np.array([-1, 1], np.int64), "flat": np.array([-1], np.int64),
        "axis1": np.array([1], np.int64)}
    n = helper.make_node
    nodes = [
        # in-fill values in model space: [B, K, K, C] → [B, C, K, K]
        n("Gather", ["patches", "src"], ["picked"], axis=3),
        n("Cast", ["picked"], ["picked64"], to=TensorProto.INT64),
        n("Add", ["picked64", "offsets"], ["lut_idx"]),
        n("Reshape", ["lut", "flat"], ["lut_flat"]),
        n("Gather", ["lut_flat", "lut_idx"], ["mapped"], axis=0),
        n("Cast", ["mapped"], ["mapped_f"], to=TensorProto.FLOAT),
        n("Transpose", ["mapped_f"], ["patch"], perm=[0, 3, 1, 2]),
        # one-hot row and column selectors R [B, H, K], C [B, W, K]
        n("Reshape", ["ys", "to_b1"], ["ys2"]), n("Unsqueeze", ["ys2", "axis1"], ["ys3"]),
        n("Sub", ["h_range", "ys3"], ["dh"]), n("Equal", ["dh", "k_range"], ["rows_b"]),
        n("Cast", ["rows_b"], ["rows"], to=TensorProto.FLOAT),
        n("Reshape", ["xs", "to_b1"], ["xs2"]), n("Unsqueeze", ["xs2", "axis1"], ["xs3"]),
        n("Sub", ["w_range", "xs3"], ["dw"]), n("Equal", ["dw", "k_range"], ["cols_b"]),
        n("Cast", ["cols_b"], ["cols"], to=TensorProto.FLOAT),
        # placed [B, C, H, W] = R · P · Cᵀ; inside [B, 1, H, W] = which pixels a patch covers
        n("Unsqueeze", ["rows", "axis1"], ["rows4"]), n("MatMul", ["rows4", "patch"], ["half"]),
        n("Transpose", ["cols"], ["cols_t"], perm=[0, 2, 1]), n("Unsqueeze", ["cols_t", "axis1"], ["cols4"]),
        n("MatMul", ["half", "cols4"], ["placed"]),
        n("ReduceSum", ["rows", "flat"], ["row_in"], keepdims=1), n("ReduceSum", ["cols", "flat"], ["col_in"], keepdims=1),
        n("Transpose", ["col_in"], ["col_in_t"], perm=[0, 2, 1]), n("Mul", ["row_in", "col_in_t"], ["inside3"]),
        n("Unsqueeze", ["inside3", "axis1"], ["inside"]), n("Sub", ["one", "inside"], ["outside"]),
    ]
    base = "base"
    if not nchw:
        nodes.append(n("Transpose", ["base"], ["base_nchw"], perm=[0, 3, 1, 2]))
        base = "base_nchw"
    nodes += [n("Cast", [base], ["base_f"], to=TensorProto.FLOAT), n("Mul", ["base_f", "outside"], ["kept"]),
              n("Add", ["kept", "placed"], ["composed"])]
    last = "composed"
    if not nchw:
        nodes.append(n("Transpose", [last], ["composed_nhwc"], perm=[0, 2, 3, 1]))
        last = "composed_nhwc"
    nodes.append(n("Cast", [last], ["batch"], to=elem))
    shape = [1, c, H, W] if nchw else [1, H, W, c]
    out_shape = ["B", c, H, W] if nchw else ["B", H, W, c]
    inputs = [helper.make_tensor_value_info("base", elem, shape),
              helper.make_tensor_value_info("patches", TensorProto.UINT8, ["B", K, K, 3]),
              helper.make_tensor_value_info("ys", TensorProto.INT64, ["B"]),
              helper.make_tensor_value_info("xs", TensorProto.INT64, ["B"]),
              helper.make_tensor_value_info("lut", elem, [c, 256]),
              helper.make_tensor_value_info("src", TensorProto.INT64, [c])]
    graph = helper.make_graph(nodes, "composer", inputs, [helper.make_tensor_value_info("batch", elem, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


class ComposerPerturbationBatch:
    """The perturbation batch of backends/cpu.py, built by the composer graph on the classifier's device and handed
    to the classifier by IO binding.  `write` keeps the in-fills and offsets, `run` composes and classifies them,
    `restore` has nothing to undo: the composer starts from the untouched image every time."""

    def __init__(self, classifier, base: np.ndarray, capacity: int, K: int):
        import onnxruntime as ort

        self.classifier, self.K = classifier, K
        nchw = classifier.nchw
        H, W = base.shape[1:] if nchw else base.shape[:2]
        channels = base.shape[0] if nchw else base.shape[2]
        device = "cuda" if classifier.device == "cuda" else "cpu"
        self.device = device
        model = composer_model(H, W, K, channels, base.dtype, nchw)
        self.composer = sessions.open_session(model.SerializeToString(), classifier.session.get_providers())
        self.base = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(base[None]), device, 0)
        self.lut = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(classifier.lut), device, 0)
        self.src = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(classifier.src), device, 0)
        self._feeds = None

    def write(self, patches: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
        """patches uint8 [m, K, K, 3] at top-left corners (ys, xs) [m]."""
        self._feeds = (np.ascontiguousarray(patches), np.ascontiguousarray(ys, np.int64),
                       np.ascontiguousarray(xs, np.int64))

    def run(self, m: int) -> np.ndarray:
        """float64 [m, Y]: p(Y | composed row) of the m in-fills last written."""
        import onnxruntime as ort

        clf = self.classifier
        patches, ys, xs = (a[:m] for a in self._feeds)
        bind = self.composer.io_binding()
        bind.bind_ortvalue_input("base", self.base)
        bind.bind_ortvalue_input("lut", self.lut)
        bind.bind_ortvalue_input("src", self.src)
        for name, value in (("patches", patches), ("ys", ys), ("xs", xs)):
            bind.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, self.device, 0))
        bind.bind_output("batch", self.device)
        self.composer.run_with_iobinding(bind)
        batch = bind.get_outputs()[0]
        return clf.predict_bound(batch, m)

    def restore(self, ys: np.ndarray, xs: np.ndarray) -> None:
        """Nothing to undo (the composer never changes the image)."""
