"""One ViT-naming rule (mae_transfer.models.naming) for optim and checkpoints, and checkpoint
layouts registered by the glue (checkpoints.register_layout) or found generically."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from mae_transfer.checkpoints import (
    VIT,
    Layout,
    convert_state_dict,
    detect_layout,
    load_pretrained,
    model_layout,
    register_layout,
)
from mae_transfer.checkpoints import layouts as layouts_module
from mae_transfer.models import MultiLevelPyramid, SimplePyramid
from mae_transfer.models.mae import create_mae
from mae_transfer.models.naming import block_index, block_indices, find_vit_prefix, is_embedding, vit_prefixes
from mae_transfer.optim import find_backbone_prefix, frozen_parameter_names, param_settings

from _checkpoint_cases import EMBED, IMG, image, vit

ROOT = Path(__file__).resolve().parents[1]


def _names(module: nn.Module) -> list[str]:
    return [n for n, _ in module.named_parameters()]


def _wrap(**children: nn.Module) -> nn.Module:
    """A module with the given dotted children, e.g. ``_wrap(**{"backbone.net": vit})``."""
    root = nn.Module()
    for path, child in children.items():
        parent = root
        *parents, leaf = path.split(".")
        for name in parents:
            if not hasattr(parent, name):
                parent.add_module(name, nn.Module())
            parent = getattr(parent, name)
        parent.add_module(leaf, child)
    return root


def test_block_index_and_embeddings():
    assert block_index("blocks.11.mlp.fc2.bias") == 11
    assert [block_index(n) for n in ("decoder_blocks.0.norm1.weight", "blocks_extra.0.w", "norm.weight")] == [None] * 3
    assert block_indices(["x.blocks.0.a", "x.blocks.3.b", "blocks.7.c"], prefix="x.") == {0, 3}
    assert all(is_embedding(n) for n in ("cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight"))
    assert not any(is_embedding(n) for n in ("blocks.0.attn.qkv.weight", "decoder_pos_embed", "norm.bias"))


def test_vit_prefix_of_models_and_state_dicts_from_several_libraries():
    """Our ViT, timm's (nn.Sequential blocks), Detectron2's ViTDet, MAE's (not its decoder), MoCo keys."""
    from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT

    d2 = ViT(img_size=64, patch_size=16, embed_dim=16, depth=2, num_heads=2)
    timm_vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, num_classes=0)
    assert isinstance(timm_vit.blocks, nn.Sequential)
    cases = {
        "": vit(),
        "backbone.net.": _wrap(**{"backbone": SimpleFeaturePyramid(d2, "last_feat", 8, (2.0, 1.0), norm="LN"),
                                  "roi_heads": nn.Linear(8, 2)}),
        "backbone.bottom_up.net.": _wrap(**{"backbone.bottom_up.net": vit(), "backbone.fpn": nn.Conv2d(3, 3, 1)}),
        "encoder.": _wrap(encoder=timm_vit, head=nn.Linear(192, 3)),
    }
    for expected, model in cases.items():
        assert find_vit_prefix(_names(model)) == expected
        assert find_backbone_prefix(model) == expected  # optim's caller
    mae = create_mae("mae_vit_tiny_patch16", depth=2, decoder_depth=1, img_size=32)
    assert vit_prefixes(_names(mae)) == [""]  # decoder_blocks.* are not a second ViT
    moco = [f"module.{p}.{k}" for p in ("base_encoder", "momentum_encoder") for k in vit().state_dict()]
    assert vit_prefixes(moco) == ["module.base_encoder.", "module.momentum_encoder."]
    assert find_vit_prefix(_names(timm.create_model("resnet18", pretrained=False))) is None
    assert find_vit_prefix(["decoder_patch_embed.w", "decoder_blocks.0.w", "blocks_extra.0.w"]) is None


def test_optim_and_checkpoints_agree_on_a_timm_vit_inside_a_model():
    """The module test of checkpoints.load accepted only nn.ModuleList blocks, optim's also
    nn.Sequential (timm): both now read names, and a timm ViT loads like any other."""
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, num_classes=0, img_size=IMG)
    torch.manual_seed(0)
    target = _wrap(encoder=timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, num_classes=0,
                                             img_size=IMG), head=nn.Linear(EMBED, 3))
    report = load_pretrained(target, {"model": source.state_dict()})
    assert not report.missing and len(report.loaded) == len(source.state_dict())
    source.eval(), target.eval()
    x = image()
    assert torch.equal(target.encoder.forward_features(x), source.forward_features(x))
    records = param_settings(target, weight_decay=0.1, layer_decay=0.5)  # prefix found: "encoder."
    by_name = {r["name"]: r["layer_id"] for r in records}
    assert by_name["encoder.patch_embed.proj.weight"] == 0 and by_name["encoder.blocks.1.mlp.fc1.weight"] == 2
    assert by_name["head.weight"] == 3
    assert frozen_parameter_names(_names(target), "frozen_backbone") == [n for n in _names(target)
                                                                        if n.startswith("encoder.")]


def test_no_vit_is_one_sentence_for_both_callers():
    model = _wrap(trunk=nn.Conv2d(3, 4, 3), head=nn.Linear(4, 2))
    with pytest.raises(ValueError, match="No Vision Transformer .* pass backbone_prefix explicitly"):
        param_settings(model, weight_decay=0.0, layer_decay=1.0)
    with pytest.raises(ValueError, match="Found no ViT .* pass prefix="):
        load_pretrained(model, {"model": vit().state_dict()})


class _TrunkDetector(nn.Module):
    """A made-up framework model: ViT at ``trunk.vit.``, pyramid at ``trunk.fpn.``, a head."""

    def __init__(self):
        super().__init__()
        self.trunk = _wrap(vit=vit(), fpn=SimplePyramid(in_channels=EMBED, out_channels=16, norm="LN"))
        self.head = nn.Linear(16, 2)


def test_register_layout_maps_a_glue_models_vit_and_pyramid():
    src = _TrunkDetector()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.1)
    ckpt = {"model": src.state_dict()}
    generic = detect_layout(ckpt["model"])
    assert generic.name == "vit_in_model" and dict(generic.prefixes)["trunk.vit."] == VIT

    layout = model_layout("test_trunk", "test detector", vit="trunk.vit.", pyramid="trunk.fpn.")
    try:
        assert register_layout(layout) is layout
        register_layout(layout)  # again: replaced, not added twice
        assert [row.name for row in layouts_module.LAYOUTS].count("test_trunk") == 1
        converted = convert_state_dict(ckpt["model"])
        assert converted.layout == "test_trunk" and set(converted.pyramid) == set(src.trunk.fpn.state_dict())
        # into a ViT + pyramid module of other names: the pyramid follows its role, not its name
        target = _wrap(net=vit(), pyramid=SimplePyramid(in_channels=EMBED, out_channels=16, norm="LN"))
        report = load_pretrained(target, ckpt)
        assert report.layout == "test_trunk" and not report.missing
        for key, value in src.trunk.fpn.state_dict().items():
            assert torch.equal(target.pyramid.state_dict()[key], value)
        with pytest.raises(ValueError, match="built-in layout"):
            register_layout(Layout("vitdet", "clash", lambda keys: False))
    finally:
        layouts_module.LAYOUTS[:] = [row for row in layouts_module.LAYOUTS if row.name != "test_trunk"]
        layouts_module._registered.remove("test_trunk")


def test_project_run_checkpoints_without_their_glue_still_load_the_vit(monkeypatch):
    """With only the built-in layouts, this project's det/seg run checkpoints load their ViT through
    the generic layout (a seg one is not mistaken for ViTDet), and the rest keeps its names."""
    builtin = [row for row in layouts_module.LAYOUTS if row.name not in layouts_module._registered]
    monkeypatch.setattr(layouts_module, "LAYOUTS", builtin)
    det = _wrap(**{"backbone.bottom_up.net": vit(depth=4, out_indices=(0, 1, 2, 3)),
                   "backbone.bottom_up.pyramid": MultiLevelPyramid(in_channels=EMBED, norm="LN"),
                   "roi_heads": nn.Linear(4, 2)})
    seg = _wrap(**{"backbone.net": vit(depth=4, out_indices=(0, 1, 2, 3)),
                   "neck.pyramid": MultiLevelPyramid(in_channels=EMBED, norm="LN"), "decode_head": nn.Linear(4, 2)})
    for model, prefix in ((det, "backbone.bottom_up.net."), (seg, "backbone.net.")):
        converted = convert_state_dict(model.state_dict())
        assert converted.layout == "vit_in_model"
        assert set(converted.vit) == {k[len(prefix):] for k in model.state_dict() if k.startswith(prefix)}
        fresh = _wrap(net=vit(depth=4, out_indices=(0, 1, 2, 3)))
        assert load_pretrained(fresh, model.state_dict()).loaded


def test_glue_registers_its_own_layouts_and_the_core_names_no_glue():
    import mae_transfer.det  # noqa: F401
    import mae_transfer.seg  # noqa: F401

    assert {"mae_transfer_det", "mae_transfer_seg"} <= set(layouts_module._registered)
    for package in ("checkpoints", "optim", "models"):
        for path in (ROOT / "mae_transfer" / package).glob("*.py"):
            text = path.read_text()
            assert "bottom_up" not in text and "neck.pyramid" not in text, path
