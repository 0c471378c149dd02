"""BEiT-style pretraining loop: images in a folder -> ``checkpoint-last.pth`` a ViT loader reads.

"BEiT-style": BEiT's masked-image-modelling objective (blockwise masking of ~40% of the patches,
a mask token in place of their embeddings, cross-entropy on their visual tokens) with a
tokenizer learned here, a k-means codebook of patch features (:mod:`.tokenizer`), because BEiT's
DALL-E tokenizer is not available offline. The codebook is fitted on random crops of the same
images before training (a few seconds) and saved in the checkpoint, so a resumed run uses it.

Writes into the output directory: ``checkpoint-last.pth`` (``{'model', 'optimizer', 'iteration',
'args', 'history', 'tokenizer'}``, atomically, also every ``save_every`` iterations; ``model`` is
the ViT in timm names plus ``mask_token`` and ``lm_head.*``, which the checkpoint loader ignores
with their reason, so the file loads as an encoder through ``MODEL.VIT.WEIGHTS`` and
``model.backbone.pretrained``), ``metrics.json`` (loss, masked-token accuracy and lr per
iteration) and ``loss.png``.

Every iteration's randomness (which images, their crops, the masks) is a function of
``(seed, iteration)`` (:func:`~.common.batch_at`, :func:`~.common.step_seed`), so a resumed run
continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from mae_transfer.errors import ConfigError, NonFiniteLossError
from mae_transfer.models import PRESETS
from mae_transfer.models.beit_style import BEiTStyleViT, create_beit_style
from mae_transfer.utils.fileio import atomic_torch_save, atomic_write_text
from mae_transfer.utils.logger import get_logger

from .common import (
    ImageFolder,
    Progress,
    batch_at,
    build_optimizer,
    cosine_lr,
    plot_curve,
    set_lr,
    step_seed,
)
from .mae_trainer import pretrain_transform
from .masking import blockwise_masks
from .tokenizer import PatchKMeansTokenizer, chance_loss

logger = get_logger(__name__)

# ViT presets this loop can pretrain: global attention (not SAM's windows), no register tokens, and
# a patch side the tokenizer's 4x4 pooling divides (not DINOv2's 14).
PRESET_CHOICES = tuple(sorted(name for name, p in PRESETS.items() if not p.get("window_size")
                              and not p.get("num_reg_tokens") and p.get("patch_size", 16) % 4 == 0))
# Arguments that must match for a checkpoint to be resumed.
_ARCH_ARGS = ("model", "depth", "img_size", "vocab_size")


@dataclass
class BEiTStylePretrainConfig:
    """Arguments of :func:`pretrain_beit_style` (and of ``tools/pretrain_beit.py``)."""
    data: str
    output: str
    model: str = "vit_tiny_patch16"  # one of PRESET_CHOICES
    depth: Optional[int] = None  # override the preset's number of blocks (tests, quick runs)
    iters: int = 200
    batch_size: int = 16
    lr: float = 1e-3  # absolute peak lr; BEiT: 1.5e-3 at batch 2048 (ViT-B)
    weight_decay: float = 0.05
    warmup_iters: Optional[int] = None  # default: 10% of iters
    clip_grad: float = 3.0  # BEiT's gradient-norm clipping (0: off)
    drop_path: float = 0.0
    mask_ratio: float = 0.4  # BEiT: 75 of 196 patches
    min_mask_patches: Optional[int] = None  # smallest mask block; default scaled from BEiT's 16 of 196
    vocab_size: int = 256
    tokenizer_patches: int = 32768  # patches (of random crops) the k-means codebook is fitted on
    tokenizer_iters: int = 30  # Lloyd iterations
    img_size: int = 224
    seed: int = 0
    log_every: int = 10
    save_every: int = 100  # also write checkpoint-last.pth every N iterations (0 = only at the end)
    resume: bool = False  # continue from OUTPUT/checkpoint-last.pth when it exists
    device: str = "cpu"


def check_config(cfg: BEiTStylePretrainConfig) -> None:
    """Raise :class:`ConfigError` for settings that cannot work, before anything is loaded."""
    if not 0 < cfg.mask_ratio < 1:
        raise ConfigError(f"--mask-ratio must lie in (0, 1), got {cfg.mask_ratio}.")
    if not 2 <= cfg.vocab_size <= cfg.tokenizer_patches:
        raise ConfigError(f"--vocab-size must lie in [2, --tokenizer-patches = {cfg.tokenizer_patches}], "
                          f"got {cfg.vocab_size}.")
    if cfg.iters < 1 or cfg.batch_size < 1:
        raise ConfigError(f"--iters and --batch-size must be positive, got {cfg.iters} and {cfg.batch_size}.")


def build_model(cfg: BEiTStylePretrainConfig) -> BEiTStyleViT:
    """The ViT preset with mask token and LM head, position embedding stored at the training grid."""
    if cfg.model not in PRESET_CHOICES:
        raise ConfigError(f"ViT preset {cfg.model!r} (--model) cannot be pretrained BEiT-style here; choose one "
                          f"of {', '.join(PRESET_CHOICES)}.")
    overrides = dict(img_size=cfg.img_size, pretrain_img_size=cfg.img_size, drop_path=cfg.drop_path)
    if cfg.depth is not None:
        overrides["depth"] = cfg.depth
    return create_beit_style(cfg.model, cfg.vocab_size, **overrides)


@torch.no_grad()
def fit_tokenizer(dataset: ImageFolder, cfg: BEiTStylePretrainConfig, patch_size: int
                  ) -> tuple[PatchKMeansTokenizer, dict]:
    """k-means codebook on the patches of ``ceil(tokenizer_patches / L)`` random crops (the
    training augmentation, seeded); returns it and fit statistics."""
    start = time.perf_counter()
    per_image = (cfg.img_size // patch_size) ** 2
    num = math.ceil(cfg.tokenizer_patches / per_image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(cfg.seed, -1))
        crops = torch.stack([dataset[i % len(dataset)] for i in range(num)])
    tokenizer = PatchKMeansTokenizer.fit(crops, cfg.vocab_size, patch_size=patch_size,
                                         iters=cfg.tokenizer_iters, max_patches=cfg.tokenizer_patches, seed=cfg.seed)
    stats = {"patches": min(num * per_image, cfg.tokenizer_patches), "crops": num,
             "unigram_loss": tokenizer.unigram_entropy(crops), "fit_s": round(time.perf_counter() - start, 2)}
    logger.info("BEiT-style tokenizer: %d-token k-means codebook of %d-dim patch features from %d patches "
                "in %.1f s; token entropy %.3f nats (uniform %.3f)", cfg.vocab_size, tokenizer.codebook.shape[1],
                stats["patches"], stats["fit_s"], stats["unigram_loss"], chance_loss(cfg.vocab_size))
    return tokenizer, stats


def _save(out: Path, model, optimizer, iteration: int, cfg: BEiTStylePretrainConfig, history: dict,
          tokenizer: PatchKMeansTokenizer, token_stats: dict) -> None:
    atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "iteration": iteration, "args": asdict(cfg), "history": history,
                       "tokenizer": {**tokenizer.state_dict(), "fit": token_stats}},
                      out / "checkpoint-last.pth")


def _resume(path: Path, cfg: BEiTStylePretrainConfig, model, optimizer
            ) -> tuple[int, dict, PatchKMeansTokenizer, dict]:
    """Restore model, optimizer, history and tokenizer; returns (next iteration, history, tokenizer, stats)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = state.get("args", {})
    changed = [k for k in _ARCH_ARGS if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        raise ConfigError(f"{path} was made with other {', '.join(changed)} "
                          f"({', '.join(f'{k}={saved[k]}' for k in changed)}); use those values or another --output.")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    tokenizer = PatchKMeansTokenizer.from_state_dict(state["tokenizer"])
    logger.info("Resumed from %s at iteration %d", path, state["iteration"])
    history = {k: list(v) for k, v in state["history"].items()}
    return int(state["iteration"]), history, tokenizer, dict(state["tokenizer"].get("fit", {}))


def pretrain_beit_style(cfg: BEiTStylePretrainConfig) -> dict:
    """Run BEiT-style pretraining; returns a summary dict (also stored in ``metrics.json``).

    With ``cfg.resume`` an existing ``checkpoint-last.pth`` in the output directory is continued
    (model, optimizer, tokenizer, iteration and history), giving the same result as a run that
    was not interrupted.
    """
    check_config(cfg)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg).to(cfg.device)
    if cfg.img_size % model.patch_size:
        raise ConfigError(f"--img-size {cfg.img_size} is not a multiple of the patch size {model.patch_size}.")
    dataset = ImageFolder(cfg.data, pretrain_transform(cfg.img_size))
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.999))  # BEiT's betas
    checkpoint = out / "checkpoint-last.pth"
    start, history = 0, {"loss": [], "acc": [], "lr": []}
    if cfg.resume and checkpoint.is_file():
        start, history, tokenizer, token_stats = _resume(checkpoint, cfg, model, optimizer)
    else:
        tokenizer, token_stats = fit_tokenizer(dataset, cfg, model.patch_size)
    logger.info("BEiT-style pretraining %s on %d images from %s for %d iterations (batch %d, lr %.3g, "
                "mask %.0f%%, %d tokens)", cfg.model, len(dataset), cfg.data, cfg.iters, cfg.batch_size, cfg.lr,
                100 * cfg.mask_ratio, cfg.vocab_size)
    warmup = cfg.warmup_iters if cfg.warmup_iters is not None else max(cfg.iters // 10, 1)
    progress = Progress(cfg.iters, cfg.log_every, name="beit_style", start=start)
    model.train()
    for it in range(start, cfg.iters):
        lr = cosine_lr(it, cfg.iters, cfg.lr, warmup)
        set_lr(optimizer, lr)
        torch.manual_seed(step_seed(cfg.seed, it))  # crops, masks and drop path of this iteration
        imgs = batch_at(dataset, cfg.batch_size, cfg.seed, it).to(cfg.device)
        tokens = tokenizer.tokenize(imgs)
        mask = blockwise_masks(imgs.shape[0], model.grid_size, cfg.mask_ratio, cfg.min_mask_patches).to(cfg.device)
        logits = model(imgs, mask)
        target = tokens[mask]
        loss = F.cross_entropy(logits, target)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"BEiT-style loss is {loss.item()} at iteration {it}; lower --lr.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        history["loss"].append(loss.item())
        history["acc"].append((logits.argmax(1) == target).float().mean().item())
        history["lr"].append(lr)
        progress.step(it, loss=history["loss"][-1], acc=history["acc"][-1], lr=lr)
        if cfg.save_every and (it + 1) % cfg.save_every == 0 and it + 1 < cfg.iters:
            _save(out, model, optimizer, it + 1, cfg, history, tokenizer, token_stats)

    _save(out, model, optimizer, cfg.iters, cfg, history, tokenizer, token_stats)
    losses = history["loss"]
    plot_curve(losses, out / "loss.png", f"BEiT-style pretraining loss ({cfg.model}, {cfg.vocab_size} tokens)")
    last = slice(-10, None)
    ran = cfg.iters - start
    summary = {"model": cfg.model, "iters": cfg.iters, "images": len(dataset), "vocab_size": cfg.vocab_size,
               "first_loss": losses[0], "final_loss": sum(losses[last]) / len(losses[last]),
               "final_acc": sum(history["acc"][last]) / len(history["acc"][last]),
               "chance_loss": chance_loss(cfg.vocab_size), "unigram_loss": token_stats.get("unigram_loss"),
               "tokenizer_fit_s": token_stats.get("fit_s"), "train_time_s": round(progress.elapsed, 2),
               "s_per_iter": round(progress.elapsed / ran, 4) if ran > 0 else None,
               "checkpoint": str(checkpoint)}
    atomic_write_text(out / "metrics.json", json.dumps(
        {"summary": summary, "args": asdict(cfg), **history}, indent=1))
    logger.info("BEiT-style pretraining done: loss %.4f -> %.4f (token entropy %.3f, uniform %.3f), masked-token "
                "accuracy %.3f in %.1f s; wrote %s", summary["first_loss"], summary["final_loss"],
                summary["unigram_loss"] or float("nan"), summary["chance_loss"], summary["final_acc"],
                progress.elapsed, summary["checkpoint"])
    return summary
