"""The composer backend (DESIGN §11's code path, on the CPU provider): batches built by an ONNX graph and handed to
the classifier by IO binding equal the host batches, and the maps are bit-identical."""
import numpy as np
import pytest

import onnx_builders
from conftest import scene, write_card
from infolens import Explainer, OnnxClassifier, Preprocessing, load_sampler
from infolens.backends.composer import ComposerPerturbationBatch, composer_model
from infolens.backends.cpu import CpuPerturbationBatch

VARIANTS = [("NCHW", "RGB", "float32"), ("NHWC", "BGR", "uint8"), ("NHWC", "RGB", "float32"),
            ("NCHW", "BGR", "uint8")]


@pytest.mark.parametrize("layout,order,dtype", VARIANTS)
def test_composed_batches_equal_the_host_batches(tmp_path, layout, order, dtype):
    path = onnx_builders.classifier(tmp_path / "m.onnx", layout=layout, order=order, dtype=dtype)
    write_card(path, layout, order, dtype)
    clf = OnnxClassifier.from_card(path, batch_backend="composer")
    base = clf.normalize(scene()[None])[0]
    K, m = 5, 9
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (m, K, K, 3), dtype=np.uint8)
    ys, xs = rng.integers(0, 17 - K + 1, m), rng.integers(0, 19 - K + 1, m)
    ys[0], xs[0] = 17 - K, 19 - K  # the last row and column
    host = CpuPerturbationBatch(clf, base, m, K)
    host.write(patches, ys, xs)
    import onnxruntime as ort

    session = ort.InferenceSession(composer_model(17, 19, K, 3, base.dtype, layout == "NCHW").SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    composed = session.run(None, {"base": base[None], "patches": patches, "ys": ys.astype(np.int64),
                                  "xs": xs.astype(np.int64), "lut": clf.lut, "src": clf.src})[0]
    np.testing.assert_array_equal(composed, host.rows[:m])
    batch = ComposerPerturbationBatch(clf, base, m, K)
    batch.write(patches, ys, xs)
    np.testing.assert_array_equal(batch.run(m), host.run(m))


@pytest.mark.parametrize("sampler", ["noise", "patchsampler", "gray"])
def test_maps_are_bit_identical_to_the_host_path(tmp_path, model_file, sampler):
    kw = {"model": onnx_builders.patch_sampler(tmp_path / "ps.onnx", 4)} if sampler == "patchsampler" else {}
    runs = {}
    for backend in ("host", "composer"):
        clf = OnnxClassifier.from_card(model_file, batch_backend=backend)
        runs[backend] = Explainer(clf, load_sampler(sampler, K=4, **kw), batch_size=6).explain(
            scene(), stride=2, samples=3, seed=4)
    np.testing.assert_array_equal(runs["host"].pmi, runs["composer"].pmi)
    np.testing.assert_array_equal(runs["host"].ig, runs["composer"].ig)
    assert runs["host"].forwards == runs["composer"].forwards


def test_grey_models_and_fixed_batches(tmp_path):
    grey = onnx_builders.classifier(tmp_path / "g.onnx", channels=1)
    fixed = onnx_builders.classifier(tmp_path / "f.onnx", batch=1, reshape_batch=1)
    for path in (grey, fixed):
        maps = [Explainer(OnnxClassifier(path, Preprocessing(resize="none"), batch_backend=b),
                          load_sampler("noise", K=4),
                          batch_size=5).explain(scene(), stride=3, samples=2).pmi for b in ("host", "composer")]
        np.testing.assert_array_equal(*maps)
    # the composer leaves it to the host batch
    assert OnnxClassifier(fixed, Preprocessing(resize="none")).batch_limit == 1
