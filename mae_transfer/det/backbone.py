"""Plain-ViT backbones for Detectron2, registered in ``BACKBONE_REGISTRY``.

* ``build_vit_simple_pyramid_backbone`` (ViTDet): the last ViT feature map -> SimplePyramid
  -> p2..p5, plus p6 by max pooling. Parameter names are ViTDet's: ``backbone.net.*`` (the ViT),
  ``backbone.simfp_{2..5}.*`` (the pyramid).
* ``build_vit_multilevel_fpn_backbone`` (MAE paper / BEiT): four ViT blocks -> MultiLevelPyramid
  (strides 4..32) -> Detectron2's FPN -> p2..p6. The ViT is ``backbone.bottom_up.net.*``.

Select one with ``MODEL.BACKBONE.NAME``; ViT options are ``MODEL.VIT.*``, pyramid options
``MODEL.PYRAMID.*`` (see :mod:`mae_transfer.det.config`). ``MODEL.VIT.WEIGHTS`` is loaded with
:func:`mae_transfer.checkpoints.load_pretrained`, which converts the layout, resizes position
tables to the detection input size and logs what it loaded.
"""
from __future__ import annotations

import logging
import math

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from torch import nn

from mae_transfer.checkpoints import load_pretrained
from mae_transfer.errors import ConfigError
from mae_transfer.models import MultiLevelPyramid, SimplePyramid, VisionTransformer, create_vit

from .config import pyramid_kwargs_from_cfg, vit_kwargs_from_cfg

logger = logging.getLogger("mae_transfer.det")


class ViTSimplePyramid(SimplePyramid, Backbone):
    """ViTDet backbone: the ViT's last map -> simple pyramid (``simfp_*``) -> optional top block.

    A :class:`SimplePyramid` that owns its ViT as ``net``, so parameter names are exactly
    Detectron2 ViTDet's (``net.*``, ``simfp_{2..5}.*``) and its checkpoints load as they are.

    Args:
        net: the ViT (its ``forward_maps`` returns the last block's map, stride = patch size).
        out_channels, scale_factors, norm: as :class:`SimplePyramid`.
        top_block: extra coarser levels from the last output (``LastLevelMaxPool`` adds p6), or None.
        square_pad: pad each batch to this square size (ViTDet pads to 1024); 0 = off.
    """

    def __init__(self, net: VisionTransformer, *, out_channels: int = 256,
                 scale_factors: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5), norm: str = "LN",
                 top_block: nn.Module | None = None, square_pad: int = 0):
        super().__init__(in_channels=net.embed_dim, out_channels=out_channels, scale_factors=scale_factors,
                         norm=norm, in_stride=net.feature_stride)
        self.net, self.top_block = net, top_block
        names, strides = list(self.out_features), list(self.strides)
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            names += [f"p{level}" for level in range(last + 1, last + 1 + top_block.num_levels)]
            strides += [2**level for level in range(last + 1, last + 1 + top_block.num_levels)]
        self._out_features = names
        self._out_feature_strides = dict(zip(names, strides))
        self._out_feature_channels = {name: out_channels for name in names}
        self._size_divisibility = max(self.strides)
        self._square_pad = square_pad

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"p2": (B, C, H/4, W/4), ..., "p6": (B, C, H/64, W/64)}."""
        features = SimplePyramid.forward(self, self.net.forward_maps(x))
        if self.top_block is not None:
            features.extend(self.top_block(features[-1]))
        return dict(zip(self._out_features, features))


class ViTMultiLevel(Backbone):
    """ViT maps of several blocks -> :class:`MultiLevelPyramid`: the bottom-up input of an FPN.

    Outputs ``"stage2".."stage5"`` (strides 4, 8, 16, 32), ``embed_dim`` channels each.
    """

    def __init__(self, net: VisionTransformer, pyramid: MultiLevelPyramid):
        super().__init__()
        self.net, self.pyramid = net, pyramid
        self._out_features = [f"stage{int(math.log2(s))}" for s in pyramid.strides]
        self._out_feature_strides = dict(zip(self._out_features, pyramid.strides))
        self._out_feature_channels = {name: net.embed_dim for name in self._out_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> {"stage2": (B, C, H/4, W/4), ..., "stage5": (B, C, H/32, W/32)}."""
        return dict(zip(self._out_features, self.pyramid(self.net.forward_maps(x))))


def build_vit(cfg: CfgNode) -> VisionTransformer:
    """``create_vit`` from ``MODEL.VIT.*`` (no final norm: detection only uses the block maps)."""
    return create_vit(cfg.MODEL.VIT.NAME, final_norm=False, **vit_kwargs_from_cfg(cfg))


def load_vit_weights(cfg: CfgNode, module: nn.Module, pyramid_prefix: str | None = None) -> None:
    """Load ``MODEL.VIT.WEIGHTS`` (any layout) into the ViT under ``module.net``; logs the report."""
    if cfg.MODEL.VIT.WEIGHTS:
        load_pretrained(module, cfg.MODEL.VIT.WEIGHTS, unsafe=cfg.MODEL.UNSAFE_LOAD, prefix="net.",
                        pyramid_prefix=pyramid_prefix)


@BACKBONE_REGISTRY.register()
def build_vit_simple_pyramid_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """ViTDet: ViT + simple feature pyramid, p2-p6 with ``MODEL.PYRAMID.OUT_CHANNELS`` channels."""
    backbone = ViTSimplePyramid(build_vit(cfg), out_channels=cfg.MODEL.PYRAMID.OUT_CHANNELS,
                                top_block=LastLevelMaxPool(), square_pad=cfg.MODEL.PYRAMID.SQUARE_PAD,
                                **pyramid_kwargs_from_cfg(cfg))
    load_vit_weights(cfg, backbone, pyramid_prefix="")  # ViTDet checkpoints also fill simfp_*
    return backbone


@BACKBONE_REGISTRY.register()
def build_vit_multilevel_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """MAE paper: ViT blocks ``MODEL.VIT.OUT_INDICES`` (4 of them) -> multi-level pyramid -> FPN."""
    out_indices = cfg.MODEL.VIT.OUT_INDICES
    if out_indices is None or len(out_indices) != len(cfg.MODEL.PYRAMID.SCALE_FACTORS):
        raise ConfigError(
            f"MODEL.VIT.OUT_INDICES is {out_indices}; the multi-level FPN backbone needs one block id per "
            f"MODEL.PYRAMID.SCALE_FACTORS entry, e.g. [3, 5, 7, 11] for ViT-B."
        )
    net = build_vit(cfg)
    bottom_up = ViTMultiLevel(net, MultiLevelPyramid(in_channels=net.embed_dim, in_stride=net.feature_stride,
                                                     **pyramid_kwargs_from_cfg(cfg)))
    load_vit_weights(cfg, bottom_up)
    return FPN(
        bottom_up=bottom_up,
        in_features=bottom_up._out_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
