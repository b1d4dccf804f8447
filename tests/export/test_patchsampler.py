"""PatchSampler training side: photo sets and windows, the logistic-mixture network, its loss = the runtime's exact
likelihood, ONNX export parity and interface, the training command, and the shipped models."""
import json
import math
import os

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import REPO
import torch

from infolens import samplers
from infolens.errors import InfolensError
from infolens.samplers.mixture import logistic_mixture_log2prob
from infolens.export import data, patchsampler as ps, patchsampler_net as net

ROOT = REPO
MODELS = os.path.join(ROOT, "models")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
PHOTO_SETS = [os.path.join(SHARED, "bsds500"), os.path.join(SHARED, "coco128")]


def _photos(n=6, size=(60, 80), seed=0):
    """Small smooth photos with edges: blurred random colour fields plus rectangles."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        field = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), size[::-1], interpolation=cv2.INTER_CUBIC)
        y, x = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        cv2.rectangle(field, (int(x), int(y)), (int(x) + 20, int(y) + 15), [int(v) for v in rng.integers(0, 256, 3)], -1)
        out.append(field)
    return out


@pytest.fixture(scope="module")
def tiny_trained():
    """A K=4, T=2 sampler after 100 seeded steps on small synthetic photos, with its training record."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = net.PatchSampler(4, T=2, M=3, width=16, stem=8)
    run = ps.train(model, _photos(), seconds=600, batch=16, seed=0, lr=3e-3, max_steps=100, progress=False)
    return model, run


@pytest.fixture(scope="module")
def tiny_onnx(tiny_trained, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ps") / "tiny.onnx")
    ps.export_onnx(tiny_trained[0], path)
    return path


def test_stage_grids():
    np.testing.assert_array_equal(net.stage_grid(4, 1), np.zeros((4, 4)))
    np.testing.assert_array_equal(net.stage_grid(4, 2)[:2, :3], [[0, 1, 0], [1, 0, 1]])
    four = net.stage_grid(4, 4)
    np.testing.assert_array_equal(four[:2, :2], [[0, 1], [2, 3]])
    assert (np.bincount(four.ravel()) == 4).all()
    with pytest.raises(ValueError, match="1, 2 or 4"):
        net.stage_grid(4, 3)


def test_training_loss_goes_down(tiny_trained):
    run = tiny_trained[1]
    assert run["steps"] == 100 and len(run["history"]) == 2
    assert all(math.isfinite(x) for x in run["history"])
    # starts near 16 bits (σ = 8 grey levels around mid-grey fits few pixels), learns fast while the lr warms up
    assert run["history"][1] < run["history"][0] - 4 and run["history"][1] < 9.0


@pytest.mark.parametrize("K", [4, 8, 16])
def test_encoder_computes_only_what_reaches_the_patch(K):
    """The encoder's last two convs run only near the patch's 4×4 cells: the same numbers as the plain residual
    stack over the whole 12×12 grid, cropped."""
    torch.manual_seed(2)
    encoder = net.ContextEncoder(K, 8).eval()
    for p in encoder.parameters():
        torch.nn.init.normal_(p, std=0.3)  # large enough that every cell's value matters
    context = torch.randint(0, 256, (3, 3 * K, 3 * K, 3), dtype=torch.uint8)
    with torch.no_grad():
        x = net._scaled(context) * encoder.ring
        full = encoder.act(encoder.patchify(torch.cat([x, encoder.ring.expand_as(x[:, :1])], 1)))
        for conv in encoder.body:
            full = full + encoder.act(conv(full))
        # float32 rounding only: the convolution kernels chosen for a 12×12 grid and for the crops sum in other
        # orders (measured up to 1.4e-5 relative on an AMD EPYC); computing the wrong cells differs by O(1)
        torch.testing.assert_close(encoder(context), full[..., 4:8, 4:8], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("T", [1, 2, 4])
def test_hidden_pixels_cannot_change_the_outputs(T):
    torch.manual_seed(1)
    model = net.PatchSampler(4, T=T, M=2, width=8, stem=8, pixel=6).eval()
    grid = torch.from_numpy(net.stage_grid(4, T))
    a = torch.randint(0, 256, (2 * T, 12, 12, 3), dtype=torch.uint8)
    stage = torch.arange(T).repeat(2)
    b = a.clone()
    for i, t in enumerate(stage):
        hidden = torch.zeros(12, 12, dtype=torch.bool)
        hidden[4:8, 4:8] = grid >= t
        b[i][hidden] = 255 - b[i][hidden]
    with torch.no_grad():
        for x, y in zip(model(a, stage), model(b, stage)):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
        # ... while a revealed pixel of an earlier stage does change them (the stages really condition)
        if T > 1:
            c = a.clone()
            c[1, 4 + 0, 4 + 0] = 255 - c[1, 4, 4]  # pixel (0, 0) is stage 0, visible to stage 1
            assert not torch.equal(model(a, stage)[2][1], model(c, stage)[2][1])


def test_torch_loss_is_the_runtime_likelihood(tiny_trained):
    """The training loss and the runtime's float64 scorer are the same formula (DESIGN §3)."""
    model = tiny_trained[0].eval()
    windows = data.random_windows(_photos(seed=3), 4, 12, np.random.default_rng(4))
    grid = net.stage_grid(4, 2)
    for t in (0, 1):
        stage = torch.full((12,), t, dtype=torch.int64)
        with torch.no_grad():
            outputs = model(torch.from_numpy(windows), stage)
            nats = net.log_likelihood(outputs, torch.from_numpy(windows[:, 4:8, 4:8]),
                                     torch.from_numpy(grid == t).float().expand(12, 4, 4)).numpy()
        named = {name: o.double().numpy() for name, o in zip(ps.MIXTURE_OUTPUTS, outputs)}
        bits = logistic_mixture_log2prob(named, windows[:, 4:8, 4:8], grid == t)
        np.testing.assert_allclose(nats / math.log(2), bits, rtol=1e-4, atol=1e-3)


def test_export_matches_torch_with_dynamic_batch(tiny_trained, tiny_onnx):
    model = tiny_trained[0].eval()
    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch in (1, 5):
        context = rng.integers(0, 256, (batch, 12, 12, 3), dtype=np.uint8)
        stage = rng.integers(0, 2, batch).astype(np.int64)
        got = sess.run(list(ps.MIXTURE_OUTPUTS), {"context": context, "stage": stage})
        with torch.no_grad():
            want = model(torch.from_numpy(context), torch.from_numpy(stage))
        for name, g, w in zip(ps.MIXTURE_OUTPUTS, got, want):
            assert g.dtype == np.float32 and g.shape == tuple(w.shape), name
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=2e-4, err_msg=name)


def test_exported_file_interface(tiny_onnx):
    proto = onnx.load(tiny_onnx)
    assert proto.ir_version <= 10
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert json.loads({p.key: p.value for p in proto.metadata_props}["stages"]) == net.stage_grid(4, 2).tolist()
    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape[1:]) for i in sess.get_inputs()] == [
        ("context", "tensor(uint8)", [12, 12, 3]), ("stage", "tensor(int64)", [])]
    shapes = {o.name: o.shape[1:] for o in sess.get_outputs()}
    assert shapes == {"patch_logits": [1], "pixel_logits": [1, 4, 4, 3], "loc": [1, 4, 4, 3, 3],
                      "log_scale": [1, 4, 4, 3, 3], "coeff": [1, 4, 4, 3, 3]}
    runtime = samplers.PatchSampler(tiny_onnx)
    assert (runtime.head, runtime.K, runtime.T) == ("logistic_mixture", 4, 2)


def _without_split(path, out):
    """The same file without its `context_features` metadata: the runtime then runs it whole."""
    proto = onnx.load(path)
    keep = [p for p in proto.metadata_props if p.key != "context_features"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, out)
    return str(out)


def test_split_graph_gives_the_whole_graphs_infills_and_scores(tiny_onnx, tmp_path):
    proto = onnx.load(tiny_onnx)
    assert {p.key: p.value for p in proto.metadata_props}["context_features"] == ps.CONTEXT_FEATURES
    split = samplers.PatchSampler(tiny_onnx)
    whole = samplers.PatchSampler(_without_split(tiny_onnx, tmp_path / "whole.onnx"))
    assert split.describe()["split"] and not whole.describe()["split"]
    image, ys, xs = _photos(1)[0], np.array([0, 10, 33, 56]), np.array([5, 50, 70, 0])
    fills = [s.sample(image, ys, xs, 5, [np.random.default_rng([7, p]) for p in range(4)]) for s in (split, whole)]
    np.testing.assert_array_equal(fills[0], fills[1])
    windows = data.random_windows(_photos(seed=5), 4, 20, np.random.default_rng(6))
    np.testing.assert_allclose(split.log2prob(windows), whole.log2prob(windows), rtol=1e-9, atol=1e-9)


def _with_features(path, out, pick):
    """The file with its `context_features` metadata pointed at the output of the first node `pick` accepts."""
    proto = onnx.load(path)
    name = next(n.output[0] for n in proto.graph.node if pick(n))
    for p in proto.metadata_props:
        if p.key == "context_features":
            p.value = name
    onnx.save(proto, out)
    return str(out)


@pytest.mark.parametrize("pick, message", [
    (lambda n: n.name.startswith("/centre/"), "cannot be cut at the 'context_features' tensor"),  # needs the stage
    (lambda n: n.op_type == "Div" and not n.name.startswith("/encoder/"), "changes with the hidden centre"),
])
def test_a_wrong_context_features_tensor_is_refused(tiny_onnx, tmp_path, pick, message):
    path = _with_features(tiny_onnx, tmp_path / "wrong.onnx", pick)
    with pytest.raises(InfolensError, match=f"not a PatchSampler: .*{message}") as info:
        samplers.PatchSampler(path)
    assert info.value.param == "sampler_model"


def test_photo_sets_split_and_scales(tmp_path):
    for i, photo in enumerate(_photos(12)):
        cv2.imwrite(str(tmp_path / f"p{i:02d}.png"), photo[..., ::-1])
    (tmp_path / "labels.txt").write_text("not a photo")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    photos = data.load_photos([str(tmp_path)])
    assert [name for name, _ in photos] == [f"{tmp_path.name}/p{i:02d}.png" for i in range(12)]
    train, val = data.split(photos)
    assert len(train) + len(val) == 12 and {n for n, _ in val} == {n for n, _ in photos if data.is_validation(n)}
    # the split is a function of the name alone, about one in ten
    names = [f"set/{i}.jpg" for i in range(2000)]
    assert 150 < sum(map(data.is_validation, names)) < 250
    assert data.is_validation("set/1.jpg") == data.is_validation("set/1.jpg")
    scales = data.training_scales([("big", np.zeros((400, 600, 3), np.uint8)), ("small", np.zeros((100, 50, 3), np.uint8))])
    assert [im.shape[:2] for im in scales] == [(224, 336), (288, 432), (352, 528), (448, 224)]  # a photo smaller than the input space is enlarged to it, like the classifier's resize
    with pytest.raises(ValueError, match="--data"):
        data.load_photos([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no photos"):
        data.load_photos([str(tmp_path / "empty")])


def _coordinate_image(H=40, W=50):
    """R = row, G = column, B = 255: every pixel names its position and is nonzero."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([y, x, np.full_like(y, 255)], -1).astype(np.uint8)


def test_windows_are_the_runtime_context():
    K, image = 8, _coordinate_image()
    windows = data.random_windows([image], K, 400, np.random.default_rng(5), flip=False)
    assert windows.shape == (400, 24, 24, 3) and windows.dtype == np.uint8
    ys, xs = windows[:, K, K, 0].astype(np.int64), windows[:, K, K, 1].astype(np.int64)
    np.testing.assert_array_equal(windows, samplers.windows(samplers.pad(image, K), ys, xs, 3 * K))
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (0, 40 - K, 0, 50 - K)  # every position, border included
    flipped = data.random_windows([image], K, 400, np.random.default_rng(5))
    assert 100 < (flipped[:, K, K, 1] != flipped[:, K, K + 1, 1] - 1).sum() < 300  # about half are mirrored
    held, owner = data.heldout_windows([("a", image), ("b", image)], K, 30, seed=2)
    np.testing.assert_array_equal(owner, [0] * 30 + [1] * 30)
    ys, xs = held[:, K, K, 0].astype(np.int64), held[:, K, K, 1].astype(np.int64)
    np.testing.assert_array_equal(held, samplers.windows(samplers.pad(image, K), ys, xs, 3 * K))
    np.testing.assert_array_equal(held, data.heldout_windows([("a", image), ("b", image)], K, 30, seed=2)[0])


def test_command_writes_model_and_card(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, photo in enumerate(_photos(30, size=(120, 160))):
        cv2.imwrite(str(folder / f"p{i:02d}.png"), photo[..., ::-1])
    out = tmp_path / "out"
    code = ps.main(["--K", "4", "--width", "8", "--stem", "8", "--mixtures", "2", "--minutes", "1", "--max-steps", "3",
                    "--batch", "4", "--eval-per-photo", "5", "--data", str(folder), "--out", str(out),
                    "--checkpoint", str(tmp_path / "w.pt")])
    assert code == 0
    card = json.loads((out / "patchsampler_k4.json").read_text())
    assert (card["task"], card["head"], card["K"], card["T"], card["M"]) == ("patch-sampler", "logistic_mixture", 4, 2, 2)
    assert card["training"]["photos"] == 30 and card["training"]["steps"] == 3
    assert card["training"]["validation_photos"] == sum(data.is_validation(f"photos/p{i:02d}.png") for i in range(30))
    assert 0 < card["nll_bits_per_subpixel"]["patchsampler"] < 40 and card["cost_ms_per_position"] > 0  # 3 steps
    assert card["command"].startswith("python -m infolens.export.patchsampler --K 4 --stages 2 ")
    assert os.path.isfile(tmp_path / "w.pt")
    sampler = samplers.load_sampler("patchsampler", 4, model=str(out / "patchsampler_k4.onnx"))
    fills = sampler.sample(_photos(1)[0], np.array([0, 10]), np.array([5, 50]), 3,
                           [np.random.default_rng(i) for i in range(2)])
    assert fills.shape == (2, 3, 4, 4, 3) and fills.dtype == np.uint8
    # --init with no training re-exports the saved weights exactly, and the card says where they came from
    again = tmp_path / "again"
    assert ps.main(["--K", "4", "--width", "8", "--stem", "8", "--mixtures", "2", "--minutes", "0",
                    "--eval-per-photo", "5", "--data", str(folder), "--out", str(again),
                    "--init", str(tmp_path / "w.pt")]) == 0
    assert (again / "patchsampler_k4.onnx").read_bytes() == (out / "patchsampler_k4.onnx").read_bytes()
    assert json.loads((again / "patchsampler_k4.json").read_text())["command"].endswith(f"--init {tmp_path / 'w.pt'}")
    assert "--init" not in card["command"]
    assert ps.main(["--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


@pytest.mark.parametrize("K", [8, 16])
def test_shipped_patchsampler(K):
    path = os.path.join(MODELS, f"patchsampler_k{K}.onnx")
    with open(path[: -len(".onnx")] + ".json") as f:
        card = json.load(f)
    assert (card["task"], card["head"], card["K"], card["C"]) == ("patch-sampler", "logistic_mixture", K, 3)
    table = card["nll_bits_per_subpixel"]
    assert table["patchsampler"] < table["gaussian"] < table["uniform"]
    assert table["patchsampler"] < table["patchsampler_categorical"]
    assert os.path.getsize(path) <= 25 * 2**20
    sampler = samplers.PatchSampler(path)
    assert (sampler.head, sampler.K, sampler.T) == ("logistic_mixture", K, card["T"])
    np.testing.assert_array_equal(sampler.stages, card["stages"])


@pytest.mark.slow
@pytest.mark.skipif(not all(map(os.path.isdir, PHOTO_SETS)), reason="needs ../shared/data/bsds500 and coco128")
def test_shipped_k8_card_reproduces_on_the_validation_photos():
    """The card's held-out NLL, re-scored from the photos: the validation split, input space, same windows."""
    with open(os.path.join(MODELS, "patchsampler_k8.json")) as f:
        card = json.load(f)
    _, val = data.split(data.load_photos(PHOTO_SETS))
    assert len(val) == card["training"]["validation_photos"]
    windows, owner = data.heldout_windows(data.input_space(val), 8, 100)
    bits = -samplers.PatchSampler(os.path.join(MODELS, "patchsampler_k8.onnx")).log2prob(windows) / 192
    assert float(bits.mean()) == pytest.approx(card["nll_bits_per_subpixel"]["patchsampler"], abs=2e-3)
