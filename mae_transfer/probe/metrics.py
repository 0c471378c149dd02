"""mIoU and aAcc exactly as MMSeg's ``IoUMetric`` computes them (without its rounding).

Intersection, union, predicted and labelled areas are accumulated per class over the whole
evaluation set (pixels labelled ``ignore_index`` dropped first); IoU of a class is
intersection / union; mIoU is the mean over the classes with union > 0 (MMSeg's ``nanmean`` of
``0/0 = nan``), in percent; aAcc is total intersection / total labelled pixels, in percent.
"""
from __future__ import annotations

import torch

from .data import IGNORE_INDEX


class IoUAccumulator:
    """Per-class areas summed over batches of ``(pred, label)`` maps.

    Args:
        num_classes: K; labels are ``0..K-1`` or ``ignore_index`` (dropped), predictions ``0..K-1``.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [label, pred]

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """``pred``, ``label``: integer maps of the same shape (any number of leading dims)."""
        k = self.num_classes
        keep = label != self.ignore_index
        label, pred = label[keep].long().cpu(), pred[keep].long().cpu()
        if label.numel() and (min(label.min(), pred.min()) < 0 or max(label.max(), pred.max()) >= k):
            raise ValueError(f"labels and predictions must lie in 0..{k - 1} (or be {self.ignore_index}).")
        index = label * k + pred
        self.confusion += torch.bincount(index, minlength=k * k).view(k, k)

    def areas(self) -> dict[str, torch.Tensor]:
        """``intersect``, ``union``, ``pred``, ``label``: ``(K,)`` int64 pixel counts."""
        intersect = self.confusion.diag()
        pred, label = self.confusion.sum(0), self.confusion.sum(1)
        return {"intersect": intersect, "union": pred + label - intersect, "pred": pred, "label": label}

    def compute(self) -> dict:
        """``{"mIoU": float, "aAcc": float, "per_class_iou": [float | None]}`` in percent; a class
        with union 0 has IoU None and is left out of the mean."""
        a = self.areas()
        iou = a["intersect"].double() / a["union"].double()  # nan where union == 0
        present = a["union"] > 0
        miou = float(iou[present].mean() * 100) if present.any() else float("nan")
        total = int(a["label"].sum())
        aacc = float(a["intersect"].sum() / total * 100) if total else float("nan")
        per_class = [float(v * 100) if ok else None for v, ok in zip(iou.tolist(), present.tolist())]
        return {"mIoU": miou, "aAcc": aacc, "per_class_iou": per_class}
