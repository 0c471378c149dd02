"""Conversions of DINOv2 and SAM checkpoints to timm's names (pure ``state_dict -> state_dict``).

Used by the ``dinov2`` / ``sam`` / ``timm_samvit`` rows of :data:`.layouts.LAYOUTS` before the keys
are routed; each function returns the converted dict and notes for the load report.

- Official DINOv2 hub files (``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``): ``pos_embed``
  ``(1, 1 + 37*37, C)`` (518 input), ``mask_token`` (iBOT, dropped later with its reason),
  ``blocks.i.ls{1,2}.gamma``, ``mlp.fc1/fc2`` or, for giant, ``mlp.w12/w3`` (packed SwiGLU). With
  registers (``register_tokens``) the official model adds ``pos_embed[:, 0]`` to the cls token and
  inserts the registers after it without a position; timm (and this project) store that as
  ``cls_token + pos_embed[:, 0]``, ``reg_token`` and a patch-only ``pos_embed``: the same numbers.
- Official SAM checkpoints (``sam_vit_{b,l,h}_*.pth``, ``image_encoder.*``) and timm ``samvit``:
  ``pos_embed`` ``(1, 64, 64, C)`` -> ``(1, 64*64, C)``; SAM's ``mlp.lin1/lin2`` -> ``mlp.fc1/fc2``.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

Tensor = torch.Tensor

_DINOV2_MLP = ((re.compile(r"\.mlp\.w12\."), ".mlp.fc1."), (re.compile(r"\.mlp\.w3\."), ".mlp.fc2."))
_SAM_MLP = ((re.compile(r"\.mlp\.lin1\."), ".mlp.fc1."), (re.compile(r"\.mlp\.lin2\."), ".mlp.fc2."))


def _rename(key: str, table) -> str:
    for pattern, replacement in table:
        key = pattern.sub(replacement, key)
    return key


def dinov2_hub_to_timm(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Official DINOv2 names -> timm's (``register_tokens`` -> ``reg_token`` with the cls position
    folded into ``cls_token``, ``mlp.w12/w3`` -> ``mlp.fc1/fc2``); other keys unchanged."""
    out = {_rename(k, _DINOV2_MLP): v for k, v in state_dict.items()}
    notes = []
    if any(k != _rename(k, _DINOV2_MLP) for k in state_dict):
        notes.append("mlp.w12/w3 (DINOv2 packed SwiGLU) renamed to mlp.fc1/fc2")
    if "register_tokens" in out:
        pos = out["pos_embed"]
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
        notes.append("DINOv2 registers: register_tokens -> reg_token, the cls entry of pos_embed "
                     "added to cls_token, pos_embed keeps the patch grid only (as timm)")
    return out, notes


def sam_to_timm(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """SAM image-encoder names (official, any prefix, or timm ``samvit``) -> ours: the
    ``(1, H, W, C)`` position table flattened to ``(1, H*W, C)``, ``mlp.lin1/lin2`` -> ``fc1/fc2``."""
    out, notes = {}, []
    for key, value in state_dict.items():
        new = _rename(key, _SAM_MLP)
        if key.endswith("pos_embed") and value.dim() == 4:
            h, w = value.shape[1:3]
            value = value.reshape(1, h * w, value.shape[3])
            notes.append(f"{key}: SAM's (1, {h}, {w}, C) table flattened to (1, {h * w}, C)")
        out[new] = value
    if any(".mlp.lin1." in k for k in state_dict):
        notes.append("mlp.lin1/lin2 (official SAM names) renamed to mlp.fc1/fc2")
    return out, notes
