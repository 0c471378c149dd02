"""Checkpoint layouts, conversion, geometry adaptation and the load report.

Checkpoints come from the real libraries (timm, Detectron2, MMSeg; see _checkpoint_cases.py) and
the loaded model is compared with the source library's own forward pass.
"""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mae_transfer.checkpoints import CheckpointMismatchError, convert_to_vit, detect_layout, load_pretrained, unwrap
from mae_transfer.models import create_vit

from _checkpoint_cases import (
    CASES,
    DEPTH,
    EMBED,
    d2_vitdet,
    flat_state_dict,
    image,
    our_vitdet,
    timm_beit,
    timm_vit,
    vit,
)

_built: dict = {}


def build(name):
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = CASES[name]()
    return _built[name]


def save(case, tmp_path, fmt):
    path = tmp_path / f"ckpt.{fmt}"
    if fmt == "pth":
        torch.save(case.checkpoint, path)
    else:
        save_file(flat_state_dict(case.checkpoint), str(path))
    return path


SAFETENSORS_CASES = ("timm_vit", "beit_unilm_shared", "vitdet", "mmseg_mae")


@pytest.mark.parametrize("name, fmt",
                         [(n, "pth") for n in CASES] + [(n, "safetensors") for n in SAFETENSORS_CASES])
def test_layout_loads_and_matches_source(name, fmt, tmp_path):
    case = build(name)
    model = case.make_model().eval()
    report = load_pretrained(model, save(case, tmp_path, fmt))
    assert report.layout == case.layout
    assert report.unexplained == [], report.summary()
    reasons = " | ".join(report.ignored.values())
    for expected in case.ignored:
        if fmt == "safetensors" and expected == "metadata":
            continue  # safetensors files hold tensors only
        assert expected in reasons, report.summary()
    if case.reference is not None:
        with torch.no_grad():
            out = case.ours(model, case.x)
        assert out.shape == case.reference.shape
        assert (out - case.reference).abs().max().item() < 1e-4


def test_mae_pretrain_report_is_compact_and_dict_like(caplog):
    case = build("mae_pretrain")
    model = vit(img_size=128, window_size=4, global_blocks=(1,), rel_pos="decomposed", use_cls_token=False)
    with caplog.at_level(logging.INFO, logger="mae_transfer"):
        report = load_pretrained(model, case.checkpoint)
    assert set(report) == {"loaded", "missing", "unexpected", "resized", "ignored"}
    assert report["missing"] == [f"blocks.{i}.attn.rel_pos_{a}" for i in range(DEPTH) for a in "hw"]
    assert all(report.explained[k].startswith("decomposed relative position") for k in report["missing"])
    assert all(model.blocks[i].attn.rel_pos_h.abs().sum() == 0 for i in range(DEPTH))
    assert report["ignored"]["cls_token"].startswith("the model uses no class token")
    text = report.summary()
    n_decoder = sum(k.startswith("decoder_") for k in case.checkpoint["model"])
    assert f"decoder_* ({n_decoder} keys): MAE decoder, not part of the encoder" in text
    assert "layout mae_pretrain" in caplog.text and "MAE decoder" in caplog.text


def test_pos_embed_resized_14_to_64_matches_bicubic():
    src = timm_vit(img_size=224)
    model = create_vit("vit_tiny_patch16", depth=DEPTH, pretrain_img_size=1024)
    report = load_pretrained(model, {"model": src.state_dict()})
    assert report["resized"]["pos_embed"] == ((1, 197, EMBED), (1, 1 + 64 * 64, EMBED))
    old = src.pos_embed.detach()
    grid = old[:, 1:].reshape(1, 14, 14, EMBED).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(64, 64), mode="bicubic", align_corners=False)[0]  # (C, 64, 64)
    new = model.pos_embed.detach()
    assert torch.equal(new[0, 0], old[0, 0])  # cls entry kept
    got = new[0, 1:].reshape(64, 64, EMBED).permute(2, 0, 1)
    for i, j in [(0, 0), (0, 63), (63, 0), (63, 63), (32, 32), (31, 32)]:
        torch.testing.assert_close(got[:, i, j], expected[:, i, j], rtol=0, atol=1e-6)


def test_pos_embed_prefix_entries_follow_the_model():
    distilled = build("deit_distilled").checkpoint["model"]
    with_cls = vit()
    load_pretrained(with_cls, distilled)  # (cls, dist, grid) -> (cls, grid)
    expected = torch.cat([distilled["pos_embed"][:, :1], distilled["pos_embed"][:, 2:]], 1)
    assert torch.equal(with_cls.pos_embed.detach(), expected)

    src = timm_vit().state_dict()
    no_cls = vit(use_cls_token=False, pretrain_use_cls_token=False)
    report = load_pretrained(no_cls, src)  # cls entry dropped
    assert torch.equal(no_cls.pos_embed.detach(), src["pos_embed"][:, 1:])
    assert report["resized"]["pos_embed"] == ((1, 50, EMBED), (1, 49, EMBED))

    src_no_cls = dict(src, pos_embed=src["pos_embed"][:, 1:])
    load_pretrained(with_cls, src_no_cls)  # cls entry added as zeros
    assert torch.equal(with_cls.pos_embed.detach()[:, 1:], src["pos_embed"][:, 1:])
    assert with_cls.pos_embed.detach()[:, 0].abs().sum() == 0


def test_decomposed_rel_pos_resized_linearly():
    sfp = d2_vitdet()
    sd = {"backbone." + k: v for k, v in sfp.state_dict().items()}
    model = our_vitdet(img_size=160)
    report = load_pretrained(model, {"model": sd})
    old = sd["backbone.net.blocks.1.attn.rel_pos_h"]  # global block: 2 * 8 - 1 rows
    assert report["resized"]["net.blocks.1.attn.rel_pos_h"] == ((15, EMBED // 3), (19, EMBED // 3))
    expected = F.interpolate(old.T[None], size=19, mode="linear", align_corners=False)[0].T
    torch.testing.assert_close(model.net.blocks[1].attn.rel_pos_h.detach(), expected)
    assert "net.blocks.0.attn.rel_pos_h" not in report["resized"]  # window block: same 4x4 window


def test_beit_table_resized_bicubic_with_cls_entries_kept():
    src = timm_beit(shared=False, global_pool="avg").state_dict()
    model = vit("beit_base_patch16", img_size=128, final_norm=False)  # window 7 -> 8
    report = load_pretrained(model, src)
    key = "blocks.0.attn.relative_position_bias_table"
    assert report["resized"][key] == ((13 * 13 + 3, 3), (15 * 15 + 3, 3))
    old, new = src[key], model.blocks[0].attn.relative_position_bias_table.detach()
    grid = old[:-3].T.reshape(1, 3, 13, 13)
    expected = F.interpolate(grid, size=(15, 15), mode="bicubic", align_corners=False).reshape(3, -1).T
    torch.testing.assert_close(new[:-3], expected)
    assert torch.equal(new[-3:], old[-3:])


def test_beit_into_qkv_bias_model_and_vit_into_qv_bias_model():
    beit = timm_beit(shared=False, global_pool="avg")
    x = image()
    plain = vit(rel_pos="beit", layer_scale=0.1, use_abs_pos=False, final_norm=False).eval()
    report = load_pretrained(plain, beit.state_dict())
    assert report.unexplained == [] and any("merged into attn.qkv.bias" in n for n in report.notes)
    with torch.no_grad():
        torch.testing.assert_close(plain.forward_features(x), beit.forward_features(x), atol=1e-4, rtol=0)

    src = timm_vit()
    qv = vit(qkv_bias=False, qv_bias=True).eval()
    report = load_pretrained(qv, src.state_dict())
    assert report.unexplained == [] and any("k bias dropped" in n for n in report.notes)
    with torch.no_grad():
        torch.testing.assert_close(qv.forward_features(x), src.forward_features(x), atol=1e-4, rtol=0)


def test_whole_model_takes_head_weights_with_matching_names_and_shapes():
    case = build("vitdet")

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = our_vitdet()
            self.roi_heads = torch.nn.Module()
            self.roi_heads.box_predictor = torch.nn.Module()
            self.roi_heads.box_predictor.cls_score = torch.nn.Linear(64, 4)  # 3 classes, not COCO's 80
            self.proposal_generator = torch.nn.Module()
            self.proposal_generator.rpn_head = torch.nn.Module()
            self.proposal_generator.rpn_head.conv = torch.nn.Conv2d(32, 32, 3, bias=False)

    model = Detector()
    report = load_pretrained(model, case.checkpoint)
    assert "proposal_generator.rpn_head.conv.weight" in report["loaded"]
    assert report["ignored"]["roi_heads.box_predictor.cls_score.weight"].startswith("shape (81, 64) differs")
    assert report.unexplained == []


def test_resnet_state_dict_is_rejected_in_one_sentence():
    import torchvision

    with pytest.raises(CheckpointMismatchError, match=r"not a ViT checkpoint .*first keys: conv1\.weight"):
        load_pretrained(vit(), torchvision.models.resnet18().state_dict())


def test_vit_large_into_vit_base_names_first_mismatches():
    import timm

    large = timm.create_model("vit_large_patch16_224", pretrained=False, depth=1).state_dict()
    with pytest.raises(CheckpointMismatchError) as err:
        load_pretrained(create_vit("vit_base_patch16", depth=1), {"model": large})
    message = str(err.value)
    assert "cls_token is (1, 1, 1024) in the checkpoint but (1, 1, 768) in the model" in message
    assert "ViT-L weights into a ViT-B" in message and message.count("\n") == 0


def test_depth_mismatch_and_strict_mode():
    with pytest.raises(CheckpointMismatchError, match="has 2 transformer blocks but the model has 3"):
        load_pretrained(vit(depth=3), timm_vit().state_dict())
    mmseg_mae = build("mmseg_mae").checkpoint  # layer scale + relative bias tables
    no_layer_scale = vit(rel_pos="beit")
    report = load_pretrained(no_layer_scale, mmseg_mae)
    assert sorted(report["unexpected"]) == [f"blocks.{i}.gamma_{j}" for i in range(DEPTH) for j in (1, 2)]
    with pytest.raises(CheckpointMismatchError, match="strict=True"):
        load_pretrained(no_layer_scale, mmseg_mae, strict=True)


def test_pure_conversion_functions():
    sd = build("mmseg_vit").checkpoint
    assert detect_layout(unwrap(sd)[0]).name == "mmseg_vit"
    vit = convert_to_vit(sd)
    assert "blocks.1.attn.qkv.weight" in vit and "norm.weight" in vit and "patch_embed.proj.bias" in vit
    assert torch.equal(vit["blocks.0.mlp.fc2.weight"], sd["state_dict"]["backbone.layers.0.ffn.layers.1.weight"])
    assert not any(k.startswith(("decode_head", "backbone.")) for k in vit)


def test_report_groups_keys_compactly():
    from mae_transfer.checkpoints.report import compact_keys

    assert compact_keys(["mask_token"]) == "mask_token"
    assert compact_keys([f"blocks.{i}.attn.rel_pos_{a}" for i in range(12) for a in "hw"]) == \
        "blocks.*.attn.rel_pos_h, blocks.*.attn.rel_pos_w (24 keys)"
    momentum = [f"module.momentum_encoder.blocks.{i}.{n}" for i in range(2) for n in ("norm1.weight", "mlp.fc1.bias",
                                                                                   "attn.qkv.weight", "norm2.bias")]
    assert compact_keys(momentum) == "module.momentum_encoder.blocks.* (8 keys)"
    decoder = ["decoder_embed.weight", "decoder_pos_embed", "decoder_blocks.0.norm1.weight", "decoder_norm.bias",
               "decoder_pred.weight"]
    assert compact_keys(decoder) == "decoder_* (5 keys)"
