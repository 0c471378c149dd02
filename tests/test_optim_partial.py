"""Freeze policies: which parameters freeze, eval mode of frozen modules, parsing errors."""
from __future__ import annotations

import pytest
import torch

from mae_transfer.optim import FreezePolicy, apply_freeze, frozen_parameter_names

from _optim_models import ToyDetector, ToySegmentor, tiny_vit


@pytest.mark.parametrize("spec", ["last_k_blocks:4", "last_k_blocks: 4", " LAST_K_BLOCKS:4", {"last_k_blocks": 4},
                                  {"last_k_blocks": "4"}, FreezePolicy("last_k_blocks", 4)])
def test_parse_last_k_blocks(spec):
    assert FreezePolicy.parse(spec) == FreezePolicy("last_k_blocks", 4)
    assert str(FreezePolicy.parse(spec)) == "last_k_blocks:4"


def test_parse_simple_policies_and_errors():
    assert FreezePolicy.parse(None) == FreezePolicy.parse("full") == FreezePolicy("full")
    assert FreezePolicy.parse({"linear_probe": True}).kind == "linear_probe"
    assert FreezePolicy.parse("frozen_backbone").kind == "frozen_backbone"
    with pytest.raises(ValueError, match="Unknown freeze policy 'last_blocks:4'; valid policies are 'full', "
                                         "'last_k_blocks:K'.*'frozen_backbone', 'linear_probe'"):
        FreezePolicy.parse("last_blocks:4")
    with pytest.raises(ValueError, match="integer K"):
        FreezePolicy.parse("last_k_blocks")
    with pytest.raises(ValueError, match="exactly one key"):
        FreezePolicy.parse({"full": 1, "linear_probe": 1})


def restated_last_k(names, depth, k, prefix):
    """MAE Fig. 9 partial fine-tuning, restated: embeddings and blocks [0, depth - k) are frozen."""
    frozen = []
    for n in names:
        rel = n[len(prefix):]
        if not n.startswith(prefix):
            continue
        if rel in ("cls_token", "pos_embed") or rel.startswith("patch_embed."):
            frozen.append(n)
        elif rel.startswith("blocks.") and int(rel.split(".")[1]) < depth - k:
            frozen.append(n)
    return frozen


@pytest.mark.parametrize("k", [0, 1, 4, 12])
def test_last_k_blocks_freezes_embeddings_and_early_blocks(k):
    names = [n for n, _ in ToyDetector(tiny_vit(depth=12)).named_parameters()]
    frozen = frozen_parameter_names(names, f"last_k_blocks:{k}", backbone_prefix="backbone.net.")
    assert frozen == restated_last_k(names, 12, k, "backbone.net.")
    assert "backbone.net.norm.weight" not in frozen  # the final norm trains with the last blocks


def test_frozen_backbone_and_linear_probe_in_both_layouts():
    det = [n for n, _ in ToyDetector(tiny_vit(depth=2)).named_parameters()]
    seg = [n for n, _ in ToySegmentor(tiny_vit(depth=2)).named_parameters()]
    assert set(frozen_parameter_names(det, "frozen_backbone", "backbone.net.", "backbone.")) == \
        {n for n in det if n.startswith("backbone.net.")}
    assert set(frozen_parameter_names(det, "linear_probe", "backbone.net.", "backbone.")) == \
        {n for n in det if not n.startswith("roi_heads.")}
    assert set(frozen_parameter_names(seg, "linear_probe", "backbone.", "neck.")) == \
        {n for n in seg if not n.startswith("decode_head.")}
    assert frozen_parameter_names(seg, "full", "backbone.") == []
    with pytest.raises(ValueError, match="more blocks than the ViT has"):
        frozen_parameter_names(seg, "last_k_blocks:3", "backbone.")


def test_frozen_modules_stay_in_eval_mode_after_train():
    """Drop path is off in frozen blocks (deterministic), on in trainable ones; BN stats of a frozen
    neck do not move."""
    torch.manual_seed(0)
    model = ToySegmentor(tiny_vit(depth=6, drop_path=0.5))
    apply_freeze(model, "last_k_blocks:2", backbone_prefix="backbone.")
    apply_freeze(model, "last_k_blocks:2", backbone_prefix="backbone.")  # idempotent: one hook each
    model.train()
    blocks = model.backbone.blocks
    assert all(len(b._forward_pre_hooks) == 1 for b in blocks[:4]) and not blocks[4]._forward_pre_hooks
    x = torch.randn(4, 3, 32, 32)
    model(x)
    assert [b.training for b in blocks] == [False] * 4 + [True] * 2
    assert model.backbone.patch_embed.training is False and model.backbone.training is True
    frozen_part = torch.nn.Sequential(model.backbone.patch_embed, *blocks[:4])
    tokens = model.backbone.patch_embed(x)
    assert torch.equal(blocks[:4](tokens), blocks[:4](tokens))  # no stochastic depth
    assert not torch.equal(blocks[4:](tokens), blocks[4:](tokens))
    assert not any(p.requires_grad for p in frozen_part.parameters())

    probe = ToySegmentor(tiny_vit(depth=2))
    apply_freeze(probe, "linear_probe", backbone_prefix="backbone.", neck_prefix="neck.")
    probe.train()
    before = probe.neck.norm.running_mean.clone()
    probe(x)
    assert torch.equal(probe.neck.norm.running_mean, before) and probe.decode_head.weight.requires_grad
