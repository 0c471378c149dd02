"""Pretraining's optimizer comes from mae_transfer.optim (layer decay 1.0) and matches timm's
``param_groups_weight_decay`` with the model's ``no_weight_decay()`` names, group for group."""
from __future__ import annotations

import pytest
import torch
from timm.optim import param_groups_weight_decay

from mae_transfer.models.mae import create_mae
from mae_transfer.pretrain import create_classifier
from mae_transfer.pretrain.common import build_optimizer


@pytest.mark.parametrize("make", [
    lambda: create_mae("mae_vit_tiny_patch16", depth=2, decoder_depth=1, img_size=32),
    lambda: create_classifier("vit_tiny_patch16", 5, depth=2, img_size=32, rel_pos="decomposed"),
], ids=["mae", "classifier"])
def test_pretrain_groups_equal_timm_weight_decay_groups(make):
    model = make()
    reference = param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    assert len(optimizer.param_groups) == len(reference) == 2
    for ours, theirs in zip(optimizer.param_groups, reference):
        assert [id(p) for p in ours["params"]] == [id(p) for p in theirs["params"]]
        assert ours["weight_decay"] == theirs["weight_decay"] and ours["lr"] == 1e-3
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.95)
