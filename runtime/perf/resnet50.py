"""A ResNet-50 with seeded random weights: the throughput benchmark's heavier classifier, also built by the tests."""
from __future__ import annotations

import json
import os

import numpy as np

from ..catalog import cache_dir


def resnet50_file() -> str:
    """A ResNet-50 (v1.5, 224×224 NCHW, ImageNet's mean and std, softmax over 1000 classes) with seeded random
    weights, the bench's heavier classifier: built once under the cache folder, with its card."""
    folder = cache_dir("bench")
    path = os.path.join(folder, "resnet50.onnx")
    if not os.path.isfile(path):
        import onnx

        os.makedirs(folder, exist_ok=True)
        onnx.save(resnet50(), path + ".tmp")
        os.replace(path + ".tmp", path)
        card = {"name": "resnet50 (random weights)", "input": {"layout": "NCHW", "size": [224, 224], "scale": 1 / 255,
                                                               "mean": [0.485, 0.456, 0.406],
                                                               "std": [0.229, 0.224, 0.225]},
                "output": {"kind": "probs"}}
        with open(os.path.join(folder, "resnet50.json"), "w") as f:
            json.dump(card, f)
    return path


def resnet50(width: int = 64, classes: int = 1000, seed: int = 0):
    """ResNet-50 v1.5 as an ONNX ModelProto (batch-norms folded into the convolutions), He-initialized from `seed`;
    each residual branch's last convolution is scaled down so that activations stay finite through 16 blocks.
    `width` is the stem's channel count (64 in the real network)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, cin, cout, k, stride=1, relu=True, gain=1.0):
        i = len(nodes)
        w = (rng.standard_normal((cout, cin, k, k), np.float32) * gain * np.sqrt(2.0 / (cin * k * k)))
        inits.extend([numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                      numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")])
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return f"c{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        return f"r{i}"

    x = conv("input", 3, width, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", width
    for stage, blocks in enumerate((3, 4, 6, 3)):
        mid = width * 2 ** stage
        for b in range(blocks):
            stride = 2 if b == 0 and stage > 0 else 1
            h = conv(x, cin, mid, 1)
            h = conv(h, mid, mid, 3, stride)
            h = conv(h, mid, 4 * mid, 1, relu=False, gain=0.2)
            skip = conv(x, cin, 4 * mid, 1, stride, relu=False) if b == 0 else x
            j = len(nodes)
            nodes += [helper.make_node("Add", [h, skip], [f"a{j}"]), helper.make_node("Relu", [f"a{j}"], [f"o{j}"])]
            x, cin = f"o{j}", 4 * mid
    fc = rng.standard_normal((cin, classes), np.float32) * np.float32(np.sqrt(1.0 / cin))
    inits += [numpy_helper.from_array(fc, "fc_w"), numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"),
              numpy_helper.from_array(np.array([-1, cin], np.int64), "flat")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]), helper.make_node("Reshape", ["gap", "flat"], ["f"]),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "resnet50", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
