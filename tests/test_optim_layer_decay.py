"""Layer-wise lr decay against the rules it must reproduce: official MAE, Detectron2's ViTDet."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from timm.models.beit import Beit

from mae_transfer.models import create_vit
from mae_transfer.optim import find_backbone_prefix, get_layer_id, param_groups, param_settings

from _optim_models import ToyDetector, tiny_vit


def official_mae_rule(model, weight_decay: float, layer_decay: float) -> dict[str, tuple]:
    """MAE ``util/lr_decay.py`` (param_groups_lrd + get_layer_id_for_vit), restated.

    Returns name -> (layer id, lr scale, weight decay), with MAE's own numbering:
    num_layers = len(blocks) + 1 and lr scale = layer_decay ** (num_layers - layer_id).
    """
    num_layers = len(model.blocks) + 1
    no_weight_decay_list = model.no_weight_decay()  # main_finetune.py passes this
    rule = {}
    for name, param in model.named_parameters():
        if name in ("cls_token", "pos_embed"):
            layer_id = 0
        elif name.startswith("patch_embed"):
            layer_id = 0
        elif name.startswith("blocks"):
            layer_id = int(name.split(".")[1]) + 1
        else:
            layer_id = num_layers
        this_decay = 0.0 if (param.ndim == 1 or name in no_weight_decay_list) else weight_decay
        rule[name] = (layer_id, layer_decay ** (num_layers - layer_id), this_decay)
    return rule


def build_vit(source: str, depth: int):
    """timm's ViT with MAE's fine-tuning head (fc_norm + head), or ours with the preset's real depth."""
    if source == "timm":
        return tiny_vit(depth=depth, num_classes=10, global_pool="avg")
    preset = {12: "vit_base_patch16", 24: "vit_large_patch16"}[depth]
    model = create_vit(preset, embed_dim=16, num_heads=2, img_size=32, use_cls_token=True, rel_pos=None, window_size=0)
    assert model.depth == depth
    return model


@pytest.mark.parametrize("source", ["timm", "mae_transfer"])
@pytest.mark.parametrize("depth", [12, 24], ids=["vit_b", "vit_l"])
@pytest.mark.parametrize("layer_decay", [0.65, 0.75])
def test_every_parameter_matches_official_mae_rule(source, depth, layer_decay):
    torch.manual_seed(0)
    model = build_vit(source, depth)
    expected = official_mae_rule(model, weight_decay=0.05, layer_decay=layer_decay)

    records = param_settings(model, weight_decay=0.05, layer_decay=layer_decay, backbone_prefix="")
    assert {r["name"]: (r["layer_id"], r["lr_scale"], r["weight_decay"]) for r in records} == expected

    groups = param_groups(model, base_lr=1e-3, weight_decay=0.05, layer_decay=layer_decay, backbone_prefix="")
    seen = {}
    for group in groups:
        assert group["lr"] == 1e-3 * group["lr_scale"]
        for name in group["param_names"]:
            seen[name] = (group["lr_scale"], group["weight_decay"])
    assert seen == {name: (scale, wd) for name, (_, scale, wd) in expected.items()}
    # identical (lr, wd) merged: one group per (layer, decay/no-decay) that occurs, as in MAE
    assert len(groups) == len({(lid, wd > 0) for lid, _, wd in expected.values()})
    assert groups[0]["lr_scale"] == 1.0 and groups[-1]["lr_scale"] == layer_decay ** (depth + 1)


def test_get_layer_id_numbers():
    assert [get_layer_id(n, 12) for n in ("cls_token", "pos_embed", "patch_embed.proj.weight")] == [0, 0, 0]
    assert get_layer_id("blocks.0.attn.qkv.weight", 12) == 1
    assert get_layer_id("blocks.11.mlp.fc2.bias", 12) == 12
    assert [get_layer_id(n, 12) for n in ("norm.weight", "head.bias", "blocks_extra.w")] == [13, 13, 13]


def test_vitdet_rule_matches_detectron2_on_its_own_vit():
    """Detectron2's ViT + SimpleFeaturePyramid, scored by Detectron2's own optimizer code as the
    ViTDet configs call it (get_default_optimizer_params + get_vit_lr_decay_rate)."""
    from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT, get_vit_lr_decay_rate
    from detectron2.solver.build import get_default_optimizer_params

    vit = ViT(img_size=64, patch_size=16, embed_dim=16, depth=12, num_heads=2, use_rel_pos=True,
              window_size=2, window_block_indexes=(0, 1, 3, 4), residual_block_indexes=())
    model = torch.nn.Module()
    model.backbone = SimpleFeaturePyramid(vit, "last_feat", out_channels=8, scale_factors=(2.0, 1.0), norm="LN")
    model.roi_heads = torch.nn.Linear(8, 2)
    assert find_backbone_prefix(model) == "backbone.net."
    groups = get_default_optimizer_params(
        model, base_lr=1.0, weight_decay=0.1, weight_decay_norm=0.0, overrides={"pos_embed": {"weight_decay": 0.0}},
        lr_factor_func=partial(get_vit_lr_decay_rate, lr_decay_rate=0.7, num_layers=12))
    names = {id(p): n for n, p in model.named_parameters()}
    reference = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    records = param_settings(model, weight_decay=0.1, layer_decay=0.7, weight_decay_rule="vitdet")
    ours = {r["name"]: (r["lr_scale"], r["weight_decay"]) for r in records}
    assert ours.keys() == reference.keys()
    for name, (lr, wd) in reference.items():
        assert ours[name] == (pytest.approx(lr, rel=1e-12), wd), name
    assert ours["backbone.net.blocks.0.attn.rel_pos_h"][1] == 0.1 and ours["backbone.net.pos_embed"][1] == 0.0
    assert ours["backbone.simfp_3.1.norm.weight"][1] == 0.1  # detectron2.layers.LayerNorm is decayed


def _beit_records(rule: str) -> dict[str, dict]:
    model = Beit(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=0,
                 use_rel_pos_bias=True, init_values=0.1)
    return {r["name"]: r for r in param_settings(model, weight_decay=0.05, layer_decay=0.65, backbone_prefix="",
                                                 weight_decay_rule=rule)}


@pytest.mark.parametrize("rule, table_wd, cls_wd, norm_wd", [
    ("mae", 0.05, 0.0, 0.0),     # MAE fine-tuning: 1-d + pos_embed/cls_token/dist_token
    ("beit", 0.05, 0.05, 0.0),   # MMSeg/BEiT as they run: 1-d + '.bias'; tables and tokens decayed
    ("vitdet", 0.05, 0.05, 0.0),  # Detectron2: torch.nn norms + pos_embed; q/v biases decayed
])
def test_named_rules_on_timm_beit(rule, table_wd, cls_wd, norm_wd):
    records = _beit_records(rule)
    table = records["blocks.1.attn.relative_position_bias_table"]
    assert len(table["shape"]) == 2 and table["weight_decay"] == table_wd and table["layer_id"] == 2
    assert records["cls_token"]["weight_decay"] == cls_wd
    assert records["blocks.0.norm1.weight"]["weight_decay"] == norm_wd
    assert records["blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    one_d_decayed = rule == "vitdet"  # gamma_1 and q_bias belong to no norm module
    assert (records["blocks.0.gamma_1"]["weight_decay"] > 0) == one_d_decayed
    assert (records["blocks.0.attn.q_bias"]["weight_decay"] > 0) == one_d_decayed


def test_unknown_rule_is_one_clear_sentence():
    with pytest.raises(ValueError, match="Unknown weight-decay rule 'timm'; use one of vitdet, beit, mae"):
        _beit_records("timm")


def test_our_beit_shared_table_is_top_layer():
    """BEiT's own rule (optim_factory.get_num_layer_for_vit): 'rel_pos_bias' -> the top layer."""
    model = create_vit("beit_base_patch16", embed_dim=16, num_heads=2, depth=3, img_size=32, rel_pos="beit_shared")
    records = {r["name"]: r for r in param_settings(model, weight_decay=0.05, layer_decay=0.65, backbone_prefix="",
                                                    weight_decay_rule="beit")}
    shared = records["rel_pos_bias.relative_position_bias_table"]
    assert (shared["layer_id"], shared["lr_scale"], shared["weight_decay"]) == (4, 1.0, 0.05)
    assert records["cls_token"]["layer_id"] == 0 and records["cls_token"]["weight_decay"] == 0.05


def test_prefix_puts_everything_outside_the_vit_on_top_and_skips_frozen():
    model = ToyDetector(tiny_vit(depth=4))
    model.backbone.net.blocks[0].attn.qkv.weight.requires_grad_(False)
    groups = param_groups(model, base_lr=2.0, weight_decay=0.1, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert "backbone.net.blocks.0.attn.qkv.weight" not in by_name
    assert by_name["backbone.simfp.proj.weight"]["lr"] == 2.0 and 5 in by_name["roi_heads.weight"]["layer_ids"]
    assert by_name["backbone.net.blocks.0.mlp.fc1.weight"]["lr"] == 2.0 * 0.5 ** 4
    assert by_name["backbone.net.norm.weight"]["lr_scale"] == 1.0
    assert by_name["backbone.net.cls_token"]["lr_scale"] == 0.5 ** 5
    # total: every trainable parameter exactly once
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)


def test_overrides_by_leaf_name_and_glob():
    model = ToyDetector(tiny_vit(depth=4))
    records = {r["name"]: r for r in param_settings(
        model, weight_decay=0.1, layer_decay=0.5,
        overrides={"roi_heads.*": {"lr_mult": 10.0}, "*.qkv.weight": {"weight_decay": 0.0},
                   "pos_embed": {"weight_decay": 0.2}},
    )}
    assert (records["roi_heads.weight"]["lr_scale"], records["roi_heads.weight"]["weight_decay"]) == (10.0, 0.1)
    assert records["backbone.net.blocks.1.attn.qkv.weight"]["weight_decay"] == 0.0
    assert records["backbone.net.pos_embed"]["weight_decay"] == 0.2
    assert records["backbone.net.blocks.1.mlp.fc1.weight"]["weight_decay"] == 0.1
    with pytest.raises(ValueError, match="unknown keys"):
        param_settings(model, weight_decay=0.1, layer_decay=0.5, overrides={"qkv": {"lr": 1.0}})


def test_clear_errors_for_wrong_prefix_and_all_frozen():
    model = ToyDetector(tiny_vit(depth=2))
    with pytest.raises(ValueError, match=r"backbone prefix 'backbone\.vit\.'.*\['backbone', 'roi_heads'\]"):
        param_groups(model, base_lr=1.0, weight_decay=0.0, layer_decay=0.9, backbone_prefix="backbone.vit.")
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        param_groups(model, base_lr=1.0, weight_decay=0.0, layer_decay=0.9)
