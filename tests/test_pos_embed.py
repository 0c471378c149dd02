"""Position-table resizing against Detectron2 / timm and against the interpolation rule itself."""

from __future__ import annotations

import pytest
import torch

from mae_transfer.models.pos_embed import (
    rel_pos_lookup,
    resize_abs_pos_embed,
    resize_beit_rel_pos_table,
    resize_rel_pos,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_abs_pos_bicubic_passes_through_source_samples():
    """14 -> 42 (x3, align_corners=False): output (3m+1, 3n+1) sits exactly on source (m, n), where
    the cubic kernel is interpolating; the cls entry is kept."""
    pos = torch.randn(1, 1 + 14 * 14, 8)
    out = resize_abs_pos_embed(pos, (42, 42), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 42 * 42, 8)
    torch.testing.assert_close(out[:, :1], pos[:, :1])
    grid = out[0, 1:].view(42, 42, 8)
    torch.testing.assert_close(grid[1::3, 1::3], pos[0, 1:].view(14, 14, 8))


@pytest.mark.parametrize("new_hw", [(64, 64), (50, 76), (8, 10)])
def test_abs_pos_matches_detectron2(new_hw):
    """Same numbers as Detectron2's get_abs_pos (ViTDet's on-the-fly resize), 14x14 -> new grid."""
    from detectron2.modeling.backbone.utils import get_abs_pos

    pos = torch.randn(1, 197, 16)
    got = resize_abs_pos_embed(pos, new_hw, num_prefix_tokens=1)[:, 1:]
    expected = get_abs_pos(pos, True, new_hw).reshape(1, -1, 16)
    torch.testing.assert_close(got, expected)


def test_abs_pos_non_square_source_and_identity():
    pos = torch.randn(1, 6 * 9, 4)
    assert resize_abs_pos_embed(pos, (6, 9), 0, old_hw=(6, 9)) is pos
    out = resize_abs_pos_embed(pos, (12, 18), 0, old_hw=(6, 9))
    assert out.shape == (1, 12 * 18, 4)
    with pytest.raises(ValueError, match="not a square"):
        resize_abs_pos_embed(pos, (12, 18), 0)


@pytest.mark.parametrize("size", [7, 14, 50, 76])
def test_rel_pos_lookup_matches_detectron2(size):
    """A 127-row table (global block at 1024) read at other grids, as Detectron2's get_rel_pos."""
    from detectron2.modeling.backbone.utils import get_rel_pos

    table = torch.randn(127, 16)
    torch.testing.assert_close(rel_pos_lookup(table, size), get_rel_pos(size, size, table))
    assert resize_rel_pos(table, 127) is table


@pytest.mark.parametrize("old, new", [((14, 14), (32, 32)), ((14, 14), (7, 10)), ((4, 6), (4, 6))])
def test_beit_table_resize_matches_timm(old, new):
    """Offset grid bicubic-resampled, the 3 cls entries kept: timm's resize_rel_pos_bias_table_simple."""
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_simple

    rows = (2 * old[0] - 1) * (2 * old[1] - 1) + 3
    table = torch.randn(rows, 12)
    got = resize_beit_rel_pos_table(table, old, new)
    new_rows = (2 * new[0] - 1) * (2 * new[1] - 1) + 3
    assert got.shape == (new_rows, 12)
    torch.testing.assert_close(got[-3:], table[-3:])
    if old[0] == old[1]:  # timm infers a square source window
        torch.testing.assert_close(
            got, resize_rel_pos_bias_table_simple(table, new, (new_rows, 12))
        )
    with pytest.raises(ValueError, match="rows"):
        resize_beit_rel_pos_table(table[:-1], old, new)
