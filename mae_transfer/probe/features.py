"""Frozen backbones -> cached patch-token maps (DINOv2's linear / multiscale protocols).

A feature extractor is any callable ``images (B, 3, H, W) -> list of (B, C_i, h, w)`` maps; the
probe concatenates the list along channels. :class:`ViTFeatures` is the one for the project's ViT:

* ``linear``: the last block's patch tokens;
* ``multiscale``: the last 4 blocks' patch tokens (DINOv2's "+ms" layers, without its test-time
  multi-scale inputs).

As DINOv2 (``get_intermediate_layers(..., norm=True)``), the ViT's final ``norm`` is applied to
every taken block; a ViT built without a final norm (``final_norm=False``) gives its raw tokens.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mae_transfer.checkpoints import load_pretrained
from mae_transfer.errors import ConfigError
from mae_transfer.models import PRESETS, VisionTransformer, create_vit
from mae_transfer.utils.logger import get_logger

from .data import SegSplit

logger = get_logger(__name__)

FeatureExtractor = Callable[[torch.Tensor], Sequence[torch.Tensor]]
PROTOCOL_BLOCKS = {"linear": 1, "multiscale": 4}


def protocol_blocks(protocol: str, depth: int) -> tuple[int, ...]:
    """0-based blocks a protocol reads from a ViT of ``depth`` blocks (the last 1 or 4)."""
    if protocol not in PROTOCOL_BLOCKS:
        raise ConfigError(f"Unknown probe protocol {protocol!r}; use one of {sorted(PROTOCOL_BLOCKS)}.")
    count = min(PROTOCOL_BLOCKS[protocol], depth)
    return tuple(range(depth - count, depth))


class ViTFeatures(nn.Module):
    """A frozen :class:`VisionTransformer` as a feature extractor.

    Args:
        vit: the backbone (kept in eval mode, no gradient).
        protocol: ``"linear"`` or ``"multiscale"`` (see the module docstring).
    """

    def __init__(self, vit: VisionTransformer, protocol: str = "linear"):
        super().__init__()
        self.vit = vit.eval().requires_grad_(False)
        self.blocks = protocol_blocks(protocol, vit.depth)

    def train(self, mode: bool = True) -> "ViTFeatures":
        return super().train(False)  # frozen: dropout/drop path stay off

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` -> one normed ``(B, C, H/p, W/p)`` map per taken block."""
        saved, self.vit.out_indices = self.vit.out_indices, self.blocks
        try:
            maps = self.vit.forward_maps(images)
        finally:
            self.vit.out_indices = saved
        norm = self.vit.norm  # per-token LayerNorm (Identity without a final norm)
        return [norm(m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous() for m in maps]


@dataclass(frozen=True)
class BackboneInit:
    """How to build the frozen ViT: ``create_vit(arch, img_size=..., **overrides)``, then either the
    seeded random initialisation or a checkpoint loaded by
    :func:`mae_transfer.checkpoints.load_pretrained` (any layout it knows; it logs a load report).

    The position table is stored at the probe's grid (``pretrain_img_size=None``), as the
    segmentation backbone does, so a checkpoint's table is resized once at load.

    Args:
        name: row name in reports (``"random"``, ``"mae"``, ...).
        arch: a :data:`mae_transfer.models.PRESETS` name.
        img_size: input side in pixels.
        checkpoint: path or URL; None = random initialisation with ``torch.manual_seed(seed)``
            (different per probe seed, as a fine-tuning run from random init).
        overrides: other ``create_vit`` arguments (e.g. ``depth=4, embed_dim=32`` in tests).
        unsafe: allow checkpoints that run code when unpickled (trusted files only).
    """

    name: str = "random"
    arch: str = "vit_tiny_patch16"
    img_size: int = 128
    checkpoint: Optional[str] = None
    overrides: dict = field(default_factory=dict)
    unsafe: bool = False

    @property
    def seed_dependent(self) -> bool:
        """True for random init: the backbone (hence its features) changes with the seed."""
        return self.checkpoint is None

    def build(self, seed: int = 0) -> VisionTransformer:
        """The ViT in eval mode; ``seed`` matters for random init only.

        Raises:
            ConfigError: unknown ``arch``. CheckpointError: the checkpoint is unreadable or does not fit.
        """
        if self.arch not in PRESETS:
            raise ConfigError(f"Unknown architecture {self.arch!r} (--arch); choose one of {sorted(PRESETS)}.")
        if self.checkpoint is not None and "://" not in self.checkpoint and not os.path.exists(self.checkpoint):
            raise ConfigError(f"Checkpoint {self.checkpoint} of init '{self.name}' does not exist; "
                              f"pass NAME=PATH with an existing file.")
        torch.manual_seed(seed)
        vit = create_vit(self.arch, **{"img_size": self.img_size, "pretrain_img_size": None, **self.overrides})
        if self.checkpoint is not None:
            load_pretrained(vit, self.checkpoint, unsafe=self.unsafe, name=f"{self.name}={self.checkpoint}")
        return vit.eval()


@dataclass
class FeatureCache:
    """Features of a split computed once.

    Attributes:
        features: ``(M, C, h, w)`` float32 (M = N, or 2N with flipped copies after the originals).
        labels: ``(M, S, S)`` int64, flipped with their images.
        seconds: time spent in the extractor.
    """

    features: torch.Tensor
    labels: torch.Tensor
    seconds: float


def _as_extractor(backbone: nn.Module | FeatureExtractor, protocol: str) -> FeatureExtractor:
    if isinstance(backbone, VisionTransformer):
        return ViTFeatures(backbone, protocol)
    return backbone


@torch.no_grad()
def extract_features(backbone: nn.Module | FeatureExtractor, split: SegSplit, protocol: str = "linear",
                     flip: bool = False, batch_size: int = 32, device: str | torch.device = "cpu") -> FeatureCache:
    """Run the frozen backbone over ``split`` (no gradient, eval mode) and concatenate its maps.

    Args:
        backbone: a :class:`VisionTransformer` (wrapped in :class:`ViTFeatures` with ``protocol``) or
            any feature extractor (``protocol`` then unused).
        split: the images and labels.
        flip: also keep horizontally flipped copies (train-time augmentation).
        batch_size: images per forward.
        device: where the backbone runs; the cache is returned on the CPU.
    """
    extractor = _as_extractor(backbone, protocol)
    if isinstance(extractor, nn.Module):
        extractor.to(device).eval()
    start, chunks = time.perf_counter(), []
    for flipped in (False, True) if flip else (False,):
        for i in range(0, len(split), batch_size):
            images = split.normalised(i, i + batch_size)
            images = images.flip(-1) if flipped else images
            maps = list(extractor(images.to(device)))
            size = maps[0].shape[-2:]
            maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear") for m in maps]
            chunks.append(torch.cat(maps, dim=1).float().cpu())
    labels = torch.cat([split.labels, split.labels.flip(-1)]) if flip else split.labels
    return FeatureCache(torch.cat(chunks), labels, time.perf_counter() - start)
