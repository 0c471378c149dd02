"""Layer-wise lr decay and partial fine-tuning, shared by the Detectron2 and MMSeg glue (pure torch)."""
from .layer_decay import (
    WEIGHT_DECAY_RULES,
    check_weight_decay_rule,
    find_backbone_prefix,
    get_layer_id,
    infer_num_layers,
    param_groups,
    param_settings,
)
from .partial import FreezePolicy, apply_freeze, frozen_parameter_names

__all__ = [
    "WEIGHT_DECAY_RULES",
    "check_weight_decay_rule",
    "find_backbone_prefix",
    "get_layer_id",
    "infer_num_layers",
    "param_groups",
    "param_settings",
    "FreezePolicy",
    "apply_freeze",
    "frozen_parameter_names",
]
