"""Load pretrained ViT checkpoints of every common layout (MAE, DeiT/timm, BEiT, MoCo v3,
ViTDet/Detectron2, MMSeg, and those a glue package registers with :func:`register_layout`)
into :mod:`mae_transfer.models`, safely.

>>> report = load_pretrained(vit, "mae_pretrain_vit_base.pth")
>>> print(report.summary())
"""
from mae_transfer.errors import CheckpointError, UnsafeCheckpointError

from .io import cache_dir, download, read_checkpoint, save_checkpoint
from .layouts import (
    LAYOUTS,
    PYRAMID,
    REST,
    VIT,
    Converted,
    Layout,
    convert_state_dict,
    convert_to_vit,
    detect_layout,
    model_layout,
    register_layout,
    unwrap,
)
from .load import convert_checkpoint, load_pretrained
from .report import LoadReport

# Former names of CheckpointError, kept for code written against them.
CheckpointReadError = CheckpointMismatchError = CheckpointError

__all__ = [
    "load_pretrained", "LoadReport", "read_checkpoint", "detect_layout", "convert_to_vit",
    "convert_state_dict", "convert_checkpoint", "unwrap", "Converted", "LAYOUTS", "download", "cache_dir",
    "save_checkpoint", "Layout", "model_layout", "register_layout", "VIT", "PYRAMID", "REST",
    "CheckpointError", "UnsafeCheckpointError", "CheckpointMismatchError", "CheckpointReadError",
]
