"""The framework-free recipe diff: differences, deviation matching, verdict (no framework, fast)."""
from __future__ import annotations

import pytest
import torch

from mae_transfer.recipe_diff import (
    Recipe,
    apply_deviations,
    deviations_path,
    diff_recipes,
    init_signature,
    load_deviations,
    report,
)


def recipes() -> tuple[Recipe, Recipe]:
    tensor = dict(shape=[4, 4], lr_scale=0.7 ** 3, weight_decay=0.1, init={"std": 0.02})
    ours = Recipe("ours", tensors={"a.weight": dict(tensor), "a.bias": dict(tensor, shape=[4], init="zeros")},
                  settings={"optimizer.lr": 1e-4, "optimizer.betas": (0.9, 0.999), "train.amp": True})
    ref = Recipe("ref", tensors={"a.weight": dict(tensor, init={"std": 0.021}),
                                 "a.bias": dict(tensor, shape=[4], init="zeros")},
                 settings={"optimizer.lr": 1e-4, "optimizer.betas": [0.9, 0.999], "train.amp": True})
    return ours, ref


def test_identical_recipes_have_no_difference():
    ours, ref = recipes()
    assert diff_recipes(ours, ref) == []  # tuples vs lists, std within tolerance, float lr scales


def test_every_kind_of_difference_is_reported():
    ours, ref = recipes()
    ours.settings["optimizer.lr"] = 2e-4
    ours.settings["only.ours"] = 1
    ours.tensors["a.weight"].update(weight_decay=0.0, lr_scale=0.5, init={"std": 0.04})
    ref.tensors["b.weight"] = dict(shape=[2], lr_scale=1.0, weight_decay=0.0, init=None)
    keys = {d.key: (d.ours, d.reference) for d in diff_recipes(ours, ref)}
    assert keys == {
        "optimizer.lr": (2e-4, 1e-4), "only.ours": (1, "<absent>"),
        "tensors.a.weight.weight_decay": (0.0, 0.1), "tensors.a.weight.lr_scale": (0.5, 0.7 ** 3),
        "tensors.a.weight.init": ({"std": 0.04}, {"std": 0.021}), "tensors.b.weight": (None, [2]),
    }


def test_deviation_accepts_only_its_key_and_values(tmp_path):
    ours, ref = recipes()
    ours.settings["train.amp"] = False
    ours.settings["optimizer.lr"] = 2e-4
    ours.tensors["a.weight"]["weight_decay"] = 0.0
    path = tmp_path / "x.deviations.yaml"
    path.write_text(
        "- {key: train.amp, ours: false, reference: true, reason: fp32 on purpose}\n"
        "- {key: optimizer.lr, ours: 3.0e-4, reference: 1.0e-4, reason: an older value}\n"
        "- {key: 'tensors.*.weight_decay', reason: another rule}\n"
        "- {key: test.cfg, reason: nothing differs here}\n"
    )
    diffs, stale = apply_deviations(diff_recipes(ours, ref), load_deviations(path))
    reasons = {d.key: d.reason for d in diffs}
    assert reasons == {"train.amp": "fp32 on purpose", "optimizer.lr": None,  # 2e-4 is not the listed 3e-4
                       "tensors.a.weight.weight_decay": "another rule"}
    assert [d.key for d in stale] == ["optimizer.lr", "test.cfg"]
    text = report(ours, ref, diffs, stale)
    assert "optimizer.lr: ours=0.0002 reference=0.0001  [NOT LISTED]" in text
    assert text.splitlines()[-1] == "3 differences, 2 listed as deviations: 1 UNLISTED differences"


def test_deviations_file_format_errors_are_one_sentence(tmp_path):
    path = tmp_path / "bad.deviations.yaml"
    path.write_text("- {key: train.amp, ours: false}\n")
    with pytest.raises(ValueError, match=r"entry 1 needs a 'key' and a 'reason'"):
        load_deviations(path)
    path.write_text("key: train.amp\n")
    with pytest.raises(ValueError, match="must be a YAML list"):
        load_deviations(path)
    assert load_deviations(tmp_path / "missing.yaml") == []
    assert deviations_path(tmp_path / "coco_vitb_mae.yaml").name == "coco_vitb_mae.deviations.yaml"


def test_init_signature():
    torch.manual_seed(0)
    assert init_signature(torch.zeros(3, 3)) == "zeros" and init_signature(torch.ones(5)) == "ones"
    assert init_signature(torch.full((4,), 0.1)) == "constant 0.1"
    assert init_signature(torch.randn(10)) == "random"
    assert init_signature(torch.randn(100, 100) * 0.02)["std"] == pytest.approx(0.02, rel=0.05)
