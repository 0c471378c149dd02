"""MAE pretraining loop: images in a folder -> ``checkpoint-last.pth`` in the official layout.

Writes into the output directory: ``checkpoint-last.pth`` (``{'model', 'optimizer', 'iteration',
'args', 'history'}``, atomically, also every ``save_every`` iterations so ``resume`` can continue;
``model`` holds encoder + decoder with the official names),
``metrics.json`` (loss and lr per iteration), ``loss.png`` and ``reconstruction.png``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torchvision import transforms

from mae_transfer.errors import NonFiniteLossError
from mae_transfer.models.mae import MaskedAutoencoderViT, create_mae, patchify, unpatchify
from mae_transfer.utils.fileio import atomic_torch_save, atomic_write_text
from mae_transfer.utils.logger import get_logger
from mae_transfer.utils.plotting import pyplot

from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolder,
    Progress,
    build_optimizer,
    cosine_lr,
    infinite_batches,
    plot_curve,
    set_lr,
)

logger = get_logger(__name__)


@dataclass
class MAEPretrainConfig:
    """Arguments of :func:`pretrain_mae` (and of ``tools/pretrain_mae.py``)."""
    data: str
    output: str
    model: str = "mae_vit_tiny_patch16"
    iters: int = 200
    batch_size: int = 16
    lr: float = 1e-3  # absolute peak lr; the paper: 1.5e-4 * batch / 256 at batch 4096 (2.4e-3)
    weight_decay: float = 0.05
    warmup_iters: Optional[int] = None  # default: 10% of iters
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    img_size: int = 224
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    save_every: int = 100  # also write checkpoint-last.pth every N iterations (0 = only at the end)
    resume: bool = False  # continue from OUTPUT/checkpoint-last.pth when it exists
    device: str = "cpu"


def pretrain_transform(img_size: int) -> transforms.Compose:
    """The paper's augmentation: random resized crop (scale 0.2-1, bicubic) and flip."""
    return transforms.Compose([
        transforms.RandomResizedCrop(img_size, scale=(0.2, 1.0),
                                     interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(img_size: int) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(img_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _save(out: Path, model, optimizer, iteration: int, cfg: MAEPretrainConfig,
          losses: list, lrs: list) -> None:
    """Official layout (``model``, ``optimizer``, ``args``) plus what resuming needs."""
    atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "iteration": iteration, "args": asdict(cfg),
                       "history": {"loss": losses, "lr": lrs}}, out / "checkpoint-last.pth")


def _resume(path: Path, model, optimizer) -> tuple[int, list, list]:
    """Restore model/optimizer state; returns (next iteration, loss history, lr history)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    history = state.get("history", {"loss": [], "lr": []})
    logger.info("Resumed from %s at iteration %d", path, state["iteration"])
    return int(state["iteration"]), list(history["loss"]), list(history["lr"])


def pretrain_mae(cfg: MAEPretrainConfig) -> dict:
    """Run MAE pretraining; returns a summary dict (also stored in ``metrics.json``).

    With ``cfg.resume`` an existing ``checkpoint-last.pth`` in the output directory is continued
    (model, optimizer, iteration and loss history; the data order restarts from the seed).
    """
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model = create_mae(cfg.model, img_size=cfg.img_size, norm_pix_loss=cfg.norm_pix_loss,
                       mask_ratio=cfg.mask_ratio).to(cfg.device)
    dataset = ImageFolder(cfg.data, pretrain_transform(cfg.img_size))
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    start, losses, lrs = 0, [], []
    if cfg.resume and (out / "checkpoint-last.pth").is_file():
        start, losses, lrs = _resume(out / "checkpoint-last.pth", model, optimizer)
    logger.info("MAE pretraining %s on %d images from %s for %d iterations (batch %d, lr %.3g)",
                cfg.model, len(dataset), cfg.data, cfg.iters, cfg.batch_size, cfg.lr)
    warmup = cfg.warmup_iters if cfg.warmup_iters is not None else max(cfg.iters // 10, 1)
    batches = infinite_batches(dataset, cfg.batch_size, cfg.seed + start, cfg.num_workers)
    progress = Progress(cfg.iters, cfg.log_every, name="mae", start=start)
    model.train()
    for it in range(start, cfg.iters):
        lr = cosine_lr(it, cfg.iters, cfg.lr, warmup)
        set_lr(optimizer, lr)
        imgs = next(batches).to(cfg.device)
        loss, _, _ = model(imgs)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"MAE loss is {loss.item()} at iteration {it}; lower --lr.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        lrs.append(lr)
        progress.step(it, loss=losses[-1], lr=lr)
        if cfg.save_every and (it + 1) % cfg.save_every == 0 and it + 1 < cfg.iters:
            _save(out, model, optimizer, it + 1, cfg, losses, lrs)

    _save(out, model, optimizer, cfg.iters, cfg, losses, lrs)
    plot_curve(losses, out / "loss.png", f"MAE pretraining loss ({cfg.model})")
    save_reconstructions(model, ImageFolder(cfg.data, eval_transform(cfg.img_size)),
                         out / "reconstruction.png", seed=cfg.seed)
    summary = {"model": cfg.model, "iters": cfg.iters, "images": len(dataset),
               "first_loss": losses[0], "final_loss": sum(losses[-10:]) / len(losses[-10:]),
               "train_time_s": round(progress.elapsed, 2), "checkpoint": str(out / "checkpoint-last.pth")}
    atomic_write_text(out / "metrics.json", json.dumps(
        {"summary": summary, "args": asdict(cfg), "loss": losses, "lr": lrs}, indent=1))
    logger.info("MAE pretraining done: loss %.4f -> %.4f in %.1f s; wrote %s",
                summary["first_loss"], summary["final_loss"], progress.elapsed, summary["checkpoint"])
    return summary


@torch.no_grad()
def reconstruct(model: MaskedAutoencoderViT, imgs: torch.Tensor, seed: int = 0):
    """Images ``(B, 3, H, W)`` (normalised) -> masked input and reconstruction, same layout.

    Visible patches are pasted back into the reconstruction; with ``norm_pix_loss`` predictions
    are de-normalised with each patch's own mean and variance, as the paper's figures.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(imgs.shape[0], model.grid_size[0] * model.grid_size[1], generator=generator)
    _, pred, mask = model(imgs, noise=noise.to(imgs.device))
    target = patchify(imgs, model.patch_size)
    if model.norm_pix_loss:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    keep = (1 - mask).unsqueeze(-1)
    p, grid = model.patch_size, model.grid_size
    masked = unpatchify(target * keep, p, grid)
    recon = unpatchify(target * keep + pred * (1 - keep), p, grid)
    return masked, recon, mask


def save_reconstructions(model: MaskedAutoencoderViT, dataset: ImageFolder, path: Path,
                         num: int = 4, seed: int = 0) -> None:
    """PNG with one row per image: original / masked / reconstruction (visible patches pasted)."""
    plt = pyplot()
    device = next(model.parameters()).device
    imgs = torch.stack([dataset[i] for i in range(min(num, len(dataset)))]).to(device)
    _, recon, mask = reconstruct(model, imgs, seed)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    to_rgb = lambda t: (t * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
    hidden = unpatchify(mask.unsqueeze(-1).expand(-1, -1, model.patch_size ** 2 * 3),
                        model.patch_size, model.grid_size).permute(0, 2, 3, 1).cpu().numpy()
    original = to_rgb(imgs)
    panels = [original, original * (1 - hidden) + 0.5 * hidden, to_rgb(recon)]
    titles = ["original", f"masked ({mask[0].mean().item():.0%})", "reconstruction"]
    fig, axes = plt.subplots(len(imgs), 3, figsize=(7.5, 2.5 * len(imgs)), squeeze=False)
    for row in range(len(imgs)):
        for col in range(3):
            ax = axes[row][col]
            ax.imshow(panels[col][row].clip(0, 1))
            ax.axis("off")
            if row == 0:
                ax.set_title(titles[col])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
