"""The in-distribution evaluator's fine-tuning (export/evaluator.py): its masks, that it distils the intact answer
through removed photos, and the command end to end on the shipped classifier."""
import json
import os
import shutil

import numpy as np
import pytest
from conftest import REPO
import torch

from infolens.classifier import OnnxClassifier, Preprocessing
from infolens.export import data
from infolens.export.classifier import export_module
from infolens.export.evaluator import CELLS, INTACT, ONE_CELL, Remover, kl, main, random_crops, removal_mask, train
from infolens.images import read_image

EXAMPLES = os.path.join(REPO, "examples")


def _offsets(mask, axis):
    """Positions along `axis` where the mask changes."""
    return np.flatnonzero(np.diff(mask.astype(np.int8), axis=axis).any(axis=1 - axis)) + 1


def test_masks_are_whole_cells_of_one_offset_grid():
    rng = np.random.default_rng(0)
    masks = [removal_mask(rng, 64, 80) for _ in range(600)]
    intact = np.mean([not m.any() for m in masks])
    assert abs(intact - INTACT) < 0.05
    removed = [m for m in masks if m.any()]
    one = 0
    for m in removed:
        ys, xs = _offsets(m, 0), _offsets(m, 1)
        # some cell side fits every edge of the mask: it is a union of one grid's cells
        fits = [c for c in CELLS if len({y % c for y in ys}) <= 1 and len({x % c for x in xs}) <= 1]
        assert fits, (ys, xs)
        c = fits[-1]
        one += m.sum() <= c * c and len(ys) <= 2 and len(xs) <= 2
    # one cell in ONE_CELL of all draws, and sometimes by the random share too
    assert one / len(removed) > ONE_CELL / (1 - INTACT) - 0.05


def _net(seed, classes=5):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(16, classes))
    with torch.no_grad():
        net[-1].weight.mul_(8)  # peaked, photo-dependent answers
    return net.eval()


@pytest.mark.slow
def test_fine_tuning_learns_the_intact_answer_through_removed_photos(tmp_path):
    teacher_path = tmp_path / "teacher.onnx"
    export_module(_net(0), teacher_path, (48, 48))
    teacher = OnnxClassifier(teacher_path, Preprocessing(size=[48, 48], mean=[127.0] * 3, std=[128.0] * 3))
    photos = [data.rescale(read_image(os.path.join(EXAMPLES, f)), 64) for f in sorted(os.listdir(EXAMPLES))
              if f.endswith((".png", ".jpg"))]
    rng = np.random.default_rng(1)
    crops = random_crops(photos, 24, rng, (48, 48))
    remove = Remover(teacher, rng)
    removed = np.stack([remove(c, removal_mask(rng, 48, 48)) for c in crops])
    target = teacher.predict_images(crops)
    student = _net(5)  # another network: all it knows of the teacher comes from the training

    def gap():
        with torch.no_grad():
            q = torch.softmax(student(torch.from_numpy(teacher.normalize(removed))), 1).double().numpy()
        return kl(target, q).mean()

    before = gap()
    record = train(student, teacher, photos, seconds=25, batch=8, lr=3e-3, seed=0, log=lambda m: None)
    assert record["steps"] > 20 and record["kl_bits_last"] < record["kl_bits_first"]
    assert gap() < 0.5 * before


@pytest.mark.slow
def test_the_command_writes_an_evaluator_and_its_card(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = sorted(f for f in os.listdir(EXAMPLES) if f.endswith((".png", ".jpg")))
    for i in range(20):  # enough names that one in ten, by hash, is held out
        shutil.copy(os.path.join(EXAMPLES, names[i % len(names)]), folder / f"p{i}{os.path.splitext(names[i % len(names)])[1]}")
    held = [n for n in os.listdir(folder) if data.is_validation(f"photos/{n}")]
    assert held
    assert main(["efficientnet-lite0", "--data", str(folder), "--minutes", "0.01", "--out", str(tmp_path / "m")]) == 0
    card = json.loads((tmp_path / "m" / "efficientnet_lite0.evaluator.json").read_text())
    assert card["task"] == "removal-evaluator" and card["training"]["steps"] >= 1
    assert card["held_out"]["photos"] == len(held)
    assert set(card["held_out"]["one_cell_kl_bits"]) == {"blur", "black", "mean", "road", "patchsampler"}
    assert 0 <= card["held_out"]["top1_agreement"] <= 1
    ev = OnnxClassifier.from_card(tmp_path / "m" / "efficientnet_lite0.evaluator.onnx",
                                  card_path=os.path.join(EXAMPLES, "..", "models", "efficientnet_lite0.json"))
    assert ev.n_classes == 1000


def test_too_few_photos_is_one_line(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(os.path.join(EXAMPLES, "coffee.png"), folder / "coffee.png")
    assert main(["efficientnet-lite0", "--data", str(folder), "--minutes", "0.01", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and len(err.strip().splitlines()) == 1
