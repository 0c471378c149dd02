"""Build a Detectron2 model from a config name, path or loaded config: one entry for every caller.

    model = build_model("coco_vitb_mae", ["MODEL.VIT.WEIGHTS", ""], device="cpu")

Training (``DefaultTrainer.build_model``), inspection and the benchmarks all end in Detectron2's
``build_model``; this is that call with the project's config loading in front of it.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model as build_detectron2_model
from torch import nn

from .config import load_config


def build_model(config: str | os.PathLike | CfgNode, opts: Sequence = (),
                device: str | torch.device | None = "cpu") -> nn.Module:
    """A Detectron2 model (e.g. Mask R-CNN with a ViT backbone) as ``tools/train_det.py`` builds it.

    Args:
        config: a ``configs/det`` name (``"coco_vitb_mae"``), a yaml path, or a config from
            :func:`mae_transfer.det.load_config` (not modified).
        opts: ``KEY VALUE`` overrides, as after ``--`` on the command line.
        device: where the model lives (``MODEL.DEVICE``); None keeps the config's.

    ``MODEL.VIT.WEIGHTS`` is loaded while the backbone is built, as in training; pass
    ``("MODEL.VIT.WEIGHTS", "")`` for random weights.
    """
    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
        cfg.merge_from_list(list(opts))
    else:
        cfg = load_config(config, list(opts))
    if device is not None:
        cfg.MODEL.DEVICE = str(device)
    return build_detectron2_model(cfg)
