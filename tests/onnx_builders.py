"""Small real ONNX models built with onnx.helper for the tests: classifiers in every layout/order/output kind, and a
tiny PatchSampler with the fixed interface."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10  # onnx 1.23 writes 14 by default, which onnxruntime 1.31 rejects
OPSET = [helper.make_opsetid("", 17)]
MEAN = np.array([120.0, 110.0, 100.0])
STD = np.array([60.0, 50.0, 40.0])


def weights(H, W, n_classes=5, seed=0):
    """Conv 3→4 (3×3) and a dense layer over every pixel: the answer depends on where things are."""
    rng = np.random.default_rng(seed)
    conv = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    dense = rng.normal(0, 3.0 / np.sqrt(4 * H * W), (4 * H * W, n_classes)).astype(np.float32)
    return conv, dense


def classifier(path, H=17, W=19, layout="NCHW", order="RGB", kind="logits", dtype="float32", batch="N",
               n_classes=5, seed=0, reshape_batch=None, metadata=None, rank=4):
    """Write an ONNX classifier; all variants with the same seed compute the same function of the RGB image.

    dtype "float32": the input is (pixel - MEAN) / STD already; "uint8": raw pixels, normalized inside the graph.
    reshape_batch: a fixed batch in a Reshape constant (a graph whose batch cannot be made symbolic).
    """
    conv, dense = weights(H, W, n_classes, seed)
    if order == "BGR":
        conv = conv[:, ::-1].copy()
    nodes, inits = [], [numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(dense, "dense_w")]
    shape = [batch, 3, H, W] if layout == "NCHW" else [batch, H, W, 3]
    if rank != 4:
        shape = [batch, 3 * H * W]
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.UINT8
    x = "input"
    if dtype == "uint8":
        m, s = (MEAN[::-1] if order == "BGR" else MEAN), (STD[::-1] if order == "BGR" else STD)
        cshape = [1, 3, 1, 1] if layout == "NCHW" else [1, 1, 1, 3]
        inits += [numpy_helper.from_array(m.reshape(cshape).astype(np.float32), "mean"),
                  numpy_helper.from_array(s.reshape(cshape).astype(np.float32), "std")]
        nodes += [helper.make_node("Cast", [x], ["xf"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["xf", "mean"], ["xc"]), helper.make_node("Div", ["xc", "std"], ["xn"])]
        x = "xn"
    if rank != 4:
        inits.append(numpy_helper.from_array(np.array([-1, 3, H, W], np.int64), "img_shape"))
        nodes.append(helper.make_node("Reshape", [x, "img_shape"], ["x4"]))
        x = "x4"
    elif layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    nodes += [helper.make_node("Conv", [x, "conv_w"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"])]
    if reshape_batch:
        inits.append(numpy_helper.from_array(np.array([reshape_batch, -1], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["r", "flat_shape"], ["f"]))
    else:
        nodes.append(helper.make_node("Flatten", ["r"], ["f"]))
    out = "logits" if kind == "logits" else "z"
    nodes.append(helper.make_node("MatMul", ["f", "dense_w"], [out]))
    if kind == "probs":
        nodes.append(helper.make_node("Softmax", ["z"], ["probs"], axis=1))
        out = "probs"
    graph = helper.make_graph(nodes, "clf", [helper.make_tensor_value_info("input", elem, shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, n_classes])], inits)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)
    for k, v in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def reference_probs(path, images, layout="NCHW", order="RGB", dtype="float32"):
    """p(Y|x) computed the plain way (whole-image preprocessing, onnxruntime) — the brute-force reference."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images[..., ::-1] if order == "BGR" else images
    if dtype == "float32":
        m, s = (MEAN[::-1], STD[::-1]) if order == "BGR" else (MEAN, STD)
        x = ((x - m) / s).astype(np.float32)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    z = np.concatenate([sess.run(None, {"input": np.ascontiguousarray(x[i:i + 1])})[0] for i in range(len(x))])
    z = z.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def patch_sampler(path, K):
    """A tiny PatchSampler with the fixed interface: each centre sub-pixel's distribution depends on the
    context's top-left K×K pixels (a real, context-dependent categorical, not a constant)."""
    ramp = np.linspace(-6, 6, 256, dtype=np.float32)
    inits = [numpy_helper.from_array(np.array([0, 0], np.int64), "starts"),
             numpy_helper.from_array(np.array([K, K], np.int64), "ends"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
             numpy_helper.from_array(np.array([255.0], np.float32), "s255"),
             numpy_helper.from_array(np.array([0.5], np.float32), "half"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(ramp, "ramp")]
    nodes = [helper.make_node("Cast", ["context"], ["cf"], to=TensorProto.FLOAT),
             helper.make_node("Slice", ["cf", "starts", "ends", "axes"], ["tl"]),
             helper.make_node("Div", ["tl", "s255"], ["t1"]), helper.make_node("Sub", ["t1", "half"], ["t2"]),
             helper.make_node("Unsqueeze", ["t2", "last"], ["t3"]), helper.make_node("Mul", ["t3", "ramp"], ["t4"]),
             helper.make_node("Softmax", ["t4"], ["probs"], axis=-1)]
    graph = helper.make_graph(nodes, "ps", [helper.make_tensor_value_info("context", TensorProto.UINT8,
                                                                          ["B", 3 * K, 3 * K, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", K, K, 3, 256])], inits)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def region_classifier(path, H=16, W=16, region=(4, 8, 6, 12)):
    """Two classes whose answer depends only on one known region: logit_0 = mean(pixels in region)/32 − 4, logit_1 = 0.

    Input: raw pixel values, NCHW float32 (mean 0, std 1)."""
    y0, y1, x0, x1 = region
    inits = [numpy_helper.from_array(np.array([y0, x0], np.int64), "starts"),
             numpy_helper.from_array(np.array([y1, x1], np.int64), "ends"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([[1 / 32.0, 0.0]], np.float32), "w"),
             numpy_helper.from_array(np.array([-4.0, 0.0], np.float32), "b")]
    nodes = [helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["reg"]),
             helper.make_node("ReduceMean", ["reg"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["m", "one"], ["m2"]),
             helper.make_node("MatMul", ["m2", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["logits"])]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    graph = helper.make_graph(nodes, "region", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["N", 3, H, W])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)
