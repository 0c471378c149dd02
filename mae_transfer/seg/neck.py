"""The MAE/BEiT multi-level pyramid as an MMSegmentation neck (registered as ``MAETransferPyramid``)."""
from __future__ import annotations

from typing import Sequence

import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from mae_transfer.models import MultiLevelPyramid


@MODELS.register_module()
class MAETransferPyramid(BaseModule):
    """Wraps :class:`mae_transfer.models.MultiLevelPyramid` (maps at stride 16 -> strides 4/8/16/32).

    Args:
        in_channels: channels of each backbone map (the ViT width); kept by every output.
        scale_factors: resampling of the 4 maps: 4 (two 2x deconvs), 2, 1 (identity), 0.5 (max pool).
        norm: "SyncBN" (the recipe, multi-GPU), "BN" or "LN". The trainer turns "SyncBN" into "BN"
            where SyncBN cannot run (CPU, single process): see ``mae_transfer.seg.runner``.
    """

    def __init__(self, in_channels: int = 768, scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 norm: str = "SyncBN", init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.pyramid = MultiLevelPyramid(in_channels=in_channels, scale_factors=tuple(scale_factors),
                                         norm=norm)

    def forward(self, maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """4 maps (B, C, H/16, W/16) -> 4 maps (B, C, H/s, W/s), s = 4, 8, 16, 32."""
        return tuple(self.pyramid(list(maps)))
