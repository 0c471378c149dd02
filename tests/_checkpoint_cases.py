"""Checkpoints in every official key layout, built from randomly initialised models of the real
libraries (timm, Detectron2, MMSeg), with perturbed weights so zero-initialised tables are tested.

Each case returns the checkpoint object (as the upstream project saves it), a factory for the
target model of this project, and the source library's own output to compare against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import timm
import torch
from torch import nn

import mae_transfer.compat.mmcv_ops  # noqa: F401  (before mmseg.models)
from mae_transfer.models import SimplePyramid, create_vit

EMBED, HEADS, DEPTH = 192, 3, 2
IMG = 112  # 7x7 patch grid keeps the forward passes cheap
TINY = dict(embed_dim=EMBED, depth=DEPTH, num_heads=HEADS)


def vit(name: str = "vit_tiny_patch16", **kw) -> nn.Module:
    """Our ViT at the test geometry (depth 2, 112x112 input, pos_embed for a 7x7 grid)."""
    size = dict(img_size=IMG, pretrain_img_size=IMG)
    return create_vit(name, **{**(TINY if name.startswith("beit") else dict(depth=DEPTH)), **size, **kw})


@dataclass
class Case:
    checkpoint: dict
    make_model: Callable[[], nn.Module]
    layout: str
    ignored: tuple = ()  # substrings that must appear among the ignored reasons
    reference: Optional[torch.Tensor] = None  # source library's output on `x`
    ours: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None
    x: Optional[torch.Tensor] = None


def perturb(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random offsets on every parameter (zero-initialised tables become non-zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    module.eval()  # (MMSeg's train() returns None)
    return module


def image(size=IMG, seed=1) -> torch.Tensor:
    sizes = (size, size) if isinstance(size, int) else size
    return torch.randn(1, 3, *sizes, generator=torch.Generator().manual_seed(seed))


def tokens(model, x):
    return model.forward_features(x)


def token_map(model, x):
    """forward_features without the cls token, as (B, C, H, W) (MMSeg's backbone output)."""
    t = model.forward_features(x)[:, model.num_prefix_tokens:]
    h, w = x.shape[2] // 16, x.shape[3] // 16
    return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)


@torch.no_grad()
def timm_vit(model_name="vit_tiny_patch16_224", seed=0, img_size=IMG, **kw) -> nn.Module:
    model = timm.create_model(model_name, pretrained=False, depth=DEPTH, num_classes=5, img_size=img_size, **kw)
    return perturb(model, seed)


def mae_decoder_keys(embed: int = EMBED, dec: int = 64, depth: int = 1, patch: int = 16) -> dict:
    """Decoder tensors named as in the official MAE ``models_mae.py``."""
    blocks = nn.ModuleList(timm.models.vision_transformer.Block(dec, 2, 4.0, qkv_bias=True) for _ in range(depth))
    parts = {"decoder_embed": nn.Linear(embed, dec), "decoder_blocks": blocks,
             "decoder_norm": nn.LayerNorm(dec), "decoder_pred": nn.Linear(dec, patch * patch * 3)}
    out = {f"{name}.{k}": v for name, m in parts.items() for k, v in m.state_dict().items()}
    out["mask_token"] = torch.zeros(1, 1, dec)
    out["decoder_pos_embed"] = torch.zeros(1, 1 + (IMG // patch) ** 2, dec)
    return out


# ----------------------------------------------------------------------------------------------
# timm / DeiT / MAE / MoCo v3

@torch.no_grad()
def case_timm_vit() -> Case:
    src, x = timm_vit(), image()
    return Case(src.state_dict(), vit, "timm_vit",
                ("classification",), src.forward_features(x), tokens, x)


@torch.no_grad()
def case_timm_vit_ddp() -> Case:
    src, x = timm_vit(), image()
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    return Case({"model": sd, "epoch": 1}, vit, "timm_vit_ddp", ("classification",), src.forward_features(x),
                tokens, x)


@torch.no_grad()
def case_deit3() -> Case:
    """DeiT III: LayerScale as ls1/ls2.gamma, pos_embed without a cls entry."""
    src = perturb(timm.create_model("deit3_small_patch16_224", pretrained=False, depth=DEPTH, img_size=IMG))
    x = image()
    return Case({"model": src.state_dict()}, lambda: vit("vit_small_patch16", layer_scale=1e-5), "timm_vit",
                ("classification",), src.forward_features(x), tokens, x)


@torch.no_grad()
def case_deit_distilled() -> Case:
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, depth=DEPTH, img_size=IMG)
    return Case({"model": perturb(model).state_dict()}, vit, "timm_vit", ("distillation token", "classification"))


@torch.no_grad()
def case_mae() -> Case:
    src, x = timm_vit(), image()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("head")}
    return Case({"model": sd}, vit, "mae", (),
                src.forward_features(x), tokens, x)


@torch.no_grad()
def case_mae_pretrain() -> Case:
    src, x = timm_vit(), image()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("head")}
    sd.update(mae_decoder_keys())
    return Case({"model": sd}, vit, "mae_pretrain",
                ("MAE decoder", "mask token"), src.forward_features(x), tokens, x)


@torch.no_grad()
def case_moco_v3() -> Case:
    base, momentum, x = timm_vit(seed=0), timm_vit(seed=1), image()
    projector = nn.Sequential(nn.Linear(EMBED, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
    predictor = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
    sd = {}
    for prefix, enc in (("module.base_encoder.", base), ("module.momentum_encoder.", momentum)):
        sd.update({prefix + k: v for k, v in enc.state_dict().items() if not k.startswith("head")})
        sd.update({prefix + "head." + k: v for k, v in projector.state_dict().items()})
    sd.update({"module.predictor." + k: v for k, v in predictor.state_dict().items()})
    ckpt = {"epoch": 300, "arch": "vit_base", "state_dict": sd}
    return Case(ckpt, vit, "moco_v3",
                ("momentum encoder", "predictor", "projection head"), base.forward_features(x), tokens, x)


# ----------------------------------------------------------------------------------------------
# BEiT (unilm pretraining names with a shared table, and timm per-block tables)

def timm_beit(shared: bool, global_pool: str, seed=0) -> nn.Module:
    model = timm.create_model("beit_base_patch16_224", pretrained=False, num_classes=5, global_pool=global_pool,
                              img_size=IMG,
                              use_shared_rel_pos_bias=shared, use_rel_pos_bias=not shared, **TINY)
    return perturb(model, seed)


@torch.no_grad()
def case_beit_unilm_shared() -> Case:
    src, x = timm_beit(shared=True, global_pool="token"), image()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("head")}
    sd["rel_pos_bias.relative_position_index"] = torch.zeros(50, 50, dtype=torch.long)
    sd["mask_token"] = torch.zeros(1, 1, EMBED)
    sd["lm_head.weight"], sd["lm_head.bias"] = torch.zeros(8192, EMBED), torch.zeros(8192)
    return Case({"model": sd}, lambda: vit("beit_base_patch16"), "beit",
                ("BEiT pretraining head", "mask token", "index buffer"), src.forward_features(x), tokens, x)


@torch.no_grad()
def case_beit_timm() -> Case:
    src, x = timm_beit(shared=False, global_pool="avg"), image()
    return Case(src.state_dict(), lambda: vit("beit_base_patch16", final_norm=False), "beit",
                ("mean-pooling", "classification"), src.forward_features(x), tokens, x)


# ----------------------------------------------------------------------------------------------
# Detectron2 ViTDet (backbone.net.* + backbone.simfp_*) and this project's own det checkpoint

VITDET_SIZE, VITDET_WINDOW = 128, 4


def d2_vitdet(seed=0, img_size=VITDET_SIZE):
    from detectron2.modeling import SimpleFeaturePyramid, ViT

    net = ViT(img_size=img_size, patch_size=16, window_size=VITDET_WINDOW, window_block_indexes=(0,),
              use_rel_pos=True, out_feature="last_feat", **TINY)
    sfp = SimpleFeaturePyramid(net, in_feature="last_feat", out_channels=32, scale_factors=(4.0, 2.0, 1.0, 0.5),
                               norm="LN", square_pad=img_size)
    return perturb(sfp, seed)


class VitWithPyramid(nn.Module):
    def __init__(self, net, pyramid):
        super().__init__()
        self.net, self.pyramid = net, pyramid

    def forward(self, x):
        return self.pyramid(self.net.forward_maps(x))


def our_vitdet(img_size=VITDET_SIZE) -> VitWithPyramid:
    net = create_vit("vit_tiny_patch16", depth=DEPTH, img_size=img_size, window_size=VITDET_WINDOW,
                     global_blocks=(1,), rel_pos="decomposed", use_cls_token=False)
    return VitWithPyramid(net, SimplePyramid(in_channels=EMBED, out_channels=32, norm="LN"))


def pyramid_stack(maps) -> torch.Tensor:
    return torch.cat([m.flatten() for m in (maps.values() if isinstance(maps, dict) else maps)])


@torch.no_grad()
def case_vitdet() -> Case:
    sfp, x = d2_vitdet(), image(VITDET_SIZE)
    sd = {"backbone." + k: v for k, v in sfp.state_dict().items()}
    sd["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(81, 64)
    sd["proposal_generator.rpn_head.conv.weight"] = torch.zeros(32, 32, 3, 3)
    ref = torch.cat([sfp.net(x)["last_feat"].flatten(), pyramid_stack(sfp(x))])
    return Case({"model": sd, "iteration": 100, "__author__": "test"}, our_vitdet, "vitdet",
                ("Detectron2 detector parts", "metadata"), ref,
                lambda m, x: torch.cat([m.net.forward_maps(x)[-1].flatten(), pyramid_stack(m(x))]), x)


class OurMultiLevelDetector(nn.Module):
    """Parameter names of mae_transfer's MAE-paper detector: backbone.bottom_up.{net,pyramid}, FPN."""

    def __init__(self):
        from mae_transfer.models import MultiLevelPyramid

        super().__init__()
        self.backbone = nn.Module()
        self.backbone.bottom_up = VitWithPyramid(vit(depth=4, out_indices=(0, 1, 2, 3)),
                                                 MultiLevelPyramid(in_channels=EMBED, norm="LN"))
        self.backbone.fpn_lateral2 = nn.Conv2d(EMBED, 32, 1)
        self.roi_heads = nn.Linear(32, 4)

    def forward(self, x):
        return pyramid_stack(self.backbone.bottom_up(x))


@torch.no_grad()
def case_mae_transfer_det() -> Case:
    import mae_transfer.det  # noqa: F401  (registers the "mae_transfer_det" layout)

    src, x = perturb(OurMultiLevelDetector()), image()
    ckpt = {"model": src.state_dict(), "optimizer": {"state": {}}, "iteration": 7}
    return Case(ckpt, OurMultiLevelDetector, "mae_transfer_det", ("metadata",), src(x), lambda m, x: m(x), x)


# ----------------------------------------------------------------------------------------------
# MMSeg backbones (mmseg names) and this project's own seg checkpoint

def _mmseg_ckpt(backbone: nn.Module, prefix: str = "backbone.") -> dict:
    sd = {prefix + k: v for k, v in backbone.state_dict().items()}
    if prefix:
        sd["decode_head.conv_seg.weight"] = torch.zeros(4, 32, 1, 1)
        return {"meta": {"mmseg_version": "1.2.2"}, "state_dict": sd}
    return sd


@torch.no_grad()
def case_mmseg(kind: str, prefix: str = "backbone.") -> Case:
    from mmseg.models.backbones import MAE, BEiT, VisionTransformer

    common = dict(img_size=IMG, patch_size=16, embed_dims=EMBED, num_layers=DEPTH, num_heads=HEADS,
                  final_norm=True)
    if kind == "vit":
        src = VisionTransformer(with_cls_token=True, **common)
        ours = lambda: vit(norm_eps=1e-5)  # noqa: E731
    elif kind == "mae":
        src = MAE(init_values=0.1, **common)
        ours = lambda: vit(rel_pos="beit", layer_scale=0.1, norm_eps=1e-5)  # noqa: E731
    else:
        src = BEiT(init_values=0.1, qv_bias=True, **common)
        ours = lambda: vit("beit_base_patch16", norm_eps=1e-5)  # noqa: E731
    src, x = perturb(src), image()
    ignored = ("MMSeg decode",) if prefix else ()
    if kind != "vit":
        ignored += ("index buffer",)
    return Case(_mmseg_ckpt(src, prefix), ours, f"mmseg_{kind}", ignored, src(x)[0], token_map, x)


@torch.no_grad()
def case_mae_transfer_seg() -> Case:
    import mae_transfer.seg  # noqa: F401  (registers the "mae_transfer_seg" layout)
    from mae_transfer.models import MultiLevelPyramid

    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.net = vit(depth=4, out_indices=(0, 1, 2, 3))
            self.neck = nn.Module()
            self.neck.pyramid = MultiLevelPyramid(in_channels=EMBED, norm="LN")
            self.decode_head = nn.Conv2d(EMBED, 4, 1)

        def forward(self, x):
            return pyramid_stack(self.neck.pyramid(self.backbone.net.forward_maps(x)))

    src, x = perturb(Seg()), image()
    ckpt = {"meta": {"iter": 10}, "state_dict": src.state_dict(), "message_hub": {"log_scalars": {}}}
    return Case(ckpt, Seg, "mae_transfer_seg", (), src(x), lambda m, x: m(x), x)


CASES: dict[str, Callable[[], Case]] = {
    "timm_vit": case_timm_vit,
    "timm_vit_ddp": case_timm_vit_ddp,
    "deit3": case_deit3,
    "deit_distilled": case_deit_distilled,
    "mae": case_mae,
    "mae_pretrain": case_mae_pretrain,
    "moco_v3": case_moco_v3,
    "beit_unilm_shared": case_beit_unilm_shared,
    "beit_timm": case_beit_timm,
    "vitdet": case_vitdet,
    "mae_transfer_det": case_mae_transfer_det,
    "mmseg_vit": lambda: case_mmseg("vit"),
    "mmseg_vit_bare": lambda: case_mmseg("vit", prefix=""),
    "mmseg_mae": lambda: case_mmseg("mae"),
    "mmseg_beit": lambda: case_mmseg("beit"),
    "mae_transfer_seg": case_mae_transfer_seg,
}


def flat_state_dict(checkpoint: dict) -> dict:
    """The tensors of a checkpoint object (what a .safetensors file of it holds)."""
    from mae_transfer.checkpoints import unwrap

    return {k: v.contiguous().clone() for k, v in unwrap(checkpoint)[0].items()}
