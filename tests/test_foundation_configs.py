"""The DINOv2 / SAM configs build their models (Detectron2 and MMSeg), keep pyramid strides
4/8/16/32 with patch 14, and load the official checkpoint layouts with nothing unexplained."""
from __future__ import annotations

from functools import partial

import pytest
import timm
import torch
from detectron2.modeling import build_backbone
from torch import nn

from mae_transfer.det import load_config as load_det_config

TINY = ["MODEL.VIT.EMBED_DIM", 192, "MODEL.VIT.NUM_HEADS", 3, "MODEL.VIT.DEPTH", 4,
        "MODEL.VIT.GLOBAL_BLOCKS", (1, 3), "MODEL.VIT.DROP_PATH", 0.0]
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}

pytestmark = pytest.mark.usefixtures("one_thread")


def perturb(module: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module.eval()


def dinov2_hub_file(path) -> None:
    """A tiny checkpoint in the official DINOv2 hub layout (timm's tensors, hub names)."""
    src = perturb(timm.create_model("vit_base_patch14_dinov2", pretrained=False, depth=4, embed_dim=192,
                                    num_heads=3, num_classes=0))
    sd = dict(src.state_dict(), mask_token=torch.zeros(1, 192))
    torch.save(sd, path)


def sam_file(path) -> None:
    """A tiny checkpoint in the official SAM layout (segment_anything's own modules)."""
    modeling = pytest.importorskip("segment_anything.modeling")
    enc = modeling.ImageEncoderViT(img_size=1024, embed_dim=192, depth=4, num_heads=3, qkv_bias=True,
                                   norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                   window_size=14, global_attn_indexes=(1, 3))
    sd = {f"image_encoder.{k}": v for k, v in perturb(enc).state_dict().items()}
    sd["mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    torch.save(sd, path)


@pytest.mark.parametrize("name, make", [("coco_vitb_dinov2", dinov2_hub_file), ("coco_vitb_sam", sam_file)])
def test_det_config_builds_loads_official_layout_and_keeps_strides(name, make, tmp_path, caplog):
    path = tmp_path / "weights.pth"
    make(path)
    cfg = load_det_config(name, TINY + ["MODEL.VIT.WEIGHTS", str(path)])
    with caplog.at_level("INFO", logger="mae_transfer"):
        backbone = build_backbone(cfg).eval()
    assert "NOT in checkpoint" not in caplog.text and "unexpected" not in caplog.text, caplog.text
    assert ("layout dinov2" if "dinov2" in name else "layout sam") in caplog.text
    assert {k: v.stride for k, v in backbone.output_shape().items()} == STRIDES
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 256, 320))
    assert {k: tuple(v.shape[-2:]) for k, v in out.items()} == {
        k: (256 // s, 320 // s) for k, s in STRIDES.items()}


def test_det_dinov2_config_is_patch14_at_stride16():
    cfg = load_det_config("coco_vitb_dinov2")
    assert (cfg.MODEL.VIT.NAME, cfg.MODEL.VIT.FEATURE_STRIDE) == ("vit_base_patch14_dinov2", 16)
    assert cfg.SOLVER.LAYER_DECAY == 0.7 and cfg.INPUT.LSJ.IMAGE_SIZE == 1024


def test_seg_dinov2_config_builds_with_stride16_maps():
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    import mae_transfer.seg  # noqa: F401  (registrations)
    from mae_transfer.seg.config import load_config as load_seg_config

    cfg = load_seg_config("ade20k_vitb_dinov2")
    backbone_cfg = dict(cfg.model.backbone, pretrained=None, depth=4, out_indices=(0, 1, 2, 3))
    with DefaultScope.overwrite_default_scope("mmseg"):
        backbone = MODELS.build(backbone_cfg).eval()
    net = backbone.net
    assert (net.patch_size, net.feature_stride, net.num_prefix_tokens, net.pretrain_grid) == (14, 16, 1, (32, 32))
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 512, 512))
    assert [tuple(m.shape) for m in maps] == [(1, 768, 32, 32)] * 4


def test_compare_inits_dinov2_and_sam_switch_the_architecture(tmp_path):
    """``compare --inits dinov2=PATH sam=PATH``: the checkpoints' presets reach both commands and
    the demo recipes accept the overrides."""
    from mae_transfer.compare import resolve_inits
    from mae_transfer.compare.launch import det_command, seg_command

    dino = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, depth=1, num_classes=0)
    sam = timm.create_model("samvit_base_patch16", pretrained=False, depth=1, num_classes=0)
    torch.save(dict(dino.state_dict(), mask_token=torch.zeros(1, 384)), tmp_path / "dino.pth")
    torch.save(sam.state_dict(), tmp_path / "sam.pth")
    inits = resolve_inits([f"dinov2={tmp_path / 'dino.pth'}", f"sam={tmp_path / 'sam.pth'}"], tmp_path)
    assert [i.name for i in inits] == ["dinov2", "sam"]
    assert inits[0].det_opts[:2] == ("MODEL.VIT.NAME", "vit_small_patch14_reg4_dinov2")
    assert "MODEL.VIT.FEATURE_STRIDE" in inits[0].det_opts
    assert inits[1].det_opts[:2] == ("MODEL.VIT.NAME", "samvit_base_patch16")
    for init in inits:
        command = det_command("demo_vit_tiny", tmp_path / "run", init, ["SOLVER.MAX_ITER", "5"])
        opts = command[command.index("OUTPUT_DIR"):]
        cfg = load_det_config("demo_vit_tiny", opts)
        assert cfg.MODEL.VIT.NAME == init.det_opts[1] and cfg.SOLVER.MAX_ITER == 5
        assert f"model.backbone.arch={init.det_opts[1]}" in seg_command("demo_vit_tiny", tmp_path, init)
