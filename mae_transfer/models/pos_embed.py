"""Position tables and their resizing: the one place that knows how to resample them.

Used on the fly by :mod:`mae_transfer.models.vit` (an input grid that differs from the grid the
tables were built for) and at load time by :mod:`mae_transfer.checkpoints` (a checkpoint trained at
another resolution). Three kinds of table exist:

- absolute position embeddings ``(1, P + H*W, C)`` with ``P`` prefix (cls) tokens — bicubic;
- decomposed relative position tables of ViTDet / MViTv2, ``(2*S - 1, head_dim)`` per axis — linear;
- BEiT relative position bias tables ``((2*Wh - 1) * (2*Ww - 1) + 3, heads)``: one entry per 2-d
  offset plus three for cls->token, token->cls and cls->cls — bicubic on the offset grid, the three
  extra entries kept.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Size2 = Union[int, Sequence[int]]

__all__ = [
    "to_2tuple",
    "resize_abs_pos_embed",
    "resize_rel_pos",
    "rel_pos_lookup",
    "resize_beit_rel_pos_table",
    "beit_relative_position_index",
    "beit_num_relative_distance",
]


def to_2tuple(size: Size2) -> Tuple[int, int]:
    """``14 -> (14, 14)``; ``(h, w) -> (h, w)``."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def resize_abs_pos_embed(
    pos_embed: torch.Tensor,
    new_hw: Size2,
    num_prefix_tokens: int,
    old_hw: Optional[Size2] = None,
    antialias: bool = False,
) -> torch.Tensor:
    """Resample an absolute position embedding to another patch grid (bicubic).

    Args:
        pos_embed: ``(1, P + h0*w0, C)``; the first ``P`` entries belong to prefix (cls) tokens.
        new_hw: target grid ``(H, W)`` (or one int for a square grid).
        num_prefix_tokens: ``P``; their entries are kept unchanged.
        old_hw: source grid ``(h0, w0)``; inferred as square when omitted.
        antialias: antialiased bicubic when shrinking, as timm's ``resample_abs_pos_embed``
            (its default, used for DINOv2 and SAM); False (default) as Detectron2 / MMSeg.

    Returns:
        ``(1, P + H*W, C)``. Interpolation is ``F.interpolate(mode="bicubic",
        align_corners=False)`` in float32 — without antialiasing the same numbers as Detectron2's
        ``get_abs_pos`` and MMSeg's ``resize_pos_embed``; the input is returned as is when the grid
        already matches.
    """
    new_h, new_w = to_2tuple(new_hw)
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_hw is None:
        side = math.isqrt(num_grid)
        if side * side != num_grid:
            raise ValueError(
                f"pos_embed has {num_grid} grid entries, which is not a square; pass old_hw."
            )
        old_h, old_w = side, side
    else:
        old_h, old_w = to_2tuple(old_hw)
        if old_h * old_w != num_grid:
            raise ValueError(f"pos_embed has {num_grid} grid entries, not {old_h}x{old_w}.")
    if (old_h, old_w) == (new_h, new_w):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, old_h, old_w, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=antialias
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def resize_rel_pos(rel_pos: torch.Tensor, new_len: int) -> torch.Tensor:
    """Resample a decomposed relative position table ``(L, C) -> (new_len, C)`` (linear).

    Same interpolation as Detectron2's ``get_rel_pos`` (``mode="linear", align_corners=False``);
    the input is returned as is when ``L == new_len``.
    """
    if rel_pos.shape[0] == new_len:
        return rel_pos
    resized = F.interpolate(
        rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=new_len, mode="linear"
    )
    return resized.reshape(-1, new_len).permute(1, 0)


def rel_pos_lookup(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """Per-pair embeddings ``R[i, j] = table[i - j + size - 1]`` for queries/keys along one axis.

    Args:
        rel_pos: ``(L, C)`` decomposed table; resized to ``2*size - 1`` rows if ``L`` differs.
        size: number of positions along the axis (query size == key size).

    Returns:
        ``(size, size, C)``.
    """
    table = resize_rel_pos(rel_pos, 2 * size - 1)
    coords = torch.arange(size, device=rel_pos.device)
    offsets = coords[:, None] - coords[None, :] + (size - 1)
    return table[offsets]


def beit_num_relative_distance(window: Size2) -> int:
    """Rows of a BEiT bias table for ``window``: ``(2*Wh - 1) * (2*Ww - 1) + 3``."""
    wh, ww = to_2tuple(window)
    return (2 * wh - 1) * (2 * ww - 1) + 3


def beit_relative_position_index(window: Size2, device=None) -> torch.Tensor:
    """Index into a BEiT bias table for every (query, key) pair, cls token first.

    Returns:
        ``(1 + Wh*Ww, 1 + Wh*Ww)`` long tensor. Pairs of grid tokens index their 2-d offset
        (row-major over ``(2*Wh - 1, 2*Ww - 1)``); row 0 (cls -> token) uses entry ``R - 3``, column 0
        (token -> cls) ``R - 2`` and the cls -> cls pair ``R - 1``, where ``R`` is the table length.
        Drop row and column 0 for a grid without a cls token.
    """
    wh, ww = to_2tuple(window)
    num_rel = beit_num_relative_distance((wh, ww))
    rows = torch.arange(wh, device=device).repeat_interleave(ww)
    cols = torch.arange(ww, device=device).repeat(wh)
    d_row = rows[:, None] - rows[None, :] + (wh - 1)
    d_col = cols[:, None] - cols[None, :] + (ww - 1)
    index = torch.empty((wh * ww + 1,) * 2, dtype=torch.long, device=device)
    index[1:, 1:] = d_row * (2 * ww - 1) + d_col
    index[0, :] = num_rel - 3
    index[:, 0] = num_rel - 2
    index[0, 0] = num_rel - 1
    return index


def resize_beit_rel_pos_table(
    table: torch.Tensor, old_window: Size2, new_window: Size2
) -> torch.Tensor:
    """Resample a BEiT relative position bias table to another window (bicubic on offsets).

    Args:
        table: ``((2*h0 - 1) * (2*w0 - 1) + 3, heads)``.
        old_window: ``(h0, w0)`` the table was built for.
        new_window: target ``(h, w)``.

    Returns:
        ``((2*h - 1) * (2*w - 1) + 3, heads)``: the offset grid resampled with
        ``F.interpolate(mode="bicubic", align_corners=False)`` (differentiable, so it also serves
        on the fly), the three cls entries unchanged. The input is returned when the windows match.
    """
    old_h, old_w = to_2tuple(old_window)
    new_h, new_w = to_2tuple(new_window)
    if table.shape[0] != beit_num_relative_distance((old_h, old_w)):
        raise ValueError(
            f"relative_position_bias_table has {table.shape[0]} rows, expected "
            f"{beit_num_relative_distance((old_h, old_w))} for a {old_h}x{old_w} window."
        )
    if (old_h, old_w) == (new_h, new_w):
        return table
    heads = table.shape[1]
    grid, extra = table[:-3], table[-3:]
    grid = grid.float().T.reshape(1, heads, 2 * old_h - 1, 2 * old_w - 1)
    grid = F.interpolate(
        grid, size=(2 * new_h - 1, 2 * new_w - 1), mode="bicubic", align_corners=False
    )
    grid = grid.reshape(heads, -1).T.to(table.dtype)
    return torch.cat([grid, extra], dim=0)
