"""Adapters from a plain ViT's stride-16 maps to a feature pyramid (strides 4, 8, 16, 32).

``SimplePyramid`` (ViTDet's SimpleFeaturePyramid) builds every level from the last map;
``MultiLevelPyramid`` (MAE paper / BEiT segmentation) resamples the outputs of 4 blocks.

Checkpoint key mapping (for :mod:`mae_transfer.checkpoints`):

- Detectron2 ViTDet: ``backbone.simfp_{2,3,4,5}.*`` -> ``simfp_{2,3,4,5}.*`` (strip ``backbone.``;
  the submodule indices are Detectron2's: ``simfp_2.{0,1,3}`` deconv/LN/deconv, ``simfp_2.{4,5}``
  1x1 / 3x3 conv each with ``.norm``; ``simfp_3.0`` deconv, ``simfp_3.{1,2}`` convs;
  ``simfp_4.{0,1}`` convs; ``simfp_5.{1,2}`` convs after the max-pool ``simfp_5.0``).
- BEiT / MAE official segmentation (unilm): ``backbone.fpn{1,2,3,4}.*`` -> ``fpn{1,2,3,4}.*``.
- MMSeg ``Feature2Pyramid`` neck: ``neck.upsample_4x.*`` -> ``fpn1.*``,
  ``neck.upsample_2x.*`` -> ``fpn2.*`` (same indices; identity and max-pool have no weights).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["LayerNorm2d", "ConvNorm", "build_norm", "SimplePyramid", "MultiLevelPyramid"]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of ``(B, C, H, W)`` maps (``weight``/``bias`` of shape ``(C,)``)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def build_norm(norm: str, channels: int) -> Optional[nn.Module]:
    """``"LN"`` (channels-first LayerNorm, eps 1e-6), ``"BN"``, ``"SyncBN"`` or ``""`` (none)."""
    if norm == "":
        return None
    if norm == "LN":
        return LayerNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels)
    raise ValueError(f"norm must be 'LN', 'BN', 'SyncBN' or '', got {norm!r}.")


class ConvNorm(nn.Conv2d):
    """``Conv2d`` followed by an optional ``norm`` submodule (keys ``weight``, ``norm.*``)."""

    def __init__(self, *args, norm: Optional[nn.Module] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


def _resample_layers(scale: float, dim: int, norm: str) -> List[nn.Module]:
    """Layers taking ``dim`` channels at stride ``s`` to stride ``s / scale``."""
    if scale == 4.0:
        mid = build_norm(norm, dim // 2)
        return [
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            mid if mid is not None else nn.Identity(),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        ]
    if scale == 2.0:
        return [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
    if scale == 1.0:
        return []
    if scale == 0.5:
        return [nn.MaxPool2d(kernel_size=2, stride=2)]
    raise ValueError(f"scale factor {scale} is not supported; use 4.0, 2.0, 1.0 or 0.5.")


def _same_width_resample(scale: float, dim: int, norm: str) -> nn.Module:
    """BEiT ``fpn1..4`` modules: resample by ``scale`` keeping ``dim`` channels."""
    if scale == 4.0:
        mid = build_norm(norm, dim)
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
            mid if mid is not None else nn.Identity(),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
        )
    if scale == 2.0:
        return nn.Sequential(nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2))
    if scale == 1.0:
        return nn.Identity()
    if scale == 0.5:
        return nn.MaxPool2d(kernel_size=2, stride=2)
    raise ValueError(f"scale factor {scale} is not supported; use 4.0, 2.0, 1.0 or 0.5.")


def _strides(in_stride: int, scale_factors: Sequence[float]) -> tuple:
    return tuple(int(in_stride / s) for s in scale_factors)


class SimplePyramid(nn.Module):
    """ViTDet simple feature pyramid: every level from the last stride-16 map."""

    def __init__(
        self,
        in_channels: int = 768,
        out_channels: int = 256,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        norm: str = "LN",
        in_stride: int = 16,
    ):
        """
        Args:
            in_channels: channels of the ViT map.
            out_channels: channels of every pyramid level.
            scale_factors: resampling per level: 4 (deconv, norm, GELU, deconv), 2 (deconv),
                1 (identity), 0.5 (max-pool); each followed by a 1x1 and a 3x3 conv with ``norm``
                (convs have a bias only when ``norm == ""``).
            norm: ``"LN"``, ``"BN"``, ``"SyncBN"`` or ``""``.
            in_stride: stride of the input map (the ViT patch size).
        """
        super().__init__()
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.strides = _strides(in_stride, self.scale_factors)
        self.out_channels = out_channels
        self.out_features = tuple(f"p{int(math.log2(s))}" for s in self.strides)
        use_bias = norm == ""
        self.stage_names = []
        for scale, stride in zip(self.scale_factors, self.strides):
            layers = _resample_layers(scale, in_channels, norm)
            dim = {4.0: in_channels // 4, 2.0: in_channels // 2}.get(scale, in_channels)
            layers += [
                ConvNorm(dim, out_channels, 1, bias=use_bias, norm=build_norm(norm, out_channels)),
                ConvNorm(
                    out_channels, out_channels, 3, padding=1, bias=use_bias,
                    norm=build_norm(norm, out_channels),
                ),
            ]  # fmt: skip
            name = f"simfp_{int(math.log2(stride))}"
            self.add_module(name, nn.Sequential(*layers))
            self.stage_names.append(name)

    def forward(self, maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """``maps[-1]`` ``(B, C_in, H/16, W/16)`` -> one ``(B, C_out, H/s, W/s)`` per stride."""
        x = maps[-1]
        return [getattr(self, name)(x) for name in self.stage_names]


class MultiLevelPyramid(nn.Module):
    """MAE / BEiT segmentation pyramid: map ``i`` (from block subset ``i``) resampled by
    ``scale_factors[i]``; channels unchanged."""

    def __init__(
        self,
        in_channels: int = 768,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        norm: str = "BN",
        in_stride: int = 16,
    ):
        """
        Args:
            in_channels: channels of each ViT map (kept at every level).
            scale_factors: per input map: 4 (deconv, norm, GELU, deconv), 2 (deconv),
                1 (identity), 0.5 (max-pool).
            norm: norm between the two deconvs: ``"BN"``, ``"SyncBN"``, ``"LN"`` or ``""``.
            in_stride: stride of the input maps.
        """
        super().__init__()
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.strides = _strides(in_stride, self.scale_factors)
        self.out_channels = in_channels
        for i, scale in enumerate(self.scale_factors):
            self.add_module(f"fpn{i + 1}", _same_width_resample(scale, in_channels, norm))

    def forward(self, maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """``len(scale_factors)`` maps ``(B, C, H/16, W/16)`` -> ``(B, C, H/s, W/s)`` each."""
        if len(maps) != len(self.scale_factors):
            raise ValueError(
                f"MultiLevelPyramid expects {len(self.scale_factors)} maps (one per scale factor), "
                f"got {len(maps)}; set the ViT's out_indices to {len(self.scale_factors)} blocks."
            )
        return [getattr(self, f"fpn{i + 1}")(x) for i, x in enumerate(maps)]
