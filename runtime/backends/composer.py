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
    to the classifier by IO binding.  Every buffer is allocated once on the device, at `capacity` rows, and bound
    once: the normalized image, its lookup tables, the in-fills and offsets (refreshed in place by `write`), the
    composed batch (the composer's output and the classifier's input) and the classifier's output.  So only
    in-fills and offsets cross the bus, and the same addresses on every run let CUDA graphs replay (Placement
    cuda_graph); a short last batch is padded to `capacity` (its extra rows cost forwards but are not counted).
    One object serves every image of its shape: `load` puts the next image in.  `restore` has nothing to undo: the
    composer starts from the untouched image every time."""

    def __init__(self, classifier, base: np.ndarray, capacity: int, K: int):
        import onnxruntime as ort

        self.classifier, self.K, self.capacity = classifier, K, capacity
        nchw = classifier.nchw
        H, W = base.shape[1:] if nchw else base.shape[:2]
        channels = base.shape[0] if nchw else base.shape[2]
        where = classifier.placement
        self.device = where.device
        model = composer_model(H, W, K, channels, base.dtype, nchw)
        self.composer = where.helper().open(model.SerializeToString(), graph=True)
        self.session = classifier.open_graph(graph=True) if where.cuda_graph else classifier.session

        def buffer(array):
            return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

        self.base = buffer(base[None])
        self.inputs = {"patches": buffer(np.zeros((capacity, K, K, 3), np.uint8)),
                       "ys": buffer(np.zeros(capacity, np.int64)), "xs": buffer(np.zeros(capacity, np.int64))}
        self.batch = ort.OrtValue.ortvalue_from_shape_and_type([capacity, *base.shape], base.dtype, self.device, 0)
        self.compose = self.composer.io_binding()
        for name, value in (("base", self.base), ("lut", buffer(classifier.lut)), ("src", buffer(classifier.src)),
                            *self.inputs.items()):
            self.compose.bind_ortvalue_input(name, value)
        self.compose.bind_ortvalue_output("batch", self.batch)
        self.classify = self.session.io_binding()
        self.classify.bind_ortvalue_input(classifier.feed_name, self.batch)
        self.classify.bind_output(classifier.output.name, self.device)
        self._run()  # the classifier's output buffer, now that its shape is known, bound for good
        out = self.classify.get_outputs()[0]
        self.out = ort.OrtValue.ortvalue_from_shape_and_type(out.shape(), _NUMPY[out.data_type()], self.device, 0)
        self.classify.bind_ortvalue_output(classifier.output.name, self.out)

    def load(self, base: np.ndarray) -> "ComposerPerturbationBatch":
        """The next image (normalized, the shape this batch was made for) into the same device buffer."""
        self.base.update_inplace(np.ascontiguousarray(base[None]))
        return self

    def write(self, patches: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
        """patches uint8 [m, K, K, 3] at top-left corners (ys, xs) [m], m ≤ capacity; rows m.. repeat row 0."""
        m, cap = len(patches), self.capacity
        pad = np.zeros(cap - m, np.intp)
        for name, value in (("patches", patches), ("ys", ys), ("xs", xs)):
            value = np.asarray(value, np.uint8 if name == "patches" else np.int64)
            if m < cap:
                value = np.concatenate([value, value[pad]])
            self.inputs[name].update_inplace(np.ascontiguousarray(value))

    def run(self, m: int) -> np.ndarray:
        """float64 [m, Y]: p(Y | composed row) of the m in-fills last written."""
        self.classifier.rows_run += m
        self._run()
        raw = self.classify.copy_outputs_to_cpu()[0][:m].astype(np.float64).reshape(m, -1)
        return self.classifier.to_probs(raw)

    def restore(self, ys: np.ndarray, xs: np.ndarray) -> None:
        """Nothing to undo (the composer never changes the image)."""

    def _run(self) -> None:
        self.composer.run_with_iobinding(self.compose)
        self.session.run_with_iobinding(self.classify)


_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
