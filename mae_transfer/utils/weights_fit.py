"""Refuse a whole-model checkpoint of another architecture (both frameworks only log mismatches)."""
from __future__ import annotations

from typing import Any, Mapping

from mae_transfer.errors import CheckpointError


def check_weights_fit(model_state: Mapping[str, Any], checkpoint_state: Mapping[str, Any], *, filename: str,
                      option: str, backbone_option: str, config_hint: str, prefix: str = "backbone.") -> None:
    """Raise :class:`CheckpointError` when ``checkpoint_state`` does not fit ``model_state``.

    Fine-tuning from a model with another number of classes stays allowed (head tensors of other
    shapes are skipped and logged by the framework). Refused: a checkpoint with none of the model's
    parameters, and one whose ``prefix`` (backbone) tensors differ in shape or in number of blocks.

    Args:
        model_state / checkpoint_state: name -> tensor (a leading ``module.`` is ignored).
        filename: the checkpoint, for the message.
        option: the setting that named it (``MODEL.WEIGHTS``, ``load_from``), for the message.
        backbone_option: where a backbone-only pretrained checkpoint belongs instead.
        config_hint: what to change when the architecture differs.
    """
    names = {k[len("module."):] if k.startswith("module.") else k: v for k, v in checkpoint_state.items()}
    shared = [k for k in names if k in model_state]
    if not shared:
        raise CheckpointError(f"Checkpoint {filename} ({option}) has none of this model's parameters (its keys look "
                              f"like '{next(iter(names), '')}'); a backbone-only pretrained checkpoint goes in "
                              f"{backbone_option}.")
    for key in shared:
        if key.startswith(prefix) and tuple(names[key].shape) != tuple(model_state[key].shape):
            raise CheckpointError(f"Checkpoint {filename} ({option}) is for another architecture: {key} is "
                                  f"{tuple(names[key].shape)} there but {tuple(model_state[key].shape)} in the model; "
                                  f"{config_hint}.")
    extra = sorted(k for k in names if k.startswith(prefix) and k not in model_state)
    missing = sorted(k for k in model_state if k.startswith(prefix) and k not in names)
    if extra or missing:
        key, owner = (extra[0], "checkpoint") if extra else (missing[0], "model")
        raise CheckpointError(f"Checkpoint {filename} ({option}) is for another architecture: only the {owner} has "
                              f"{key}; {config_hint}.")
