"""Pieces shared by the MAE, BEiT-style and supervised pretraining loops: data, schedule, progress, plots."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from mae_transfer.optim import param_groups
from mae_transfer.utils.images import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, list_images  # noqa: F401
from mae_transfer.utils.logger import get_logger
from mae_transfer.utils.plotting import pyplot
from mae_transfer.utils.progress import Progress  # noqa: F401  (re-exported for the loops)

logger = get_logger(__name__)


class ImageFolder(Dataset):
    """A flat or nested folder of images without labels; returns transformed RGB tensors."""

    def __init__(self, folder: str | Path, transform):
        self.files = list_images(folder)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            return self.transform(image.convert("RGB"))


def infinite_batches(dataset: Dataset, batch_size: int, seed: int,
                     num_workers: int = 0) -> Iterator:
    """Reshuffled epochs without end, reproducible from ``seed``; drops incomplete batches when
    the dataset holds at least one full batch."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                        num_workers=num_workers, drop_last=len(dataset) >= batch_size)
    while True:
        yield from loader


def step_seed(seed: int, step: int) -> int:
    """A seed for iteration ``step`` of a run seeded ``seed`` (distinct steps, distinct seeds)."""
    return (seed * 1_000_003 + step) % (2 ** 63)


def batch_at(dataset: Dataset, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Batch ``step`` of an endless stream of reshuffled epochs, a pure function of ``(seed, step)``
    (unlike :func:`infinite_batches`, a resumed run gets the same batches without replaying the
    stream). Epoch ``e`` is a permutation drawn from ``step_seed(seed, e)``; incomplete batches are
    dropped when the dataset holds a full one. Loaded in this process: random transforms draw from
    torch's global generator, so seed it per step for reproducible augmentation."""
    n = len(dataset)
    per_epoch = n // batch_size if n >= batch_size else 1
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, epoch)))
    return default_collate([dataset[i] for i in order[index * batch_size:(index + 1) * batch_size].tolist()])


def cosine_lr(step: int, total: int, base_lr: float, warmup: int, min_lr: float = 0.0) -> float:
    """Linear warm-up then half-cycle cosine decay, per iteration (MAE's schedule)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW over :func:`mae_transfer.optim.param_groups` without layer decay: no weight decay on
    1-d tensors and biases (the ``beit`` rule) and on the model's ``no_weight_decay()`` names
    (tokens, position tables), as timm's ``param_groups_weight_decay``. Two groups, no decay first."""
    skip = tuple(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else ()
    groups = param_groups(model, base_lr=lr, weight_decay=weight_decay, layer_decay=1.0, backbone_prefix="",
                          weight_decay_rule="beit", overrides={name: {"weight_decay": 0.0} for name in skip})
    # only what the optimizer needs: resuming compares the groups with the saved ones
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def plot_curve(values: Sequence[float], path: str | Path, title: str, ylabel: str = "loss") -> None:
    """Save a line plot of ``values`` per iteration (with a moving average) as PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(values) + 1), values, lw=0.8, alpha=0.5, label="per iteration")
    window = max(len(values) // 20, 1)
    if window > 1:
        smooth = torch.tensor(values).unfold(0, window, 1).mean(1).tolist()
        ax.plot(range(window, len(values) + 1), smooth, lw=1.8, label=f"mean of {window}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
