"""DINOv2 and SAM backbones: our ViT against timm's DINOv2 / samvit and the official
``segment_anything`` image encoder, with random (perturbed) weights loaded through
``load_pretrained`` in every checkpoint layout (timm names, official DINOv2 hub names, official
SAM ``image_encoder.*``). Depth and width are reduced where the constructors allow."""
from __future__ import annotations

from functools import partial

import pytest
import timm
import torch
from torch import nn

from mae_transfer.checkpoints import load_pretrained
from mae_transfer.models import create_vit

segment_anything = pytest.importorskip("segment_anything")  # test-only dependency (requirements.txt)

TOL = 1e-4  # relative to the reference's largest magnitude


def perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random offsets on every parameter (zero-initialised tables, 1e-5 layer scales matter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return module.eval()


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.shape == ref.shape
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def image(size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- DINOv2 ---------------------------------------------------------------------------------------

DINOV2 = [("vit_small_patch14_dinov2", {}), ("vit_small_patch14_reg4_dinov2", {}),
          ("vit_giant_patch14_dinov2", dict(embed_dim=192, num_heads=3))]  # giant: SwiGLU, narrower


def timm_dinov2(name: str, kw: dict, **extra) -> nn.Module:
    return perturb(timm.create_model(name, pretrained=False, depth=2, num_classes=0, **kw, **extra))


def hub_layout(timm_sd: dict, seed: int = 3) -> dict:
    """timm's DINOv2 state dict in the official hub file's names: ``register_tokens``, a cls
    position entry in ``pos_embed`` (folded out of the cls token), ``mask_token``, ``mlp.w12/w3``."""
    sd = {k: v.clone() for k, v in timm_sd.items()}
    dim = sd["cls_token"].shape[-1]
    if "reg_token" in sd:
        cls_pos = torch.randn(1, 1, dim, generator=torch.Generator().manual_seed(seed))
        sd["register_tokens"] = sd.pop("reg_token")
        sd["cls_token"] = sd["cls_token"] - cls_pos
        sd["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    sd["mask_token"] = torch.zeros(1, dim)
    return sd


def swiglu_names(sd: dict) -> dict:
    return {k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3."): v for k, v in sd.items()}


@pytest.mark.parametrize("name, kw", DINOV2, ids=[n for n, _ in DINOV2])
def test_dinov2_matches_timm_at_224(name, kw, one_thread):
    src, x = timm_dinov2(name, kw, img_size=224), image(224)
    ours = create_vit(name, depth=2, img_size=224, pretrain_img_size=224, **kw).eval()
    report = load_pretrained(ours, src.state_dict())
    assert report.layout == "timm_dinov2" and report.unexplained == [], report.summary()
    with torch.no_grad():
        assert rel_err(ours.forward_features(x), src.forward_features(x)) < TOL
        ref_map = src.forward_intermediates(x, indices=1, norm=False, intermediates_only=True)[-1]
        assert rel_err(ours.forward_maps(x)[-1], ref_map) < TOL


@pytest.mark.parametrize("name, kw", DINOV2, ids=[n for n, _ in DINOV2])
def test_dinov2_hub_layout_518_table_resized_at_224(name, kw, one_thread):
    """The 37x37 table of 518 resized on the fly to 224 (timm: bicubic with antialiasing)."""
    src, x = timm_dinov2(name, kw, dynamic_img_size=True), image(224)
    hub = hub_layout(src.state_dict())
    if kw:
        hub = swiglu_names(hub)
    ours = create_vit(name, depth=2, **kw).eval()  # the preset: table at 518
    report = load_pretrained(ours, hub)
    assert report.layout == "dinov2" and report.unexplained == [], report.summary()
    assert "mask token" in report.ignored["mask_token"]
    with torch.no_grad():
        ref = src.forward_features(x)
        assert rel_err(ours.forward_features(x), ref) < TOL
        ours.pos_embed_antialias = False  # Detectron2 / MMSeg interpolation: measurably different
        assert rel_err(ours.forward_features(x), ref) > 10 * TOL


# -- SAM ------------------------------------------------------------------------------------------

SAM_TINY = dict(embed_dim=192, depth=4, num_heads=3)  # 2 window + 2 global blocks


def official_sam_encoder(size: int) -> nn.Module:
    return perturb(segment_anything.modeling.ImageEncoderViT(
        img_size=size, patch_size=16, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), qkv_bias=True,
        use_rel_pos=True, window_size=14, global_attn_indexes=(1, 3), out_chans=256, **SAM_TINY))


def last_block_map(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official encoder's last block output (before the neck) as (B, C, H, W)."""
    out = {}
    handle = encoder.blocks[-1].register_forward_hook(lambda m, i, o: out.setdefault("map", o))
    with torch.no_grad():
        encoder(x)
    handle.remove()
    return out["map"].permute(0, 3, 1, 2)


def official_sam_checkpoint(encoder: nn.Module) -> dict:
    """A ``sam_vit_*.pth``-shaped dict: the encoder under ``image_encoder.`` plus stand-ins for the
    prompt encoder and the mask decoder."""
    sd = {f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}
    sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128)
    sd["mask_decoder.iou_token.weight"] = torch.randn(1, 256)
    return sd


def sam_ours(size: int) -> nn.Module:
    return create_vit("samvit_base_patch16", global_blocks=(1, 3), img_size=size, pretrain_img_size=size,
                      **SAM_TINY).eval()


@pytest.mark.parametrize("size", [1024, 224])
def test_sam_matches_official_image_encoder(size, one_thread):
    encoder, x = official_sam_encoder(size), image(size)
    ours = sam_ours(size)
    report = load_pretrained(ours, official_sam_checkpoint(encoder))
    assert report.layout == "sam" and report.unexplained == [], report.summary()
    reasons = " | ".join(report.ignored.values())
    assert "SAM's neck" in reasons and "prompt encoder" in reasons and "mask decoder" in reasons
    assert sum("neck" in k for k in report.ignored) == 6
    with torch.no_grad():
        assert rel_err(ours.forward_maps(x)[-1], last_block_map(encoder, x)) < TOL


def test_sam_matches_timm_samvit_at_1024_and_resized_to_448(one_thread):
    """timm's samvit (same weights); at 448 both resize the 64x64 table and the global blocks'
    relative tables on the fly. (timm's LayerNorm eps is 1e-5, SAM's 1e-6: well within TOL.)"""
    src = perturb(timm.create_model("samvit_base_patch16", pretrained=False, global_attn_indexes=(1, 3),
                                    num_classes=0, **SAM_TINY))
    ours = create_vit("samvit_base_patch16", global_blocks=(1, 3), **SAM_TINY).eval()
    report = load_pretrained(ours, src.state_dict())
    assert report.layout == "timm_samvit" and report.unexplained == [], report.summary()
    for size in (1024, 448):
        x = image(size)
        with torch.no_grad():
            ref = src.forward_intermediates(x, indices=1, norm=False, intermediates_only=True)[-1]
            assert rel_err(ours.forward_maps(x)[-1], ref) < TOL


def test_presets_match_timm_shapes():
    """Full-size presets have timm's tensors and shapes (built on the meta device: no memory)."""
    for name in ("vit_base_patch14_reg4_dinov2", "vit_giant_patch14_dinov2", "samvit_huge_patch16"):
        with torch.device("meta"):
            ours = create_vit(name)
            ref = timm.create_model(name, pretrained=False, num_classes=0)
        ref_shapes = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith("neck.")}
        ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
        renamed = {k.replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2"): v
                   for k, v in ref_shapes.items()}
        if "samvit" in name:
            renamed["pos_embed"] = torch.Size([1, 64 * 64, 1280])
        assert ours_shapes == renamed, name
    with torch.device("meta"):
        sam_h = create_vit("samvit_huge_patch16")
    assert sam_h.global_blocks == (7, 15, 23, 31) and sam_h.window_size == 14


def test_feature_stride_16_for_patch_14():
    """A patch-14 ViT under a stride-16 pyramid: the input is resized so that the maps are H/16."""
    vit = create_vit("vit_small_patch14_dinov2", depth=1, feature_stride=16).eval()
    with torch.no_grad():
        maps = vit.forward_maps(torch.randn(1, 3, 256, 192))
    assert maps[-1].shape[-2:] == (16, 12)
