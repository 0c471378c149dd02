"""The probe's head (DINOv2's ``BNHead``: BatchNorm + 1x1 conv) trained on cached features.

The schedule is fixed, never tuned on a validation split: AdamW, lr 1e-2, weight decay 1e-4, 300
steps of 16 maps, linear warm-up over the first 10% of the steps, then linear decay to 0 (MMSeg's
``poly`` with power 1). DINOv2 trains its linear heads for 40k iterations; for a schedule a hundred
times shorter the lr was raised from 1e-3 to 1e-2, chosen by the *training* loss (on the built-in
train split, random-init ViT-Ti: 0.139 at 1e-3, 0.114 at 1e-2, 0.110 at 3e-2 after 300 steps; a
one-hot "oracle" feature map with a few channels barely moves at 1e-3). Loss: cross-entropy on the
logits upsampled (bilinear) to the label resolution, ignoring label 255.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from mae_transfer.errors import ConfigError
from mae_transfer.utils.progress import Progress

from .data import IGNORE_INDEX
from .features import FeatureCache
from .metrics import IoUAccumulator


def interpolation_matrix(n: int, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, size)`` weights of 1-d linear interpolation from ``n`` to ``size`` samples
    (``align_corners=False``), read off ``F.interpolate`` applied to the identity."""
    eye = torch.eye(n, dtype=dtype).view(n, 1, n, 1)
    return F.interpolate(eye, size=(size, 1), mode="bilinear", align_corners=False).view(n, size)


def upsample_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, K, h, w) -> (B, K, H, W)``, equal to ``F.interpolate(x, size, mode="bilinear",
    align_corners=False)`` (bilinear is separable: two matrix products), with a backward several
    times faster on a CPU than ``upsample_bilinear2d``'s."""
    rows = interpolation_matrix(x.shape[-2], size[0], x.dtype).to(x.device)
    cols = interpolation_matrix(x.shape[-1], size[1], x.dtype).to(x.device)
    return torch.einsum("bkhw,hH,wW->bkHW", x, rows, cols)


class ProbeHead(nn.Module):
    """``BatchNorm2d(C)`` (affine, as MMSeg's ``SyncBN`` in DINOv2's ``BNHead``) then ``Conv2d(C, K, 1)``.

    Args:
        in_channels: C, the channels of the (concatenated) feature maps.
        num_classes: K.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B, C, h, w)`` -> logits ``(B, K, *size)`` (bilinear, ``align_corners=False``)."""
        return upsample_bilinear(self.conv(self.bn(features)), size)


@dataclass(frozen=True)
class HeadConfig:
    """Training of the head (see the module docstring for the fixed schedule).

    Args:
        steps: optimiser steps; ignored when ``epochs`` is set.
        epochs: passes over the cached training maps (flipped copies included); sets the steps to
            ``ceil(epochs * maps / batch_size)``.
        batch_size: maps per step.
        lr, weight_decay: AdamW's peak learning rate and weight decay (``optimizer="sgd"``: SGD with
            momentum 0.9 at the same values).
        optimizer: ``"adamw"`` or ``"sgd"``.
        warmup: fraction of the steps with a linear warm-up.
        flip: train on horizontally flipped copies too.
        log_every: a progress line every this many steps.
    """

    steps: int = 300
    epochs: Optional[float] = None
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    warmup: float = 0.1
    flip: bool = True
    log_every: int = 100

    def total_steps(self, num_maps: int) -> int:
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * num_maps / self.batch_size))
        return self.steps

    def build_optimizer(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        raise ConfigError(f"Unknown probe optimizer {self.optimizer!r}; use 'adamw' or 'sgd'.")


def _lr_at(step: int, total: int, cfg: HeadConfig) -> float:
    warmup = int(cfg.warmup * total)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * (1 - (step - warmup) / max(total - warmup, 1))


def _batches(num: int, batch_size: int, generator: torch.Generator):
    """Indices of shuffled epochs without end (incomplete last batches dropped when ``num >= batch_size``)."""
    size = min(batch_size, num)
    while True:
        order = torch.randperm(num, generator=generator)
        for i in range(0, num - size + 1, size):
            yield order[i:i + size]


def train_head(cache: FeatureCache, num_classes: int, seed: int, cfg: HeadConfig = HeadConfig(),
               device: str | torch.device = "cpu", name: str = "probe") -> tuple[ProbeHead, list[float]]:
    """Train a fresh :class:`ProbeHead` on ``cache``; ``seed`` sets its initialisation and the data order.

    Returns:
        the head (eval mode) and the loss of every step.
    """
    torch.manual_seed(seed)
    head = ProbeHead(cache.features.shape[1], num_classes).to(device).train()
    optimizer = cfg.build_optimizer(head.parameters())
    total = cfg.total_steps(len(cache.features))
    batches = _batches(len(cache.features), cfg.batch_size, torch.Generator().manual_seed(seed))
    progress, losses = Progress(total, every=cfg.log_every, name=name), []
    size = tuple(cache.labels.shape[-2:])
    for step in range(total):
        index = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, total, cfg)
        logits = head(cache.features[index].to(device), size)
        loss = F.cross_entropy(logits, cache.labels[index].to(device), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.step(step, loss=losses[-1])
    return head.eval(), losses


@torch.no_grad()
def evaluate_head(head: nn.Module, cache: FeatureCache, num_classes: int, batch_size: int = 32,
                  device: str | torch.device = "cpu") -> dict:
    """mIoU / aAcc / per-class IoU of ``head`` on ``cache`` (see :mod:`.metrics`)."""
    head.eval()
    metric = IoUAccumulator(num_classes)
    size = tuple(cache.labels.shape[-2:])
    start = time.perf_counter()
    for i in range(0, len(cache.features), batch_size):
        pred = head(cache.features[i:i + batch_size].to(device), size).argmax(1)
        metric.update(pred, cache.labels[i:i + batch_size])
    return {**metric.compute(), "seconds": time.perf_counter() - start}
