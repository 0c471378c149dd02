"""Architecture overrides for initialisations that are not a ViT-B/16-style encoder (DINOv2, SAM).

``compare --inits dinov2=PATH sam=PATH`` trains every init with the same recipe; a DINOv2 or SAM
checkpoint also needs its own architecture (patch 14 with registers, or SAM's windows and tables).
The checkpoint's layout and width say which preset (``mae_transfer.models.PRESETS``) it is; the
returned config overrides swap in that preset and keep everything else of the recipe.
"""
from __future__ import annotations

from mae_transfer.models import vitdet_global_blocks
from mae_transfer.models.vit import PRESETS

_DINOV2_SIZES = {384: "small", 768: "base", 1024: "large", 1536: "giant"}
_SAM_SIZES = {768: "base", 1024: "large", 1280: "huge"}


def preset_for(layout: str, vit: dict) -> str | None:
    """The preset a converted checkpoint (``layout``, ViT tensors in our names) was made for, or
    None for layouts whose architecture the recipe's config already describes."""
    weight = vit.get("patch_embed.proj.weight")
    if weight is None:
        return None
    width, patch = weight.shape[0], weight.shape[-1]
    if layout in ("dinov2", "timm_dinov2") and patch == 14 and width in _DINOV2_SIZES:
        reg = "_reg4" if "reg_token" in vit else ""
        return f"vit_{_DINOV2_SIZES[width]}_patch14{reg}_dinov2"
    if layout in ("sam", "timm_samvit") and width in _SAM_SIZES:
        return f"samvit_{_SAM_SIZES[width]}_patch16"
    return None


def arch_overrides(preset: str) -> tuple[list[str], list[str]]:
    """``(det_opts, seg_opts)``: Detectron2 ``KEY VALUE`` pairs and MMSeg ``--cfg-options``."""
    args = PRESETS[preset]
    width, depth = args["embed_dim"], args["depth"]
    det = ["MODEL.VIT.NAME", preset, "MODEL.VIT.EMBED_DIM", str(width), "MODEL.VIT.DEPTH", str(depth),
           "MODEL.VIT.NUM_HEADS", str(args["num_heads"]),
           "MODEL.VIT.GLOBAL_BLOCKS", str(tuple(vitdet_global_blocks(depth)))]
    seg = [f"model.backbone.arch={preset}", f"model.neck.in_channels={width}",
           f"model.decode_head.in_channels={[width] * 4}".replace(" ", ""),
           f"model.auxiliary_head.in_channels={width}",
           f"model.backbone.out_indices={tuple(depth // 4 * (i + 1) - 1 for i in range(4))}".replace(" ", "")]
    if args.get("patch_size") == 14:  # stride-16 maps for the pyramids (see configs/*dinov2*)
        det += ["MODEL.VIT.FEATURE_STRIDE", "16"]
        seg += ["model.backbone.feature_stride=16", "model.backbone.rel_pos=None",
                f"model.backbone.layer_scale={args['layer_scale']}"]
    if preset.startswith("samvit"):
        seg += ["model.backbone.use_cls_token=False", "model.backbone.rel_pos=decomposed",
                "model.backbone.layer_scale=None"]
    return det, seg


def overrides_for_checkpoint(path: str) -> tuple[str | None, list[str], list[str]]:
    """Read ``path`` (memory-mapped) and return ``(preset, det_opts, seg_opts)``; no overrides for
    checkpoints of the classic ViT layouts, or files that cannot be read here (the training run
    then reports the problem itself)."""
    from mae_transfer.checkpoints import convert_checkpoint, read_checkpoint

    try:
        converted = convert_checkpoint(read_checkpoint(path))
    except (ValueError, OSError):
        return None, [], []
    preset = preset_for(converted.layout, converted.vit)
    return (preset, *arch_overrides(preset)) if preset else (None, [], [])
