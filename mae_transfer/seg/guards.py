"""Checks that turn bad segmentation inputs into one clear sentence, before a run starts if possible.

:func:`check_inputs` (``tools/train_seg.py``, before the Runner is built or any file written): the
launcher's environment, every component's keys (:mod:`mae_transfer.seg.config_check`), checkpoint
paths (read safely once), image/label pairs of ADE20K-layout folders, and an earlier run's
checkpoints in the work dir (never overwritten by a new run). It also passes ``--unsafe-load`` on to
the backbone's pretrained weights and arms the checks made while running: the per-sample transforms
(:mod:`mae_transfer.seg.transforms`) and the checkpoint-architecture hook
(:class:`mae_transfer.seg.checkpoint_hooks.CheckpointFitHook`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from mmengine.config import Config

from mae_transfer.checkpoints import read_checkpoint
from mae_transfer.errors import UserError
from mae_transfer.utils.run_dir import is_local, refuse_earlier_run

from .config_check import check_component_keys
from .transforms import add_sample_checks, dataset_configs

_LAUNCHER_ENV = {"pytorch": ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"),
                 "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST")}


def check_inputs(cfg: Config, *, eval_only: bool = False, resume: bool = False,
                 skip_unreadable: bool = False) -> None:
    """Check (and arm the checks of) one run's config; raises :class:`UserError`."""
    check_launcher(cfg.get("launcher", "none"))
    check_component_keys(cfg)
    _pass_unsafe_load_to_backbone(cfg)
    check_checkpoint_paths(cfg, eval_only=eval_only)
    loaders = ["test_dataloader"] if eval_only else ["train_dataloader", "val_dataloader"]
    for key in loaders:
        for dataset in dataset_configs((cfg.get(key) or {}).get("dataset")):
            check_image_label_pairs(dataset, key)
    add_sample_checks(cfg, skip_unreadable=skip_unreadable)
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(isinstance(h, Mapping) and h.get("type") == "CheckpointFitHook" for h in hooks):
        cfg.custom_hooks = hooks + [dict(type="CheckpointFitHook")]
    if not eval_only and not resume:
        check_work_dir(cfg.work_dir)


def check_launcher(launcher: str) -> None:
    missing = [name for name in _LAUNCHER_ENV.get(launcher, ()) if name not in os.environ]
    if missing:
        how = ("start it with python -m torch.distributed.run --nproc_per_node N tools/train_seg.py ... "
               "--launcher pytorch" if launcher == "pytorch" else "start it with srun")
        raise UserError(f"--launcher {launcher} needs the environment variable {missing[0]}, which is not set; "
                        f"{how} (or use --launcher none for one process).")


def check_work_dir(work_dir: str | os.PathLike) -> None:
    """A new training run must not overwrite the checkpoints of an earlier run in ``work_dir``."""
    refuse_earlier_run(work_dir, what="Work dir", choose="--work-dir")


def _backbone(cfg: Config) -> Mapping | None:
    backbone = (cfg.get("model") or {}).get("backbone")
    return backbone if isinstance(backbone, Mapping) and backbone.get("type") == "MAETransferViT" else None


def _pass_unsafe_load_to_backbone(cfg: Config) -> None:
    backbone = _backbone(cfg)
    if cfg.get("unsafe_load") and backbone is not None:
        backbone["unsafe_load"] = True


def check_checkpoint_paths(cfg: Config, *, eval_only: bool) -> None:
    """The backbone's pretrained checkpoint and ``load_from`` exist and read safely (once, here)."""
    backbone = _backbone(cfg) or {}
    pretrained = backbone.get("pretrained") or (backbone.get("init_cfg") or {}).get("checkpoint")
    if is_local(pretrained) and not Path(pretrained).is_file():
        raise UserError(f"Pretrained backbone checkpoint {pretrained} (model.backbone.pretrained) does not exist; "
                        "check the path.")
    load_from = cfg.get("load_from")
    if is_local(load_from) and not Path(load_from).is_file():
        option = "--eval-only" if eval_only else "load_from"
        raise UserError(f"Checkpoint {load_from} ({option}) does not exist; check the path.")
    for path in (pretrained, load_from):  # truncated or code-running files: refused before the run starts
        if is_local(path):
            read_checkpoint(path, unsafe=bool(cfg.get("unsafe_load")))


def check_image_label_pairs(dataset: Mapping, loader: str) -> None:
    """Every image of a folder-based dataset has its label map (same relative name, label suffix)."""
    prefix = dataset.get("data_prefix") or {}
    if not prefix.get("img_path") or not prefix.get("seg_map_path") or dataset.get("ann_file"):
        return
    root = Path(dataset.get("data_root") or "")
    image_dir, label_dir = root / prefix["img_path"], root / prefix["seg_map_path"]
    if not image_dir.is_dir() or not label_dir.is_dir():
        return  # reported by mae_transfer.seg.config.check_dataset_paths
    img_suffix, seg_suffix = dataset.get("img_suffix", ".jpg"), dataset.get("seg_map_suffix", ".png")
    images = sorted(p for p in image_dir.rglob(f"*{img_suffix}") if p.is_file())
    if not images:
        raise UserError(f"No *{img_suffix} images in {image_dir} ({loader}); put the images there or set the "
                        "dataset's img_suffix.")

    def label_of(image: Path) -> Path:
        return (label_dir / image.relative_to(image_dir)).with_name(image.name[: -len(img_suffix)] + seg_suffix)

    unlabelled = [p for p in images if not label_of(p).is_file()]
    if unlabelled:
        first = unlabelled[0]
        expected = label_of(first)
        raise UserError(f"{len(unlabelled)} of {len(images)} images in {image_dir} ({loader}) have no label map "
                        f"(first: {first.name}, expected {expected}); add the label maps or remove those images.")
