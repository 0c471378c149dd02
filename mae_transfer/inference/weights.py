"""Loading a whole trained model for inference: every tensor must fit (no silent skipping)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mae_transfer.checkpoints import read_checkpoint
from mae_transfer.errors import UserError


def model_state_from(checkpoint: Any, filename: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model's tensors of a Detectron2 (``model``) or MMEngine (``state_dict``) checkpoint."""
    state = checkpoint
    if isinstance(checkpoint, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(checkpoint.get(key), Mapping):
                state = checkpoint[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"Checkpoint {filename} holds no model state dict (no 'model' or 'state_dict' of tensors); "
                        "pass a checkpoint written by tools/train_det.py or tools/train_seg.py.")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_trained_weights(model: nn.Module, filename: str | os.PathLike, *, unsafe: bool = False,
                         config_name: str = "the config") -> None:
    """Load a trained model's checkpoint into ``model``, refusing one that does not fit exactly.

    Raises:
        UserError: naming the file and the first tensor that is missing, extra or of another shape.
        CheckpointReadError: when the file is missing, truncated or unsafe to unpickle.
    """
    state = model_state_from(read_checkpoint(filename, unsafe=unsafe), filename)
    expected = model.state_dict()
    fix = f"the weights were trained with another config than {config_name}; pass the matching run or config"
    for key, tensor in expected.items():
        if key not in state:
            raise UserError(f"Checkpoint {filename} does not fit {config_name}: it lacks {key}; {fix}.")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(f"Checkpoint {filename} does not fit {config_name}: {key} is {tuple(state[key].shape)} "
                            f"there but {tuple(tensor.shape)} in the model; {fix}.")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise UserError(f"Checkpoint {filename} does not fit {config_name}: it has {extra[0]}, which the model "
                        f"lacks ({len(extra)} extra tensors); {fix}.")
    model.load_state_dict(state, strict=True)


def checked_class_names(names: Sequence[str], num_classes: int) -> tuple[str, ...]:
    """``names`` as a tuple, when there is one per class the model predicts."""
    if len(names) != num_classes:
        raise UserError(f"The class list has {len(names)} names but the model predicts {num_classes} classes; "
                        "give one name per class, in class-id order.")
    return tuple(names)
