"""Fit converted ViT tensors to a target model's geometry and attention variant.

Given the checkpoint's ViT tensors (our names) and the target's state dict, this resizes
absolute position embeddings and relative position tables (through
:mod:`mae_transfer.models.pos_embed`, the one owner of that arithmetic), copies a shared BEiT
bias table into every block, and converts between ``qkv.bias`` and BEiT's ``q_bias``/``v_bias``.
Everything that changes is recorded for the load report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch
from torch import nn

from mae_transfer.models.naming import block_index
from mae_transfer.models.pos_embed import resize_abs_pos_embed, resize_beit_rel_pos_table, resize_rel_pos

Tensor = torch.Tensor
Shape = tuple[int, ...]
SHARED_BEIT_TABLE = "rel_pos_bias.relative_position_bias_table"
BLOCK_TABLE = "attn.relative_position_bias_table"


@dataclass
class Adapted:
    state_dict: dict[str, Tensor]
    resized: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def adapt_vit(src: Mapping[str, Tensor], target: Mapping[str, Tensor],
              vit: Optional[nn.Module] = None) -> Adapted:
    """Return ``src`` fitted to ``target`` (both ViT-relative names).

    Args:
        src: checkpoint ViT tensors in our names.
        target: the model's ViT state dict (shapes are what matter).
        vit: the model's ViT module, consulted for grid/window sizes a shape cannot tell
            (non-square grids); optional.
    """
    out = Adapted(dict(src))
    _expand_shared_beit_table(out, target)
    _convert_qkv_bias(out, target)
    for key, value in list(out.state_dict.items()):
        want = target.get(key)
        if want is None or want.shape == value.shape:
            continue
        new = _resize(key, value, want, vit, out.notes)
        if new is not None and new.shape == want.shape:
            out.state_dict[key] = new
            out.resized[key] = (tuple(value.shape), tuple(new.shape))
    return out


def _expand_shared_beit_table(out: Adapted, target: Mapping[str, Tensor]) -> None:
    """BEiT pretraining shares one bias table; per-block models get a copy in every block
    (what BEiT's semantic-segmentation code does at transfer)."""
    shared = out.state_dict.get(SHARED_BEIT_TABLE)
    if shared is None or SHARED_BEIT_TABLE in target:
        return
    blocks = [k for k in target if k == f"blocks.{block_index(k)}.{BLOCK_TABLE}"]
    if not blocks:
        return
    del out.state_dict[SHARED_BEIT_TABLE]
    for key in blocks:
        out.state_dict.setdefault(key, shared.clone())
    out.notes.append(f"{SHARED_BEIT_TABLE}: shared relative position bias copied to the "
                     f"{len(blocks)} blocks' tables")


def _convert_qkv_bias(out: Adapted, target: Mapping[str, Tensor]) -> None:
    """qkv.bias <-> BEiT q_bias/v_bias. Dropping a k bias is exact: it adds the same value to
    every key's score of one query, which softmax ignores."""
    sd = out.state_dict
    merged = split = 0
    for key in [k for k in sd if k.endswith(".attn.q_bias")]:
        block = key[: -len("q_bias")]
        if block + "qkv.bias" in target and block + "q_bias" not in target and block + "v_bias" in sd:
            q, v = sd.pop(block + "q_bias"), sd.pop(block + "v_bias")
            sd[block + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
            merged += 1
    for key in [k for k in sd if k.endswith(".attn.qkv.bias")]:
        block = key[: -len("qkv.bias")]
        if block + "q_bias" in target and block + "qkv.bias" not in target:
            q, _, v = sd.pop(key).chunk(3)
            sd[block + "q_bias"], sd[block + "v_bias"] = q, v
            split += 1
    if merged:
        out.notes.append(f"attn.q_bias/v_bias of {merged} blocks merged into attn.qkv.bias (k bias zero)")
    if split:
        out.notes.append(f"attn.qkv.bias of {split} blocks split into q_bias/v_bias "
                         f"(k bias dropped: softmax ignores it)")


def _resize(key: str, value: Tensor, want: Tensor, vit: Optional[nn.Module], notes: list[str]) -> Optional[Tensor]:
    if key == "pos_embed" and value.dim() == 3 and value.shape[-1] == want.shape[-1]:
        return _resize_pos_embed(value, want, vit, notes)
    if key.endswith((".rel_pos_h", ".rel_pos_w")) and value.shape[1:] == want.shape[1:]:
        return resize_rel_pos(value, want.shape[0])
    if key.endswith("relative_position_bias_table") and value.shape[1:] == want.shape[1:]:
        old = _beit_window(value.shape[0])
        new = _beit_window(want.shape[0]) or _module_window(vit, key)
        return resize_beit_rel_pos_table(value, old, new) if old and new else None
    return None


def _square_grid(length: int, prefix_options: tuple[int, ...]) -> Optional[tuple[int, tuple[int, int]]]:
    """First ``P`` in ``prefix_options`` with ``length - P`` a square -> ``(P, (s, s))``."""
    for prefix in prefix_options:
        side = math.isqrt(max(length - prefix, 0))
        if side > 0 and side * side == length - prefix:
            return prefix, (side, side)
    return None


def _target_pos_grid(want: Tensor, vit: Optional[nn.Module]) -> Optional[tuple[int, tuple[int, int]]]:
    length = want.shape[1]
    # our ViT stores pos_embed at the pretraining grid; timm at the model's grid
    grid = getattr(vit, "pretrain_grid", None) or getattr(getattr(vit, "patch_embed", None), "grid_size", None)
    if grid is not None:
        h, w = int(grid[0]), int(grid[1])
        if 0 <= length - h * w <= 2:
            return length - h * w, (h, w)
    prefix = getattr(vit, "num_prefix_tokens", None)
    return _square_grid(length, ((prefix,) if prefix is not None else ()) + (1, 0, 2))


def _resize_pos_embed(value: Tensor, want: Tensor, vit: Optional[nn.Module], notes: list[str]) -> Optional[Tensor]:
    """Bicubic resize of the grid part; prefix (cls) entries kept, dropped or zero-filled to
    match the target's count (DeiT's dist entry is the second one and is dropped first)."""
    src, dst = _square_grid(value.shape[1], (1, 0, 2)), _target_pos_grid(want, vit)
    if src is None or dst is None:
        return None
    (src_prefix, src_hw), (dst_prefix, dst_hw) = src, dst
    resized = resize_abs_pos_embed(value, dst_hw, num_prefix_tokens=src_prefix, old_hw=src_hw)
    prefix, grid = resized[:, :src_prefix], resized[:, src_prefix:]
    if src_prefix >= dst_prefix:
        prefix = prefix[:, :dst_prefix]
    else:
        prefix = torch.cat([prefix, value.new_zeros(1, dst_prefix - src_prefix, value.shape[2])], 1)
        notes.append("pos_embed: the checkpoint has no class-token entry (e.g. DeiT III); set to zero")
    return torch.cat([prefix, grid], dim=1)


def _beit_window(rows: int) -> Optional[tuple[int, int]]:
    """Square window whose BEiT table has ``rows`` rows: ``(2w - 1)^2 + 3``."""
    side = math.isqrt(max(rows - 3, 0))
    if side * side == rows - 3 and side % 2 == 1:
        return (side + 1) // 2, (side + 1) // 2
    return None


def _module_window(vit: Optional[nn.Module], key: str) -> Optional[tuple[int, int]]:
    if vit is None:
        return None
    try:
        module = vit.get_submodule(key.rsplit(".", 1)[0])
    except AttributeError:
        return None
    window = getattr(module, "window_size", None)
    return tuple(window) if isinstance(window, (tuple, list)) else None
