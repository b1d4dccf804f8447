"""Small real ONNX models built with onnx.helper for the tests: classifiers in every layout/order/output kind, and a
tiny PatchSampler with the fixed interface, and context_sampler: either head, optionally staged."""
from __future__ import annotations

import json

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
               n_classes=5, seed=0, reshape_batch=None, metadata=None, rank=4, channels=3):
    """Write an ONNX classifier; all variants with the same seed compute the same function of the RGB image.

    dtype "float32": the input is (pixel - MEAN) / STD already; "uint8": raw pixels, normalized inside the graph.
    reshape_batch: a fixed batch in a Reshape constant (a graph whose batch cannot be made symbolic).
    channels 1: a grey-level model (its first conv input channel; float32 inputs are (grey - MEAN[0]) / STD[0]).
    """
    conv, dense = weights(H, W, n_classes, seed)
    if order == "BGR":
        conv = conv[:, ::-1].copy()
    if channels == 1:
        conv = np.ascontiguousarray(conv[:, :1])
    nodes, inits = [], [numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(dense, "dense_w")]
    shape = [batch, channels, H, W] if layout == "NCHW" else [batch, H, W, channels]
    if rank != 4:
        shape = [batch, 3 * H * W]
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.UINT8
    x = "input"
    if dtype == "uint8":
        m, s = (MEAN[::-1] if order == "BGR" else MEAN), (STD[::-1] if order == "BGR" else STD)
        m, s = m[:channels], s[:channels]
        cshape = [1, channels, 1, 1] if layout == "NCHW" else [1, 1, 1, channels]
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
    elif kind == "sigmoid":  # multi-label: one independent probability per class
        nodes.append(helper.make_node("Sigmoid", ["z"], ["probs"]))
        out = "probs"
    elif kind == "sigmoid-div":  # the same sigmoid written out as 1 / (1 + exp(−z)): no Sigmoid op to see
        inits.append(numpy_helper.from_array(np.ones(1, np.float32), "one"))
        nodes += [helper.make_node("Neg", ["z"], ["nz"]), helper.make_node("Exp", ["nz"], ["ez"]),
                  helper.make_node("Add", ["ez", "one"], ["den"]), helper.make_node("Div", ["one", "den"], ["probs"])]
        out = "probs"
    elif kind == "scores01":  # raw scores squeezed into [0, 1] by a linear op: neither sums to 1 nor is a Sigmoid
        inits.append(numpy_helper.from_array(np.full(1, 0.5, np.float32), "half"))
        inits.append(numpy_helper.from_array(np.full(1, 1e-3, np.float32), "tiny"))
        nodes += [helper.make_node("Mul", ["z", "tiny"], ["zs"]), helper.make_node("Add", ["zs", "half"], ["probs"])]
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


def checkerboard(K):
    """int64 [K, K] stage grid (i + j) % 2: T = 2."""
    i, j = np.meshgrid(np.arange(K), np.arange(K), indexing="ij")
    return (i + j) % 2


def context_sampler(path, K=4, head="logistic_mixture", S=2, M=2, stages=None, seed=0, stage_input=None,
                    metadata=None, loc_dims=None, symbolic=False):
    """A PatchSampler of either head whose outputs are linear maps of context features: the per-channel mean of the
    ring (the window without its centre) and, when staged, a per-channel weighted sum / K² of the centre pixels of
    the stages before `stage`, the weight growing with the pixel's raster index (so stage 0 sees no centre pixel, a
    stage never sees its own pixels, and moving a revealed pixel changes the outputs).

    head "logistic_mixture": the five outputs of DESIGN §3 with S hypotheses and M components; loc follows the ring
    colour (about 0.3–0.9 of it plus an offset), σ = 1.5–8 grey levels, α, β, γ in −0.6..1.2.  head "categorical":
    probs ∝ exp(−((v − μ)/6)² / 2) with μ linear in the features.
    stages: int [K, K] grid (None: one stage); stage_input defaults to whether stages is given; metadata: extra
    metadata_props (e.g. a bad "stages"); loc_dims: replace loc's [S, K, K, 3, M] (a malformed file); symbolic:
    declare every output dimension symbolic (only running the model reveals its shapes).
    """
    rng = np.random.default_rng(seed)
    n = 3 * K
    staged = stages is not None
    stage_input = staged if stage_input is None else stage_input
    ring = np.ones((1, n, n, 1), np.float32)
    ring[:, K:2 * K, K:2 * K] = 0
    inits = [numpy_helper.from_array(ring, "ring"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "hw"),
             numpy_helper.from_array(np.array([float(ring.sum())], np.float32), "n_ring"),
             numpy_helper.from_array(np.array([255.0], np.float32), "s255")]
    nodes = [helper.make_node("Cast", ["context"], ["cf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["cf", "ring"], ["ring_px"]),
             helper.make_node("ReduceSum", ["ring_px", "hw"], ["ring_sum"], keepdims=0),
             helper.make_node("Div", ["ring_sum", "n_ring"], ["ring_mean"]),
             helper.make_node("Div", ["ring_mean", "s255"], ["f_ring"])]
    feats = ["f_ring"]
    inputs = [helper.make_tensor_value_info("context", TensorProto.UINT8, ["B", n, n, 3])]
    if stage_input:
        inputs.append(helper.make_tensor_value_info("stage", TensorProto.INT64, ["B"]))
    if staged:
        grid = np.full((1, n, n, 1), 1e6, np.float32)  # ring cells are never "earlier stage" pixels
        grid[0, K:2 * K, K:2 * K, 0] = np.asarray(stages)
        place = np.zeros((1, n, n, 1), np.float32)  # a weight per centre pixel, so where a pixel sits matters
        place[0, K:2 * K, K:2 * K, 0] = 0.5 + np.arange(K * K).reshape(K, K) / (K * K)
        inits += [numpy_helper.from_array(grid, "grid"), numpy_helper.from_array(place, "place"),
                  numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "b111"),
                  numpy_helper.from_array(np.array([255.0 * K * K], np.float32), "s_centre")]
        nodes += [helper.make_node("Cast", ["stage"], ["st"], to=TensorProto.FLOAT),
                  helper.make_node("Reshape", ["st", "b111"], ["st4"]),
                  helper.make_node("Less", ["grid", "st4"], ["seen_b"]),
                  helper.make_node("Cast", ["seen_b"], ["seen_any"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["seen_any", "place"], ["seen"]),
                  helper.make_node("Mul", ["cf", "seen"], ["seen_px"]),
                  helper.make_node("ReduceSum", ["seen_px", "hw"], ["seen_sum"], keepdims=0),
                  helper.make_node("Div", ["seen_sum", "s_centre"], ["f_seen"])]
        feats.append("f_seen")
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "c0"))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "c1"))
    nodes += [helper.make_node("Slice", ["f_ring", "c0", "c1", "c1"], ["f0"]),
              helper.make_node("Mul", ["f0", "c0f"], ["z0"]), helper.make_node("Add", ["z0", "c1f"], ["one"])]
    inits += [numpy_helper.from_array(np.array([0.0], np.float32), "c0f"),
              numpy_helper.from_array(np.array([1.0], np.float32), "c1f")]
    nodes.append(helper.make_node("Concat", feats + ["one"], ["feat"], axis=1))
    F = 3 * len(feats) + 1  # [ring mean R, G, B, (seen R, G, B,) 1]

    def per_channel(shape, gain_ring, gain_seen, bias):
        """A weight matrix [F, prod(shape)] mapping channel features to the channel axis (-2) of shape."""
        w = np.zeros((F, *shape))
        for c in range(3):
            w[c, ..., c, :] = gain_ring[..., c, :]
            if staged:
                w[3 + c, ..., c, :] = gain_seen[..., c, :]
        w[F - 1] = bias
        return w.reshape(F, -1)

    outputs = []

    if symbolic:  # shapes computed from the input's values at run time: nothing static for inference to find
        inits.append(numpy_helper.from_array(np.array(0, np.int64), "zero_i"))
        nodes += [helper.make_node("Cast", ["context"], ["ctx_i"], to=TensorProto.INT64),
                  helper.make_node("ReduceMin", ["ctx_i"], ["ctx_min"], keepdims=0),
                  helper.make_node("Mul", ["ctx_min", "zero_i"], ["data_zero"])]

    def linear(name, w, dims):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w_{name}"))
        inits.append(numpy_helper.from_array(np.array([-1, *dims], np.int64), f"shape_{name}"))
        nodes.append(helper.make_node("MatMul", ["feat", f"w_{name}"], [f"flat_{name}"]))
        if symbolic:
            nodes.append(helper.make_node("Add", [f"shape_{name}", "data_zero"], [f"run_shape_{name}"]))
        nodes.append(helper.make_node("Reshape", [f"flat_{name}", f"run_shape_{name}" if symbolic
                                                  else f"shape_{name}"], [name]))
        outputs.append((name, dims))

    if head == "categorical":
        shape = (K, K, 3, 1)
        w = per_channel(shape, rng.uniform(0.4, 0.9, shape) * 255, rng.uniform(0.3, 0.8, shape) * 255,
                        rng.uniform(-20, 60, shape))
        linear("mu", w, [K, K, 3, 1])
        outputs.pop()
        inits += [numpy_helper.from_array(np.arange(256, dtype=np.float32), "levels"),
                  numpy_helper.from_array(np.array([-0.5 / 36], np.float32), "neg_half_var")]
        nodes += [helper.make_node("Sub", ["levels", "mu"], ["d"]), helper.make_node("Mul", ["d", "d"], ["d2"]),
                  helper.make_node("Mul", ["d2", "neg_half_var"], ["lg"]),
                  helper.make_node("Softmax", ["lg"], ["probs"], axis=-1)]
        outputs.append(("probs", [K, K, 3, 256]))
    else:
        w = rng.normal(0, 1.5, (F, S))
        w[3:F - 1] *= 3  # staged: the hypothesis weights also follow the revealed pixels
        linear("patch_logits", w, [S])
        linear("pixel_logits", rng.normal(0, 1.5, (F, S * K * K * M)), [S, K, K, M])
        shape = (S, K, K, 3, M)
        linear("loc", per_channel(shape, rng.uniform(0.3, 0.9, shape) * 255, rng.uniform(0.3, 0.8, shape) * 255,
                                  rng.uniform(-20, 60, shape)), loc_dims or list(shape))
        linear("log_scale", per_channel(shape, rng.uniform(0, 0.5, shape), rng.uniform(0, 0.5, shape),
                                        rng.uniform(np.log(1.5), np.log(6), shape)), list(shape))
        linear("coeff", per_channel(shape, rng.uniform(-0.3, 0.3, shape), rng.uniform(-0.3, 0.3, shape),
                                    rng.uniform(-0.6, 1.0, shape)), list(shape))
    value_infos = [helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                 [f"d{i}" for i in range(len(dims) + 1)] if symbolic else ["B", *dims])
                   for name, dims in outputs]
    graph = helper.make_graph(nodes, "context_sampler", inputs, value_infos, inits)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)
    meta = {} if stages is None else {"stages": json.dumps(np.asarray(stages).tolist())}
    meta.update(metadata or {})
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


class _Net:
    """A graph under construction, one op at a time, with seeded random weights (for `cnn`)."""

    def __init__(self, seed):
        self.rng, self.nodes, self.inits, self.n = np.random.default_rng(seed), [], [], 0

    def const(self, array):
        self.n += 1
        name = f"w{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def const_int(self, values):
        self.n += 1
        name = f"w{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def op(self, op, inputs, **attrs):
        self.n += 1
        out = f"{op.lower()}{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, group=1, **attrs):
        w = self.const(self.rng.normal(0, 1 / np.sqrt(cin / group * k * k), (cout, cin // group, k, k)))
        return self.op("Conv", [x, w, self.const(self.rng.normal(0, 0.1, cout))], kernel_shape=[k, k], group=group,
                       **attrs)


def cnn(path, variant, H=20, W=22, seed=0, n_classes=5):
    """A small convolutional classifier (NCHW float input, probabilities out) that uses the ops incremental inference
    meets: "residual" (strided, depthwise, dilated, SAME-padded convs, a residual Add, max-pool, Concat),
    "nhwc" (an NHWC input transposed, reflect Pad, Resize, average pool, MatMul head), "se" (a
    squeeze-and-excitation gate: a pooled vector multiplied back over the map), "constant" (an operand that varies
    over the map from a Constant node, not an initializer: the patch never changes it) or "unsupported" (a
    DepthToSpace, which the plans do not know, mid-network)."""
    net = _Net(seed)
    x = "input"
    shape = [1, 3, H, W]
    if variant == "residual":
        a = net.op("Relu", [net.conv(x, 3, 8, 3, strides=[2, 2], pads=[1, 1, 1, 1])])
        b = net.op("Clip", [net.conv(a, 8, 8, 3, group=8, pads=[1, 1, 1, 1]), net.const(0), net.const(6)])
        c = net.op("Add", [net.conv(b, 8, 8, 1), a])
        d = net.op("MaxPool", [c], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        e = net.op("Sigmoid", [net.conv(d, 8, 8, 3, dilations=[2, 2], pads=[2, 2, 2, 2])])
        f = net.conv(d, 8, 4, 5, auto_pad="SAME_UPPER")
        g = net.conv(net.op("Concat", [e, f], axis=1), 12, 16, 3, strides=[2, 2], auto_pad="SAME_LOWER")
        feat, channels = net.op("GlobalAveragePool", [g]), 16
    elif variant == "nhwc":
        shape = [1, H, W, 3]
        a = net.op("Relu", [net.conv(net.op("Transpose", [x], perm=[0, 3, 1, 2]), 3, 6, 3, strides=[2, 2])])
        b = net.op("Pad", [a, net.const_int([0, 0, 2, 1, 0, 0, 1, 2])], mode="reflect")
        c = net.op("Resize", [net.conv(b, 6, 6, 3), "", net.const([1, 1, 2, 2])], mode="nearest")
        d = net.op("AveragePool", [c], kernel_shape=[2, 2], strides=[2, 2])
        feat, channels = net.op("GlobalAveragePool", [d]), 6
    elif variant == "se":
        a = net.op("Relu", [net.conv(x, 3, 8, 3, pads=[1, 1, 1, 1])])
        gate = net.op("Sigmoid", [net.conv(net.op("GlobalAveragePool", [a]), 8, 8, 1)])
        b = net.conv(net.op("Mul", [a, gate]), 8, 8, 3, strides=[2, 2])
        feat, channels = net.op("GlobalAveragePool", [b]), 8
    elif variant == "constant":
        a = net.op("Relu", [net.conv(x, 3, 8, 3, pads=[1, 1, 1, 1])])
        varies = numpy_helper.from_array(net.rng.normal(0, 1, (1, 8, H, W)).astype(np.float32))
        b = net.conv(net.op("Add", [a, net.op("Constant", [], value=varies)]), 8, 8, 3, strides=[2, 2])
        feat, channels = net.op("GlobalAveragePool", [b]), 8
    elif variant == "unsupported":
        a = net.op("Relu", [net.conv(x, 3, 8, 3, pads=[1, 1, 1, 1])])
        b = net.conv(net.op("DepthToSpace", [a], blocksize=2), 2, 4, 3, strides=[2, 2])
        feat, channels = net.op("GlobalAveragePool", [b]), 4
    else:
        raise ValueError(variant)
    flat = net.op("Flatten", [feat])
    if variant == "nhwc":
        logits = net.op("MatMul", [flat, net.const(net.rng.normal(0, 1, (channels, n_classes)))])
    else:
        logits = net.op("Gemm", [flat, net.const(net.rng.normal(0, 1, (n_classes, channels))),
                                 net.const(np.zeros(n_classes))], transB=1)
    probs = net.op("Softmax", [logits], axis=1)
    graph = helper.make_graph(net.nodes, variant, [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(probs, TensorProto.FLOAT, [1, n_classes])], net.inits)
    onnx.save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), str(path))
    return str(path)


def quantized(path, source, H, W, seed=0, per_channel=False):
    """A QDQ copy of the float classifier at `source`, input "input" (onnxruntime.quantization: uint8 activations,
    int8 weights, per output channel or per tensor, calibrated on normal noise), the form a vendor's quantized ONNX
    model takes."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Noise(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed)
            self.batches = iter([{"input": rng.normal(0, 1, (1, 3, H, W)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model first
    quantize_static(str(source), str(path), Noise(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=per_channel)
    return str(path)
