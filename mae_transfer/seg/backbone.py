"""The project's ViT as an MMSegmentation backbone (registered as ``MAETransferViT``)."""
from __future__ import annotations

import inspect
from typing import Sequence

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from mae_transfer.checkpoints import load_pretrained
from mae_transfer.errors import ConfigError
from mae_transfer.models import VisionTransformer, create_vit


@MODELS.register_module()
class MAETransferViT(BaseModule):
    """A thin wrapper over :func:`mae_transfer.models.create_vit` returning multi-level maps.

    The ViT lives in ``self.net``, so its parameters are ``backbone.net.*`` inside a segmentor,
    the same prefix as in Detectron2 (one layer-decay / freeze rule for both frameworks).

    Args:
        arch: a ``create_vit`` preset, e.g. ``"vit_base_patch16"`` or ``"beit_base_patch16"``.
        img_size: training crop size (int or (h, w)); position tables are built for it and resized
            on the fly for other input sizes (whole-image inference on larger images).
        pretrain_img_size: grid the absolute position table is stored and learned at; default
            the crop's token grid (``img_size // feature_stride``), as MMSeg's MAE/BEiT backbones:
            a checkpoint's 224 table (197 tokens) is resized once at load (bicubic) to the crop
            grid (1025 tokens at 512, patch 16), learned there, and used as is by sliding-window
            inference (window = crop).
        out_indices: 0-based blocks whose outputs are returned (MAE/BEiT UperNet: 3, 5, 7, 11).
        pretrained: checkpoint path or URL loaded by :func:`mae_transfer.checkpoints.load_pretrained`
            (any layout it recognises; the load report is logged). ``init_cfg=dict(type='Pretrained',
            checkpoint=...)`` is accepted as a synonym.
        unsafe_load: allow pickled checkpoints that need arbitrary code (trusted files only).
        final_norm: keep the ViT's final LayerNorm. The maps never use it, and an unused parameter
            breaks DistributedDataParallel, so it is left out by default (as in Detectron2's ViTDet).
        init_cfg: MMEngine init config (only ``Pretrained`` is meaningful here).
        **vit_kwargs: any other ``create_vit`` field (drop_path, rel_pos, use_cls_token,
            layer_scale, window_size, grad_checkpointing, ...).
    """

    def __init__(self, arch: str = "vit_base_patch16", img_size: int | Sequence[int] = 512,
                 out_indices: Sequence[int] = (3, 5, 7, 11),
                 pretrain_img_size: int | Sequence[int] | None = None, pretrained: str | None = None,
                 unsafe_load: bool = False, final_norm: bool = False, init_cfg: dict | None = None,
                 **vit_kwargs) -> None:
        super().__init__(init_cfg=None)
        if init_cfg is not None:
            if init_cfg.get("type") != "Pretrained" or pretrained is not None:
                raise ConfigError("MAETransferViT: use either pretrained='path' or "
                                  "init_cfg=dict(type='Pretrained', checkpoint='path'), not both/other.")
            pretrained = init_cfg["checkpoint"]
        if isinstance(img_size, Sequence):
            img_size = tuple(img_size)
        if isinstance(pretrain_img_size, Sequence):
            pretrain_img_size = tuple(pretrain_img_size)
        self.net = create_vit(arch, img_size=img_size, pretrain_img_size=pretrain_img_size,
                              out_indices=tuple(out_indices), final_norm=final_norm, **vit_kwargs)
        self.pretrained = pretrained
        self.unsafe_load = unsafe_load

    @classmethod
    def config_keys(cls) -> set[str]:
        """Keys a config may set (checked by ``--cfg-options``): these and every ViT argument."""
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "vit_kwargs"}
        return own | (set(inspect.signature(VisionTransformer.__init__).parameters) - {"self"})

    @property
    def out_channels(self) -> list[int]:
        return [self.net.embed_dim] * len(self.net.out_indices)

    def init_weights(self) -> None:
        """The ViT initialises itself when built; here only the pretrained weights are loaded."""
        if self.pretrained:
            report = load_pretrained(self.net, self.pretrained, strict=False, unsafe=self.unsafe_load)
            # also into the run's log file: the package logger (in load_pretrained) only reaches the console
            print_log(f"backbone weights from {self.pretrained}: {report.summary()}", logger="current")
        self._is_init = True

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H/p, W/p) map per ``out_indices`` entry (no final norm)."""
        return tuple(self.net.forward_maps(images))
