"""Supervised pretraining for the "supervised" row of a comparison: object-crop classification.

The stand-in for ImageNet-1k classification on the built-in data: every annotated object of a
COCO-format dataset becomes one training image — a square crop around its box with some context
(random scale/offset jitter and flips while training) — labelled with its category. A ViT with a
class token and a linear ``head`` learns to classify the crops (DeiT recipe in miniature: AdamW,
cosine schedule, label smoothing 0.1). The checkpoint is timm/DeiT-layout ``{'model': ...}``
(``patch_embed.*``, ``cls_token``, ``pos_embed``, ``blocks.*``, ``norm.*``, ``head.*``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from mae_transfer.errors import ConfigError, DataError, MissingFileError, NonFiniteLossError
from mae_transfer.models import PRESETS, VisionTransformer
from mae_transfer.utils.fileio import atomic_torch_save, atomic_write_text
from mae_transfer.utils.logger import get_logger

from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Progress,
    build_optimizer,
    cosine_lr,
    infinite_batches,
    plot_curve,
    set_lr,
)

logger = get_logger(__name__)


class ViTClassifier(VisionTransformer):
    """Our ViT plus a linear ``head`` on the final-norm class token (timm/DeiT parameter names)."""

    def __init__(self, num_classes: int, **vit_kwargs):
        super().__init__(**vit_kwargs)
        self.head = nn.Linear(self.embed_dim, num_classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``(B, 3, H, W) -> (B, num_classes)`` logits."""
        return self.head(self.forward_features(x)[:, 0])


def create_classifier(name: str, num_classes: int, **overrides) -> ViTClassifier:
    """A ``create_vit`` preset with a classification head (class token on, global attention)."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown ViT preset {name!r}; choose one of {sorted(PRESETS)}.")
    return ViTClassifier(num_classes, **{**PRESETS[name], "use_cls_token": True, **overrides})


class ObjectCrops(Dataset):
    """One square, context-padded crop per non-crowd COCO annotation, labelled by category.

    Args:
        json_path / image_dir: a COCO instances json and its image folder.
        img_size: output side in pixels.
        train: random context scale (1.1-1.8 x the box side), offset and flip; else 1.4, centred.
    """

    def __init__(self, json_path: str | Path, image_dir: str | Path, img_size: int, train: bool):
        if not Path(json_path).is_file():
            raise MissingFileError(f"annotation file {json_path} does not exist; pass --json with a COCO "
                                   f"instances json (or --data builtin).")
        coco = json.loads(Path(json_path).read_text())
        self.class_names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
        label_of = {c["id"]: i for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
        files = {im["id"]: Path(image_dir) / im["file_name"] for im in coco["images"]}
        self.items = [(files[a["image_id"]], a["bbox"], label_of[a["category_id"]])
                      for a in coco["annotations"] if not a.get("iscrowd", 0) and min(a["bbox"][2:]) >= 4]
        if not self.items:
            raise DataError(f"{json_path} has no usable (non-crowd, >= 4 px) object annotations to "
                            f"classify; pass a COCO instances json with objects.")
        self.img_size, self.train = img_size, train
        self._images: dict[Path, Image.Image] = {}
        self.to_tensor = transforms.Compose([transforms.ToTensor(),
                                             transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, path: Path) -> Image.Image:
        if path not in self._images:  # the built-in sets are small; keep decoded images
            with Image.open(path) as im:
                self._images[path] = im.convert("RGB")
        return self._images[path]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, (x, y, w, h), label = self.items[index]
        cx, cy, side = x + w / 2, y + h / 2, max(w, h)
        if self.train:
            side *= np.random.uniform(1.1, 1.8)
            cx += np.random.uniform(-0.15, 0.15) * side
            cy += np.random.uniform(-0.15, 0.15) * side
        else:
            side *= 1.4
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        crop = self._image(path).crop(tuple(int(round(v)) for v in box))
        crop = crop.resize((self.img_size, self.img_size), Image.BICUBIC)
        if self.train and np.random.rand() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        return self.to_tensor(crop), label


@dataclass
class SupPretrainConfig:
    """Arguments of :func:`pretrain_supervised` (and of ``tools/pretrain_sup.py``)."""
    json: str
    images: str
    output: str
    model: str = "vit_tiny_patch16"
    val_json: Optional[str] = None
    val_images: Optional[str] = None
    iters: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_iters: Optional[int] = None
    label_smoothing: float = 0.1
    drop_path: float = 0.1
    img_size: int = 64
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    device: str = "cpu"


@torch.no_grad()
def accuracy(model: nn.Module, dataset: ObjectCrops, device: str, batch_size: int = 64) -> float:
    """Top-1 accuracy over a crop dataset."""
    model.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        imgs = torch.stack([b[0] for b in batch]).to(device)
        labels = torch.tensor([b[1] for b in batch], device=device)
        correct += (model(imgs).argmax(1) == labels).sum().item()
    model.train()
    return correct / len(dataset)


def pretrain_supervised(cfg: SupPretrainConfig) -> dict:
    """Train the classifier; writes ``checkpoint-last.pth``, ``metrics.json`` and ``loss.png``."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    train_set = ObjectCrops(cfg.json, cfg.images, cfg.img_size, train=True)
    # Position embedding stored at the training grid, as MAE's; loaders resize it for transfer.
    model = create_classifier(cfg.model, len(train_set.class_names), img_size=cfg.img_size,
                              pretrain_img_size=cfg.img_size, drop_path=cfg.drop_path).to(cfg.device)
    logger.info("Supervised pretraining %s on %d object crops (%s) for %d iterations (batch %d, lr %.3g)",
                cfg.model, len(train_set), ", ".join(train_set.class_names), cfg.iters, cfg.batch_size,
                cfg.lr)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.999))
    warmup = cfg.warmup_iters if cfg.warmup_iters is not None else max(cfg.iters // 10, 1)
    batches = infinite_batches(train_set, cfg.batch_size, cfg.seed, cfg.num_workers)
    progress = Progress(cfg.iters, cfg.log_every, name="sup")
    losses, accs, lrs = [], [], []
    model.train()
    for it in range(cfg.iters):
        lr = cosine_lr(it, cfg.iters, cfg.lr, warmup)
        set_lr(optimizer, lr)
        imgs, labels = (t.to(cfg.device) for t in next(batches))
        logits = model(imgs)
        loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"classification loss is {loss.item()} at iteration {it}; lower --lr.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        accs.append((logits.argmax(1) == labels).float().mean().item())
        lrs.append(lr)
        progress.step(it, loss=losses[-1], acc=accs[-1], lr=lr)

    args = asdict(cfg)
    atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "iteration": cfg.iters, "args": args, "class_names": train_set.class_names},
                      out / "checkpoint-last.pth")
    plot_curve(losses, out / "loss.png", f"supervised pretraining loss ({cfg.model})")
    summary = {"model": cfg.model, "iters": cfg.iters, "crops": len(train_set),
               "first_loss": losses[0], "final_loss": float(np.mean(losses[-10:])),
               "train_acc": float(np.mean(accs[-10:])), "train_time_s": round(progress.elapsed, 2),
               "checkpoint": str(out / "checkpoint-last.pth")}
    if cfg.val_json:
        val_images = cfg.val_images or Path(cfg.val_json).parent
        val_set = ObjectCrops(cfg.val_json, val_images, cfg.img_size, train=False)
        summary["val_acc"] = accuracy(model, val_set, cfg.device)
    atomic_write_text(out / "metrics.json", json.dumps(
        {"summary": summary, "args": args, "loss": losses, "acc": accs, "lr": lrs}, indent=1))
    logger.info("Supervised pretraining done: loss %.4f -> %.4f, train acc %.3f%s; wrote %s",
                summary["first_loss"], summary["final_loss"], summary["train_acc"],
                f", val acc {summary['val_acc']:.3f}" if "val_acc" in summary else "", summary["checkpoint"])
    return summary
