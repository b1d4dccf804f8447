"""One explanation split by patch positions (DESIGN §12): shards of any split, run in any order and saved to disk,
merge into exactly the maps of one `attribute` call — what the server's chunked jobs and the Ray shards rely on."""
import numpy as np
import pytest

import onnx_builders
from conftest import scene
from infolens import Explainer, OnnxClassifier, load_sampler
from infolens.errors import InfolensError
from infolens.methods.marginalize import Shard


@pytest.mark.parametrize("sampler,adaptive", [("patchsampler", False), ("noise", True), ("gray", False)])
def test_shards_merge_into_the_single_run(tmp_path, model_file, sampler, adaptive):
    kw = {"model": onnx_builders.patch_sampler(tmp_path / "ps.onnx", 4)} if sampler == "patchsampler" else {}
    ex = Explainer(OnnxClassifier.from_card(model_file), load_sampler(sampler, K=4, **kw), batch_size=7,
                   target_se=0.5 if adaptive else None, max_samples=12 if adaptive else None)
    whole = ex.explain(scene(), stride=2, samples=3, seed=5, classes="top2")
    method = ex.method("pmi")
    plan = method.plan(scene(), "top2", 2, 3, 5)
    P = method.positions(plan.img, plan.stride)
    order = np.random.default_rng(0).permutation(P)
    shards = [method.run(plan, part) for part in np.array_split(order, 4)][::-1]
    for i, s in enumerate(shards):  # through the disk, as the server keeps them
        s.save(tmp_path / f"s{i}.npz")
    merged = method.merge(plan, [Shard.load(tmp_path / f"s{i}.npz") for i in range(len(shards))])
    for name in whole.maps:
        np.testing.assert_array_equal(merged.maps[name], whole.maps[name])
        np.testing.assert_array_equal(merged.stderr[name], whole.stderr[name])
    assert merged.forwards == whole.forwards
    assert merged.params == whole.params
    if adaptive:
        assert len(whole.params["samples_per_position"]) > 1  # some positions really got more in-fills


def test_shards_that_miss_or_repeat_positions_are_refused(model_file):
    ex = Explainer(OnnxClassifier.from_card(model_file), load_sampler("noise", K=4))
    method = ex.method("pmi")
    plan = method.plan(scene(), "top1", 4, 2, 0)
    P = method.positions(plan.img, plan.stride)
    a, b = method.run(plan, np.arange(0, P // 2)), method.run(plan, np.arange(P // 2 - 1, P))
    with pytest.raises(InfolensError, match="some twice"):
        method.merge(plan, [a, b])
    with pytest.raises(InfolensError, match=f"cover {P // 2} of {P}"):
        method.merge(plan, [a])
    with pytest.raises(InfolensError):
        method.run(plan, [P])
