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
of the ViT, e.g. ``"backbone.vit."``; found automatically), ``neck_prefix`` (frozen by
``linear_probe``; default ``"neck."``) and ``overrides`` (``{pattern: {"weight_decay", "lr_mult"}}``).

It is registered in MMEngine's root registry, so any scope (``default_scope="mmseg"`` included)
finds it; this module imports no MMSeg code.
"""
from __future__ import annotations

from torch import nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS

from mae_transfer.optim import apply_freeze, find_backbone_prefix, param_groups

_KEYS = ("layer_decay_rate", "num_layers", "freeze", "backbone_prefix", "neck_prefix", "overrides")


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="MAETransferOptimizerConstructor")
class MAETransferOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Applies the freeze policy, then builds the optimizer over layer-decay parameter groups."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        wrapped = hasattr(model, "module")
        model = model.module if wrapped else model
        cfg = dict(self.paramwise_cfg)
        unknown = set(cfg) - set(_KEYS)
        if unknown:
            raise ValueError(
                f"optim_wrapper.paramwise_cfg has unknown keys {sorted(unknown)} for "
                f"MAETransferOptimizerConstructor; valid keys: {', '.join(_KEYS)}."
            )
        if self.base_lr is None:
            raise ValueError("optim_wrapper.optimizer needs 'lr' for MAETransferOptimizerConstructor.")
        prefix = cfg.get("backbone_prefix") or find_backbone_prefix(model)
        trainable_before = [p.requires_grad for p in model.parameters()]
        apply_freeze(model, cfg.get("freeze"), backbone_prefix=prefix, neck_prefix=cfg.get("neck_prefix", "neck."))
        if wrapped and trainable_before != [p.requires_grad for p in model.parameters()]:
            raise RuntimeError(
                f"paramwise_cfg.freeze={cfg.get('freeze')!r} froze parameters of a model already wrapped "
                "for distributed training; apply the policy when the model is built "
                "(mae_transfer.optim.apply_freeze) or set model_wrapper_cfg.find_unused_parameters=True."
            )
        groups = param_groups(
            model,
            base_lr=self.base_lr,
            weight_decay=self.base_wd or 0.0,
            layer_decay=cfg.get("layer_decay_rate", 1.0),
            backbone_prefix=prefix,
            num_layers=cfg.get("num_layers"),
            overrides=cfg.get("overrides"),
        )
        optimizer = OPTIMIZERS.build({**self.optimizer_cfg, "params": groups})
        wrapper_cfg = {"type": "OptimWrapper", **self.optim_wrapper_cfg}
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
