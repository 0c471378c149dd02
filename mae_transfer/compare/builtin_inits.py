"""The built-in ``mae``, ``beit_style`` and ``supervised`` initialisations: tiny ViTs pretrained on
the generated data.

All encoders are ViT-Ti/16 (the demo configs' backbone) trained on the built-in pretraining
images (``builtin_pretrain``: 1024 generated scenes, not the fine-tuning images), through the
public pretraining entry points (:func:`mae_transfer.pretrain.pretrain_mae`,
:func:`mae_transfer.pretrain.pretrain_beit_style`, :func:`mae_transfer.pretrain.pretrain_supervised`).
Checkpoints land in ``<pretrain_dir>/<name>/checkpoint-last.pth`` and are reused when their
recipe is unchanged.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mae_transfer.errors import MissingFileError
from mae_transfer.utils.logger import get_logger

logger = get_logger(__name__)

RECIPE_FILE = "builtin_recipe.json"


@dataclass(frozen=True)
class PretrainRecipe:
    """Iterations and sizes of the built-in pretraining (defaults: the `make demo` budget).

    Sized for the demo's budget (about 6 minutes of pretraining in all on 2 CPU cores), which is
    short: these encoders are far from converged, and the demo says so.
    MAE: 75% masking, normalised-pixel loss, 128 px random resized crops (8x8 patches), batch 32,
    lr 1.5e-3 with warmup and cosine decay; 300 iterations = 9 epochs of the 1024 pool images (about
    0.4 s per iteration on 2 CPU cores).
    BEiT-style: BEiT's masked image modelling with 256 k-means visual tokens fitted on the same
    images (:mod:`mae_transfer.pretrain.beit_trainer`), 40% blockwise masking, 128 px, batch 32,
    lr 1.5e-3; every token goes through the encoder, so an iteration costs about twice MAE's (0.91
    vs 0.45 CPU seconds with one thread, measured side by side), hence 150 iterations for about
    MAE's wall time (plus a few seconds of tokenizer fitting).
    Supervised: object-crop classification of the pool's labelled objects (~3600 crops), 64 px,
    batch 32, 200 iterations (about 0.35 s per iteration).
    """
    mae_iters: int = 300
    mae_batch_size: int = 32
    mae_lr: float = 1.5e-3
    mae_img_size: int = 128
    beit_iters: int = 150
    beit_batch_size: int = 32
    beit_lr: float = 1.5e-3
    beit_img_size: int = 128
    beit_vocab_size: int = 256
    sup_iters: int = 200
    sup_batch_size: int = 32
    sup_lr: float = 1e-3
    sup_img_size: int = 64
    seed: int = 0

    def part(self, name: str) -> dict:
        """The fields that define one built-in's checkpoint (to tell whether it is up to date)."""
        prefix = {"mae": "mae_", "beit_style": "beit_", "supervised": "sup_"}[name]
        return {k: v for k, v in asdict(self).items() if k.startswith(prefix) or k == "seed"}


def _pretrain_mae(out: Path, recipe: PretrainRecipe) -> dict:
    from mae_transfer.data import builtin_image_dir
    from mae_transfer.pretrain import MAEPretrainConfig, pretrain_mae

    return pretrain_mae(MAEPretrainConfig(
        data=str(builtin_image_dir("builtin_pretrain")), output=str(out), model="mae_vit_tiny_patch16",
        iters=recipe.mae_iters, batch_size=recipe.mae_batch_size, lr=recipe.mae_lr,
        img_size=recipe.mae_img_size, seed=recipe.seed, log_every=max(recipe.mae_iters // 20, 1),
        save_every=0))


def _pretrain_beit_style(out: Path, recipe: PretrainRecipe) -> dict:
    from mae_transfer.data import builtin_image_dir
    from mae_transfer.pretrain import BEiTStylePretrainConfig, pretrain_beit_style

    return pretrain_beit_style(BEiTStylePretrainConfig(
        data=str(builtin_image_dir("builtin_pretrain")), output=str(out), model="vit_tiny_patch16",
        iters=recipe.beit_iters, batch_size=recipe.beit_batch_size, lr=recipe.beit_lr,
        img_size=recipe.beit_img_size, vocab_size=recipe.beit_vocab_size, seed=recipe.seed,
        log_every=max(recipe.beit_iters // 20, 1), save_every=0))


def _pretrain_supervised(out: Path, recipe: PretrainRecipe) -> dict:
    from mae_transfer.data import builtin_dataset
    from mae_transfer.pretrain import SupPretrainConfig, pretrain_supervised

    train, val = builtin_dataset("builtin_pretrain"), builtin_dataset("builtin_coco_val")
    return pretrain_supervised(SupPretrainConfig(
        json=str(train.json_path), images=str(train.image_dir), output=str(out),
        val_json=str(val.json_path), val_images=str(val.image_dir), model="vit_tiny_patch16",
        iters=recipe.sup_iters, batch_size=recipe.sup_batch_size, lr=recipe.sup_lr,
        img_size=recipe.sup_img_size, seed=recipe.seed, log_every=max(recipe.sup_iters // 20, 1)))


PRETRAINERS = {"mae": _pretrain_mae, "beit_style": _pretrain_beit_style, "supervised": _pretrain_supervised}
TOOLS = {"mae": "mae", "beit_style": "beit", "supervised": "sup"}  # tools/pretrain_<tool>.py of each


def builtin_checkpoint(name: str, pretrain_dir: str | Path, recipe: PretrainRecipe | None = None,
                       create: bool = True) -> Path:
    """Path of the built-in ``name`` ("mae", "beit_style" or "supervised"), pretraining it first if needed.

    Raises:
        KeyError: unknown name. MissingFileError: missing and ``create`` is False.
    """
    if name not in PRETRAINERS:
        raise KeyError(f"no built-in initialisation {name!r}; built-ins are mae, beit_style, supervised, beit, random.")
    recipe = recipe or PretrainRecipe()
    out = Path(pretrain_dir) / name
    checkpoint = out / "checkpoint-last.pth"
    if is_current(name, out, recipe):
        logger.info("built-in %s: using %s", name, checkpoint)
        return checkpoint
    if not create:
        raise MissingFileError(f"built-in {name} checkpoint {checkpoint} is missing; run tools/demo.py "
                               f"(or tools/pretrain_{TOOLS[name]}.py) first.")
    start, cpu = time.perf_counter(), time.process_time()
    summary = PRETRAINERS[name](out, recipe)
    record = {"recipe": recipe.part(name), "summary": summary,
              "wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu, 1)}
    (out / RECIPE_FILE).write_text(json.dumps(record, indent=1))
    return checkpoint


def is_current(name: str, out: Path, recipe: PretrainRecipe) -> bool:
    """True when ``out`` holds a finished checkpoint made with this recipe."""
    try:
        stored = json.loads((out / RECIPE_FILE).read_text())["recipe"]
    except (OSError, ValueError, KeyError):
        return False
    return stored == recipe.part(name) and (out / "checkpoint-last.pth").is_file()
