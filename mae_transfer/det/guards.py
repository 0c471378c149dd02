"""Checks that turn bad detection inputs into one clear sentence, before a run starts.

:func:`check_inputs` (``tools/train_det.py``, before any process starts or any file is written):
checkpoint paths exist, ``--eval-only`` has weights, every COCO-format dataset the config names is
well formed (:mod:`mae_transfer.data.coco_check`); :func:`check_output_dir`: a new run does not
overwrite an earlier run's checkpoints. The checks made while running live where they act:
unreadable images in :class:`mae_transfer.det.data.CheckedMapper`, checkpoints of another
architecture in :class:`mae_transfer.det.checkpoint.AtomicCheckpointer`.
"""
from __future__ import annotations

import os

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

from mae_transfer.data.coco_check import check_coco_dataset
from mae_transfer.errors import UserError
from mae_transfer.utils.run_dir import is_local, pointer_target, refuse_earlier_run


def check_weights_paths(cfg: CfgNode, *, eval_only: bool, resume: bool) -> None:
    """``MODEL.WEIGHTS`` / ``MODEL.VIT.WEIGHTS`` exist; ``--eval-only`` has something to evaluate."""
    resuming = resume and pointer_target(cfg.OUTPUT_DIR) is not None
    if eval_only and not cfg.MODEL.WEIGHTS and not resuming:
        raise UserError("--eval-only evaluates MODEL.WEIGHTS, which is empty; pass MODEL.WEIGHTS "
                        "path/to/model_final.pth (or --resume to evaluate the last checkpoint in OUTPUT_DIR).")
    if not resuming and is_local(cfg.MODEL.WEIGHTS) and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise UserError(f"MODEL.WEIGHTS file '{cfg.MODEL.WEIGHTS}' does not exist; check the path "
                        "(a backbone-only pretrained checkpoint goes in MODEL.VIT.WEIGHTS).")
    vit_weights = cfg.MODEL.VIT.WEIGHTS  # not read by --eval-only (MODEL.WEIGHTS replaces them)
    if not eval_only and is_local(vit_weights) and not os.path.isfile(vit_weights):
        raise UserError(f"MODEL.VIT.WEIGHTS file '{vit_weights}' does not exist; check the path.")


def check_output_dir(cfg: CfgNode, *, eval_only: bool, resume: bool) -> None:
    """A new training run must not overwrite the checkpoints of an earlier run in ``OUTPUT_DIR``."""
    if not eval_only and not resume:
        refuse_earlier_run(cfg.OUTPUT_DIR, what="OUTPUT_DIR", choose="OUTPUT_DIR")


def check_inputs(cfg: CfgNode, *, eval_only: bool = False, resume: bool = False) -> None:
    """Weights paths and COCO datasets, before anything reads them; raises :class:`UserError`.

    Call :func:`check_output_dir` too, once every other problem had its chance to be reported.
    """
    check_weights_paths(cfg, eval_only=eval_only, resume=resume)
    if not cfg.DATALOADER.CHECK_DATASETS:
        return
    names = ([] if eval_only else list(cfg.DATASETS.TRAIN)) + list(cfg.DATASETS.TEST)
    for name in dict.fromkeys(names):
        meta = MetadataCatalog.get(name)
        json_file, image_root = meta.get("json_file"), meta.get("image_root")
        if json_file and image_root:
            check_coco_dataset(json_file, image_root, masks=cfg.MODEL.MASK_ON, dataset=name)
