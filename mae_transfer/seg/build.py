"""Build an MMSeg segmentor from a config name, path or loaded config: one entry for every caller.

    model = build_segmentor("ade20k_vitb_mae", {"model.backbone.depth": 4})

The pretrained backbone weights are not loaded here: MMEngine loads them in ``init_weights()``
when training starts (call it to load them).
"""
from __future__ import annotations

import copy
import os
from typing import Any, Mapping

from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS
from torch import nn

from .config import check_overrides, load_config


def build_segmentor(config: str | os.PathLike | Config, options: Mapping[str, Any] | None = None) -> nn.Module:
    """The segmentor (e.g. UperNet on the project's ViT) that ``tools/train_seg.py`` trains.

    Args:
        config: a ``configs/seg`` name (``"ade20k_vitb_mae"``), a path, or a loaded ``Config``
            (not modified).
        options: checked ``--cfg-options`` overrides, e.g. ``{"model.backbone.depth": 4}``.
    """
    if isinstance(config, Config):
        cfg = config
        if options:
            check_overrides(cfg, options)
            cfg = copy.deepcopy(cfg)
            cfg.merge_from_dict(dict(options))
    else:
        cfg = load_config(str(config), options)
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope") or "mmseg"):
        return MODELS.build(cfg.model)
