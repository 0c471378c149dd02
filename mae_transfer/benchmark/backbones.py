"""Backbones under comparison, built with identical settings from one small spec.

A spec is a plain dict (it crosses process boundaries)::

    {"impl": "ours", "layout": "window", "img": 1024, "arch": "base", "grad_ckpt": False}

``impl`` is one of :data:`IMPLS`; ``layout`` is ``"global"`` (classic ViT, cls token) or
``"window"`` (ViTDet: window 14, global blocks 2/5/8/11, decomposed relative position, absolute
position embedding from a 224 pre-training grid); ``arch`` is ``"base"`` (ViT-B/16) or ``"tiny"``
(a 4-block toy for ``--quick``). Third-party implementations are imported lazily, so a missing
library only skips its rows (:class:`Unavailable`).
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn

__all__ = ["IMPLS", "ARCHS", "Unavailable", "build_backbone", "describe"]

# (embed_dim, depth, heads, window, global blocks)
ARCHS: Dict[str, Tuple[int, int, int, int, Tuple[int, ...]]] = {
    "base": (768, 12, 12, 14, (2, 5, 8, 11)),
    "tiny": (64, 4, 2, 4, (1, 3)),
}

IMPLS = ("ours", "timm", "d2", "timm_sam", "mmseg_mae", "ours_mae")

LABELS = {
    "ours": "ours",
    "timm": "timm VisionTransformer",
    "d2": "Detectron2 ViT (ViTDet)",
    "timm_sam": "timm VisionTransformerSAM",
    "mmseg_mae": "MMSeg MAE",
    "ours_mae": "ours (MMSeg-MAE layout)",
}


class Unavailable(RuntimeError):
    """The implementation cannot be built here (library missing or layout not supported)."""


def describe(spec: Dict) -> str:
    """Short label of a spec, e.g. ``"ours window 1024 ckpt"``."""
    extra = " ckpt" if spec.get("grad_ckpt") else ""
    return f"{spec['impl']} {spec['layout']} {spec['img']}{extra}"


def _ours(spec: Dict) -> nn.Module:
    from mae_transfer.models import create_vit

    dim, depth, heads, window, global_blocks = ARCHS[spec["arch"]]
    kwargs = dict(
        embed_dim=dim, depth=depth, num_heads=heads, img_size=spec["img"],
        grad_checkpointing=bool(spec.get("grad_ckpt")), final_norm=False,
    )  # fmt: skip
    if spec["impl"] == "ours_mae":  # MMSeg MAE: layer scale 0.1, cls token, global attention
        kwargs.update(layer_scale=0.1, use_cls_token=True, pretrain_img_size=spec["img"])
    elif spec["layout"] == "window":
        kwargs.update(
            window_size=window, global_blocks=global_blocks, rel_pos="decomposed",
            use_cls_token=False,
        )  # fmt: skip
    else:
        kwargs.update(use_cls_token=True, pretrain_img_size=spec["img"])
    return create_vit("vit_base_patch16", **kwargs)


def _timm(spec: Dict) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    if spec["layout"] != "global":
        raise Unavailable("timm VisionTransformer has no window attention (see timm_sam)")
    dim, depth, heads, _, _ = ARCHS[spec["arch"]]
    return VisionTransformer(
        img_size=spec["img"], embed_dim=dim, depth=depth, num_heads=heads, num_classes=0,
        dynamic_img_size=True,
    )  # fmt: skip


def _timm_sam(spec: Dict) -> nn.Module:
    from timm.models.vision_transformer_sam import VisionTransformerSAM

    if spec["layout"] != "window":
        raise Unavailable("timm SAM ViT compared in the window layout only")
    dim, depth, heads, window, global_blocks = ARCHS[spec["arch"]]
    return VisionTransformerSAM(
        img_size=spec["img"], embed_dim=dim, depth=depth, num_heads=heads, num_classes=0,
        window_size=window, global_attn_indexes=global_blocks, use_rel_pos=True,
        use_abs_pos=True, neck_chans=0,
    )  # fmt: skip


def _d2(spec: Dict) -> nn.Module:
    try:
        from detectron2.modeling import ViT
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise Unavailable(f"detectron2 not importable: {e}") from e
    dim, depth, heads, window, global_blocks = ARCHS[spec["arch"]]
    layout = {}
    if spec["layout"] == "window":
        layout = dict(
            window_size=window, use_rel_pos=True,
            window_block_indexes=[i for i in range(depth) if i not in global_blocks],
        )  # fmt: skip
    else:
        raise Unavailable("Detectron2 ViT compared in the window layout only")
    return ViT(
        img_size=spec["img"], embed_dim=dim, depth=depth, num_heads=heads,
        use_act_checkpoint=bool(spec.get("grad_ckpt")), **layout,
    )  # fmt: skip


def _mmseg_mae(spec: Dict) -> nn.Module:
    try:
        from mmseg.models.backbones import MAE

        import mae_transfer.compat.mmcv_ops  # noqa: F401  (before mmseg.models)
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise Unavailable(f"mmseg not importable: {e}") from e
    if spec["layout"] != "global":
        raise Unavailable("MMSeg MAE backbone has global attention only")
    dim, depth, heads, _, _ = ARCHS[spec["arch"]]
    return MAE(
        img_size=spec["img"], embed_dims=dim, num_layers=depth, num_heads=heads,
        out_indices=(depth - 1,), init_values=0.1,
    )  # fmt: skip


_BUILDERS: Dict[str, Callable[[Dict], nn.Module]] = {
    "ours": _ours,
    "ours_mae": _ours,
    "timm": _timm,
    "timm_sam": _timm_sam,
    "d2": _d2,
    "mmseg_mae": _mmseg_mae,
}


def _forward_fn(impl: str, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The call that yields the backbone's last feature map / tokens (no classifier head)."""
    if impl in ("ours", "ours_mae"):
        return lambda x: model.forward_maps(x)[-1]
    if impl in ("timm", "timm_sam"):
        return model.forward_features
    if impl == "d2":
        return lambda x: model(x)["last_feat"]
    return lambda x: model(x)[-1]  # mmseg: tuple of maps


def build_backbone(spec: Dict) -> Tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """Build ``spec``'s backbone; returns the module and its feature call ``x -> Tensor``.

    Raises:
        Unavailable: library missing or layout not supported by that implementation.
    """
    impl = spec["impl"]
    if impl not in _BUILDERS:
        raise ValueError(f"Unknown backbone implementation {impl!r}; choose from {IMPLS}.")
    if spec.get("grad_ckpt") and impl not in ("ours", "d2"):
        raise Unavailable(f"{impl}: gradient checkpointing not benchmarked")
    model = _BUILDERS[impl](spec)
    if spec.get("grad_ckpt") and impl == "timm":
        model.set_grad_checkpointing(True)
    return model, _forward_fn(impl, model)
