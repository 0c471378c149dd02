"""Detectron2 optimizer: layer-wise lr decay + freeze policy from ``mae_transfer.optim``.

Config keys (added by :func:`mae_transfer.det.config.add_vit_config`):
``SOLVER.OPTIMIZER`` ("ADAMW" | "SGD"), ``SOLVER.BASE_LR``, ``SOLVER.WEIGHT_DECAY``,
``SOLVER.BETAS`` (AdamW), ``SOLVER.MOMENTUM``/``NESTEROV`` (SGD), ``SOLVER.LAYER_DECAY``
(1.0 = off), ``SOLVER.WEIGHT_DECAY_RULE`` (which tensors get no weight decay; default
``"vitdet"``, the rule of Detectron2's ViTDet configs, see :mod:`mae_transfer.optim.layer_decay`),
``SOLVER.CLIP_GRADIENTS.*`` (Detectron2's gradient clipping) and ``MODEL.VIT.FREEZE`` (see
:mod:`mae_transfer.optim.partial`). Detectron2's ``WEIGHT_DECAY_NORM``/``WEIGHT_DECAY_BIAS``/
``BIAS_LR_FACTOR`` are not used (the ``vitdet`` rule is what ViTDet's LazyConfigs set).
"""
from __future__ import annotations

import torch
from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping

from mae_transfer.errors import ConfigError
from mae_transfer.optim import apply_freeze, find_backbone_prefix, param_groups

# The Detectron2 backbone ("backbone.") wraps the ViT ("backbone.net.") with the pyramid, so
# everything under "backbone." that is not the ViT is the neck frozen by ``linear_probe``.
NECK_PREFIX = "backbone."


def apply_cfg_freeze(cfg: CfgNode, model: torch.nn.Module) -> list[str]:
    """Apply ``MODEL.VIT.FREEZE`` to ``model`` (idempotent); returns the frozen names."""
    prefix = find_backbone_prefix(model)
    return apply_freeze(model, cfg.MODEL.VIT.FREEZE, backbone_prefix=prefix, neck_prefix=NECK_PREFIX)


def layer_decay_kwargs(cfg: CfgNode, model: torch.nn.Module) -> dict:
    """Keyword arguments of :func:`mae_transfer.optim.param_groups` / ``param_settings`` (no base_lr)."""
    return dict(
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        layer_decay=cfg.SOLVER.LAYER_DECAY,
        backbone_prefix=find_backbone_prefix(model),
        weight_decay_rule=cfg.SOLVER.WEIGHT_DECAY_RULE,
    )


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Apply ``MODEL.VIT.FREEZE`` to ``model``, then build the optimizer over its trainable params.

    Call it before the model is wrapped in DistributedDataParallel (``DefaultTrainer`` does).
    """
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "ADAMW":
        optimizer_cls, kwargs = torch.optim.AdamW, dict(betas=tuple(cfg.SOLVER.BETAS))
    elif name == "SGD":
        optimizer_cls = torch.optim.SGD
        kwargs = dict(momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)
    else:
        raise ConfigError(f"SOLVER.OPTIMIZER is {cfg.SOLVER.OPTIMIZER!r}; set it to 'ADAMW' or 'SGD'.")
    apply_cfg_freeze(cfg, model)
    groups = param_groups(model, base_lr=cfg.SOLVER.BASE_LR, **layer_decay_kwargs(cfg, model))
    optimizer_cls = maybe_add_gradient_clipping(cfg, optimizer_cls)
    return optimizer_cls(groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **kwargs)
