"""MMEngine optimizer-wrapper constructor: layer-wise lr decay + freeze policy from ``mae_transfer.optim``.

Use in an MMSeg config::

    optim_wrapper = dict(
        type="OptimWrapper",
        optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
        constructor="MAETransferOptimizerConstructor",
        paramwise_cfg=dict(layer_decay_rate=0.65, freeze="last_k_blocks:4"),
    )

``paramwise_cfg`` keys (all optional): ``layer_decay_rate`` (1.0 = off), ``num_layers`` (ViT
depth; inferred), ``freeze`` (see :mod:`mae_transfer.optim.partial`), ``backbone_prefix`` (path
of the ViT, e.g. ``"backbone.net."``; found automatically), ``neck_prefix`` (frozen by
``linear_probe``; default ``"neck."``), ``weight_decay_rule`` (which tensors get no weight decay;
default ``"beit"``, the rule of MMSeg's ``LayerDecayOptimizerConstructor`` and BEiT's segmentation
code as they run, see :mod:`mae_transfer.optim.layer_decay`) and ``overrides``
(``{pattern: {"weight_decay", "lr_mult"}}``).

It is registered in MMEngine's root registry, so any scope (``default_scope="mmseg"`` included)
finds it; this module imports no MMSeg code. Under DistributedDataParallel the freeze policy must
be applied before the model is wrapped: call :func:`apply_paramwise_freeze` when building it
(``mae_transfer.seg.runner`` does); the constructor then finds nothing left to freeze.
"""
from __future__ import annotations

from typing import Mapping

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from mae_transfer.errors import ConfigError
from mae_transfer.optim import apply_freeze, find_backbone_prefix, param_groups

PARAMWISE_KEYS = (
    "layer_decay_rate", "num_layers", "freeze", "backbone_prefix", "neck_prefix", "weight_decay_rule", "overrides",
)
DEFAULT_WEIGHT_DECAY_RULE = "beit"


def _checked(paramwise_cfg: Mapping | None) -> dict:
    cfg = dict(paramwise_cfg or {})
    unknown = set(cfg) - set(PARAMWISE_KEYS)
    if unknown:
        raise ConfigError(
            f"optim_wrapper.paramwise_cfg has unknown keys {sorted(unknown)} for "
            f"MAETransferOptimizerConstructor; valid keys: {', '.join(PARAMWISE_KEYS)}."
        )
    return cfg


def apply_paramwise_freeze(model: nn.Module, paramwise_cfg: Mapping | None) -> list[str]:
    """Apply ``paramwise_cfg.freeze`` to an (unwrapped) segmentor; returns the frozen names."""
    cfg = _checked(paramwise_cfg)
    prefix = cfg.get("backbone_prefix") or find_backbone_prefix(model)
    return apply_freeze(model, cfg.get("freeze"), backbone_prefix=prefix, neck_prefix=cfg.get("neck_prefix", "neck."))


def layer_decay_kwargs(model: nn.Module, optimizer_cfg: Mapping, paramwise_cfg: Mapping | None) -> dict:
    """Keyword arguments of :func:`mae_transfer.optim.param_groups` / ``param_settings`` (no base_lr)."""
    cfg = _checked(paramwise_cfg)
    return dict(
        weight_decay=optimizer_cfg.get("weight_decay") or 0.0,
        layer_decay=cfg.get("layer_decay_rate", 1.0),
        backbone_prefix=cfg.get("backbone_prefix") or find_backbone_prefix(model),
        num_layers=cfg.get("num_layers"),
        weight_decay_rule=cfg.get("weight_decay_rule", DEFAULT_WEIGHT_DECAY_RULE),
        overrides=cfg.get("overrides"),
    )


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="MAETransferOptimizerConstructor")
class MAETransferOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Applies the freeze policy, then builds the optimizer over layer-decay parameter groups."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        wrapped = hasattr(model, "module")
        model = model.module if wrapped else model
        if self.base_lr is None:
            raise ConfigError("optim_wrapper.optimizer needs 'lr' for MAETransferOptimizerConstructor.")
        trainable_before = [p.requires_grad for p in model.parameters()]
        apply_paramwise_freeze(model, self.paramwise_cfg)
        if wrapped and trainable_before != [p.requires_grad for p in model.parameters()]:
            raise RuntimeError(
                f"paramwise_cfg.freeze={self.paramwise_cfg.get('freeze')!r} froze parameters of a model "
                "already wrapped for distributed training; apply it when the model is built "
                "(mae_transfer.seg.optimizer.apply_paramwise_freeze, as MAETransferRunner does)."
            )
        groups = param_groups(
            model, base_lr=self.base_lr, **layer_decay_kwargs(model, self.optimizer_cfg, self.paramwise_cfg)
        )
        optimizer = OPTIMIZERS.build({**self.optimizer_cfg, "params": groups})
        wrapper_cfg = {"type": "OptimWrapper", **self.optim_wrapper_cfg}
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
