"""Small models with the parameter layout of a Detectron2 detector and an MMSeg segmentor.

Widths are tiny (names and depths are what the optimizer rules look at); the ViT is timm's.
"""
from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def tiny_vit(depth: int = 12, drop_path: float = 0.0, num_classes: int = 0, **kwargs) -> VisionTransformer:
    """timm ViT with the real depth and a tiny width, on 32x32 inputs (4 patches of 8x8)."""
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=depth, num_heads=2,
                             num_classes=num_classes, drop_path_rate=drop_path, **kwargs)


class _Pyramid(nn.Module):
    """Stand-in for a pyramid/neck: a linear layer and a BatchNorm (whose statistics must freeze)."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class ToyDetector(nn.Module):
    """Detectron2 layout: ``backbone.net`` is the ViT, the rest of ``backbone`` is the pyramid."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.net = vit
        self.backbone.simfp = _Pyramid()
        self.roi_heads = nn.Linear(16, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.net.forward_features(images)  # (B, 1 + N, C)
        return self.roi_heads(self.backbone.simfp(tokens[:, 1:].mean(1)))


class ToySegmentor(nn.Module):
    """MMSeg layout: ``backbone`` is the ViT, ``neck`` the pyramid, ``decode_head`` the head."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.backbone = vit
        self.neck = _Pyramid()
        self.decode_head = nn.Linear(16, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_features(images)
        return self.decode_head(self.neck(tokens[:, 1:].mean(1)))
