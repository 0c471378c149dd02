"""``run_probe``: one frozen backbone, several head seeds -> one :class:`ProbeResult` per seed."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from mae_transfer.utils.logger import get_logger

from .data import SegSplit
from .features import BackboneInit, FeatureCache, FeatureExtractor, extract_features, protocol_blocks
from .head import HeadConfig, evaluate_head, train_head

logger = get_logger(__name__)


@dataclass
class ProbeResult:
    """One seed of one probe.

    Attributes:
        mIoU, aAcc: percent, on the validation split (:mod:`.metrics`).
        per_class_iou: percent per class; None for a class absent from labels and predictions.
        seed: the head's seed (and the backbone's, for random init).
        protocol: ``"linear"`` or ``"multiscale"``.
        times: seconds: ``extract`` (features of both splits; for a checkpoint or a given backbone
            computed once and shared by all seeds, so the same value in each), ``train``, ``eval``.
        final_loss: mean training loss of the last 10% of the steps.
        name: the init's name.
    """

    mIoU: float
    aAcc: float
    per_class_iou: list[Optional[float]]
    seed: int
    protocol: str
    times: dict[str, float] = field(default_factory=dict)
    final_loss: float = float("nan")
    name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _caches(backbone, train_set: SegSplit, val_set: SegSplit, protocol: str, flip: bool,
            batch_size: int, device) -> tuple[FeatureCache, FeatureCache]:
    train = extract_features(backbone, train_set, protocol, flip=flip, batch_size=batch_size, device=device)
    val = extract_features(backbone, val_set, protocol, batch_size=batch_size, device=device)
    return train, val


def run_probe(backbone: BackboneInit | nn.Module | FeatureExtractor, train_set: SegSplit, val_set: SegSplit,
              protocol: str = "linear", seeds: Sequence[int] = (0, 1, 2), num_classes: Optional[int] = None,
              head: HeadConfig = HeadConfig(), device: str | torch.device = "cpu", extract_batch_size: int = 32,
              name: Optional[str] = None) -> list[ProbeResult]:
    """Train and evaluate the frozen-feature probe once per seed.

    Features are extracted once (no gradient, eval mode) and cached; each seed then trains a fresh
    head on the cache (seconds). A :class:`BackboneInit` without checkpoint (random init) builds a
    new ViT per seed with ``torch.manual_seed(seed)``, so its features are extracted per seed.

    Args:
        backbone: a :class:`BackboneInit`, a :class:`~mae_transfer.models.VisionTransformer`, or any
            callable ``images (B, 3, H, W) -> list of (B, C, h, w)`` (e.g. an oracle in a test).
        train_set, val_set: the splits (:func:`~.data.load_ade`).
        protocol: ``"linear"`` (last block) or ``"multiscale"`` (last 4 blocks); for a plain callable
            it only labels the results.
        seeds: one run per seed.
        num_classes: K; default one more than the largest label in either split.
        head: the head's training (:class:`~.head.HeadConfig`).
        device: where the backbone and the head run.
        extract_batch_size: images per backbone forward.
        name: the results' name (default the init's name, else ``"backbone"``).
    """
    protocol_blocks(protocol, 4)  # a clear error for an unknown protocol, before any work
    if num_classes is None:
        num_classes = max(train_set.max_label(), val_set.max_label()) + 1
    name = name or (backbone.name if isinstance(backbone, BackboneInit) else "backbone")
    per_seed = isinstance(backbone, BackboneInit) and backbone.seed_dependent
    shared = None
    results = []
    for seed in seeds:
        if shared is None or per_seed:
            model = backbone.build(seed) if isinstance(backbone, BackboneInit) else backbone
            shared = _caches(model, train_set, val_set, protocol, head.flip, extract_batch_size, device)
        train, val = shared
        start = time.perf_counter()
        trained, losses = train_head(train, num_classes, seed, head, device, name=f"probe {name} seed {seed}")
        train_s = time.perf_counter() - start
        metrics = evaluate_head(trained, val, num_classes, device=device)
        tail = losses[-max(len(losses) // 10, 1):]
        result = ProbeResult(metrics["mIoU"], metrics["aAcc"], metrics["per_class_iou"], seed, protocol,
                             {"extract": train.seconds + val.seconds, "train": train_s, "eval": metrics["seconds"]},
                             sum(tail) / len(tail), name)
        logger.info("probe %s (%s) seed %d: mIoU %.2f  aAcc %.2f  loss %.4f  extract %.1fs%s  train %.1fs",
                    name, protocol, seed, result.mIoU, result.aAcc, result.final_loss, result.times["extract"],
                    "" if per_seed or seed == seeds[0] else " (shared)", train_s)
        results.append(result)
    return results
