"""Our ViT against independent implementations: timm VisionTransformer / Beit, Detectron2's ViTDet.

The reference models are randomly initialised by their own libraries, then every floating-point
parameter is perturbed (so zero-initialised tables, biases and layer scales are exercised), and
their state dicts are loaded *strictly* into ours. Depth is reduced (2 blocks): each block is
compared as a whole, so equality at depth 2 covers the rest. Width is ViT-B's except for the
Detectron2 cases at 1024 (see there).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

from mae_transfer.models import create_vit

timm = pytest.importorskip("timm")

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb_(module: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Add noise to every floating parameter (zero-init tables/biases become non-trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return module.eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_matches_timm_vit():
    """timm vit_base_patch16_224 (2 blocks): forward_features equal at 224.

    (At other sizes timm resamples pos_embed with antialiased bicubic, Detectron2 and MMSeg with
    plain bicubic; we follow the latter, tested against Detectron2 below.)
    """
    ref = perturb_(timm.create_model("vit_base_patch16_224", depth=2, num_classes=0))
    ours = create_vit("vit_base_patch16", depth=2).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _max_diff(ours.forward_features(x), ref.forward_features(x)) < ATOL


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_matches_timm_beit(global_pool):
    """timm beit_base_patch16_224 (2 blocks): q/v bias, layer scale, per-block relative bias.

    With ``global_pool="avg"`` timm's final ``norm`` is an Identity (its norm moves to ``fc_norm``,
    applied after pooling), which our ``final_norm=False`` reproduces.
    """
    ref = perturb_(timm.create_model("beit_base_patch16_224", depth=2, num_classes=0,
                                     global_pool=global_pool))  # fmt: skip
    ours = create_vit("beit_base_patch16", depth=2, final_norm=global_pool == "token").eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc_norm.")}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _max_diff(ours.forward_features(x), ref.forward_features(x)) < ATOL


def test_matches_timm_beit_shared_rel_pos_bias():
    """One relative position table for all blocks: timm Beit(use_shared_rel_pos_bias=True)."""
    from timm.models.beit import Beit

    ref = perturb_(Beit(depth=2, num_classes=0, global_pool="token", use_abs_pos_emb=True,
                        use_shared_rel_pos_bias=True, init_values=0.1))  # fmt: skip
    ours = create_vit("beit_base_patch16", depth=2, rel_pos="beit_shared", use_abs_pos=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert "rel_pos_bias.relative_position_bias_table" in ours.state_dict()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert _max_diff(ours.forward_features(x), ref.forward_features(x)) < ATOL


# -- Detectron2 ViTDet ---------------------------------------------------------------------------


@pytest.mark.parametrize("img", [(1024, 1024), (800, 1216)])
def test_matches_detectron2_vitdet(img):
    """Window 14 + global block, decomposed rel-pos (perturbed), abs pos with cls slot.

    Block 0 is a window block, block 1 global. 1024: 64x64 grid padded to 70x70 windows;
    800x1216: 50x76 grid (padded to 56x84), global tables (127 rows) resized on the fly to 99/151.
    Width 256 with 4 heads keeps ViT-B's head dim (64, the size of the rel-pos tables) while
    cutting Detectron2's 1024-pixel global attention (materialised 4096x4096 per head) 3x.
    """
    d2vit = pytest.importorskip("detectron2.modeling.backbone.vit")
    ref = d2vit.ViT(img_size=1024, depth=2, embed_dim=256, num_heads=4, drop_path_rate=0.0,
                    norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), window_size=14,
                    window_block_indexes=(0,), use_rel_pos=True, pretrain_img_size=224,
                    pretrain_use_cls_token=True)  # fmt: skip
    perturb_(ref)
    ours = create_vit("vit_base_patch16", depth=2, embed_dim=256, num_heads=4, img_size=1024,
                      window_size=14,
                      global_blocks=(1,), rel_pos="decomposed", use_cls_token=False,
                      final_norm=False).eval()  # fmt: skip
    state = ref.state_dict()
    assert state["pos_embed"].shape == (1, 197, 256)
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, *img)
    with torch.no_grad():
        expected = ref(x)["last_feat"]
        (got,) = ours.forward_maps(x)
    assert _max_diff(got, expected) < ATOL


# -- MMSegmentation MAE backbone -----------------------------------------------------------------


@pytest.mark.parametrize("img_size", [224, 512])
def test_matches_mmseg_mae(img_size):
    """MMSeg ``MAE`` (BEiT-style: abs pos with cls, per-block relative bias, layer scale) equals
    ours at its two feature outputs; its checkpoint goes through our converter (mmseg names)."""
    pytest.importorskip("mmseg")
    from mmseg.models.backbones import MAE

    import mae_transfer.compat.mmcv_ops  # noqa: F401  (before mmseg.models)
    from mae_transfer.checkpoints import convert_to_vit

    ref = MAE(img_size=img_size, num_layers=2, out_indices=(0, 1), init_values=0.1,
              norm_cfg=dict(type="LN", eps=1e-6))  # fmt: skip
    ref.init_weights()
    perturb_(ref)
    checkpoint = {"state_dict": {f"backbone.{k}": v for k, v in ref.state_dict().items()}}
    ours = create_vit("vit_base_patch16", depth=2, img_size=img_size, pretrain_img_size=img_size,
                      rel_pos="beit", layer_scale=0.1, out_indices=(0, 1)).eval()  # fmt: skip
    ours.load_state_dict(convert_to_vit(checkpoint), strict=False)
    missing = set(ours.state_dict()) - set(convert_to_vit(checkpoint))
    assert missing == {"norm.weight", "norm.bias"}  # MMSeg MAE has no final norm by default
    x = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        expected = ref(x)
        got = ours.forward_maps(x)
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected):
        assert _max_diff(g, e) < ATOL


# -- presets -------------------------------------------------------------------------------------

TIMM_NAMES = {
    "vit_tiny_patch16": "vit_tiny_patch16_224",
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_large_patch16": "vit_large_patch16_224",
    "vit_huge_patch14": "vit_huge_patch14_224",
    "beit_base_patch16": "beit_base_patch16_224",
    "beit_large_patch16": "beit_large_patch16_224",
}


@pytest.mark.parametrize("preset", sorted(TIMM_NAMES))
def test_preset_has_timm_state_dict_layout(preset):
    """Full-size presets have exactly timm's keys and shapes (head-less, token pooling), so
    official weights load strictly. Built on the meta device: shapes only, no memory or init."""
    with torch.device("meta"):
        ref = timm.create_model(TIMM_NAMES[preset], num_classes=0, global_pool="token")
        ours = create_vit(preset)
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
