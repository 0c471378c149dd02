"""BEiT's blockwise masking (Bao et al., "BEiT", 2021, Algorithm 1), for any patch grid.

Rectangular blocks are added until ``round(mask_ratio * h * w)`` patches are masked: each block has
a random area ``s`` in ``[min_patches, remaining]`` and aspect ratio ``r`` log-uniform in
``[min_aspect, 1 / min_aspect]``, ``a = sqrt(s * r)`` rows by ``b = sqrt(s / r)`` columns (rounded),
strictly smaller than the grid, at a random position; a block is kept only when it adds between 1
and ``remaining`` new patches (10 tries per block), so the count never overshoots.

BEiT's setting is a 14x14 grid, 75 of 196 patches (~0.4) and ``min_patches=16``. A 16-patch
minimum does not fit small grids (an 8x8 grid at 40% masks 26 patches), so by default the
minimum is scaled with the grid: ``max(1, round(16 * h * w / 196))`` (5 on 8x8, 1 on 2x2).
Where BEiT's loop stops early (no block fits in 10 tries) the remaining count is filled with
single random patches, so every image has exactly the requested number of masked patches.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from mae_transfer.errors import ConfigError

BEIT_GRID_PATCHES = 196  # BEiT's 14x14 grid, for which min_patches=16 was chosen
BEIT_MIN_PATCHES = 16


def default_min_patches(grid: tuple[int, int]) -> int:
    """BEiT's 16-patch minimum block, scaled by the number of patches relative to 14x14."""
    return max(1, round(BEIT_MIN_PATCHES * grid[0] * grid[1] / BEIT_GRID_PATCHES))


def _rand(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _add_block(mask: torch.Tensor, max_new: int, min_patches: int, log_aspect: tuple[float, float],
               generator: torch.Generator, tries: int = 10) -> int:
    """Try up to ``tries`` random blocks; mask the first that adds 1..``max_new`` patches.
    Returns how many patches were added (0: none fitted)."""
    h, w = mask.shape
    for _ in range(tries):
        area = _rand(generator, min(min_patches, max_new), max_new)
        aspect = math.exp(_rand(generator, *log_aspect))
        bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if not (0 < bh < h and 0 < bw < w):  # BEiT: a block is strictly smaller than the grid
            continue
        top, left = _randint(generator, 0, h - bh), _randint(generator, 0, w - bw)
        block = mask[top:top + bh, left:left + bw]
        new = bh * bw - int(block.sum())
        if 0 < new <= max_new:
            block.fill_(True)
            return new
    return 0


def blockwise_mask(grid: tuple[int, int], mask_ratio: float = 0.4, min_patches: Optional[int] = None,
                   min_aspect: float = 0.3, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One BEiT blockwise mask: ``(h * w,)`` bool, True = masked, row-major like the ViT's tokens.

    Args:
        grid: ``(h, w)`` patch grid.
        mask_ratio: share of patches to mask; exactly ``round(mask_ratio * h * w)`` are masked.
        min_patches: smallest block area; default :func:`default_min_patches`.
        min_aspect: blocks' aspect ratio lies in ``[min_aspect, 1 / min_aspect]``.
        generator: random source (default: torch's global generator).
    """
    h, w = grid
    if not 0 < mask_ratio < 1:
        raise ConfigError(f"mask_ratio must lie in (0, 1), got {mask_ratio}; fix --mask-ratio.")
    if not 0 < min_aspect <= 1:
        raise ConfigError(f"min_aspect must lie in (0, 1], got {min_aspect}.")
    generator = generator if generator is not None else torch.default_generator
    target = max(1, min(h * w - 1, round(mask_ratio * h * w)))
    min_patches = default_min_patches(grid) if min_patches is None else min_patches
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    mask = torch.zeros(h, w, dtype=torch.bool)
    count = 0
    while count < target:
        added = _add_block(mask, target - count, min_patches, log_aspect, generator)
        if added == 0:
            break
        count += added
    if count < target:  # BEiT stops here; fill up so every image has the same number of targets
        free = torch.nonzero(~mask.flatten()).flatten()
        pick = free[torch.randperm(free.numel(), generator=generator)[:target - count]]
        mask.view(-1)[pick] = True
    return mask.flatten()


def blockwise_masks(batch: int, grid: tuple[int, int], mask_ratio: float = 0.4,
                    min_patches: Optional[int] = None, min_aspect: float = 0.3,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(batch, h * w)`` bool: one :func:`blockwise_mask` per image."""
    return torch.stack([blockwise_mask(grid, mask_ratio, min_patches, min_aspect, generator)
                        for _ in range(batch)])
