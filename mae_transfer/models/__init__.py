"""Framework-free ViT encoder, pyramid adapters and position-table helpers."""

from .pyramid import MultiLevelPyramid, SimplePyramid
from .vit import PRESETS, VisionTransformer, create_vit, vitdet_global_blocks

__all__ = [
    "PRESETS",
    "VisionTransformer",
    "create_vit",
    "vitdet_global_blocks",
    "SimplePyramid",
    "MultiLevelPyramid",
]
