"""Scaled dot-product attention with an additive position bias.

``attention(q, k, v, bias=..., rel_h=..., rel_w=...)`` computes
``softmax(q k^T * scale + bias + rel_h[..., :, None] + rel_w[..., None, :]) v``.

- On CUDA the summed bias goes to ``F.scaled_dot_product_attention`` as its ``attn_mask``; the
  memory-efficient kernel also returns the bias gradient.
- On CPU PyTorch's fused (flash) kernel accepts a bias but cannot differentiate it, and falls back
  to the unfused path (every attention matrix kept for backward) as soon as the bias needs a
  gradient — which it always does when relative position tables are trained. :class:`_CpuBiasedSDPA`
  keeps the fused kernel for the forward (saving only the output and the log-sum-exp), never
  keeps an ``(N, N)`` tensor between forward and backward, and in backward recomputes the
  attention probabilities to get the gradients of ``q, k, v`` and of the bias terms. Both passes
  walk over blocks of at most ``_BLOCK_ELEMENTS`` logits (whole windows, heads, or rows of
  queries), small enough to stay in cache: the bias is never materialised beyond one block, and the
  element-wise work of the backward runs on cached data.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["attention", "expand_decomposed"]

# Attention logits per block of the CPU path (8 MiB in float32): measured fastest on ViT-B global
# blocks at 1024 (4096 tokens) among 2^19..2^24.
_BLOCK_ELEMENTS = 1 << 21

Block = Tuple[slice, slice, slice]  # (batch, heads, query rows)


def expand_decomposed(
    rel_h: torch.Tensor, rel_w: torch.Tensor, scratch: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``(B, n, hq, w, h)`` and ``(B, n, hq, w, w)`` -> ``(B, n, hq*w, h*w)`` bias (one allocation,
    or written into the front of the flat ``scratch`` tensor).

    ``hq`` query rows of the grid (all ``h`` of them, or a block of rows); keys cover the grid.
    """
    b, n, hq, w, h = rel_h.shape
    wk = rel_w.shape[-1]
    if scratch is None:
        # contiguous factors make the broadcast sum contiguous, so the final reshape is a view
        bias = rel_h.contiguous().unsqueeze(-1) + rel_w.contiguous().unsqueeze(-2)
    else:
        bias = torch.add(rel_h.unsqueeze(-1), rel_w.unsqueeze(-2), out=_take(scratch, (b, n, hq, w, h, wk)))
    return bias.view(b, n, hq * w, h * wk)


def _take(scratch: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """The front of the flat ``scratch`` as a contiguous tensor of ``shape``."""
    return scratch[: math.prod(shape)].view(shape)


def _blocks(batch: int, heads: int, n: int, row_unit: int) -> Iterator[Block]:
    """Blocks covering ``(batch, heads, n queries)`` with at most ``_BLOCK_ELEMENTS`` logits each:
    several batch entries, several heads, or rows of queries (a multiple of ``row_unit``)."""
    per_head = n * n
    everything = slice(None)
    if heads * per_head <= _BLOCK_ELEMENTS:
        step = max(1, _BLOCK_ELEMENTS // (heads * per_head))
        for b0 in range(0, batch, step):
            yield slice(b0, min(batch, b0 + step)), everything, everything
    elif per_head <= _BLOCK_ELEMENTS:
        step = _BLOCK_ELEMENTS // per_head
        for b0 in range(batch):
            for h0 in range(0, heads, step):
                yield slice(b0, b0 + 1), slice(h0, min(heads, h0 + step)), everything
    else:
        rows = max(1, _BLOCK_ELEMENTS // (n * row_unit)) * row_unit
        for b0 in range(batch):
            for h0 in range(heads):
                for r0 in range(0, n, rows):
                    yield slice(b0, b0 + 1), slice(h0, h0 + 1), slice(r0, min(n, r0 + rows))


def _grid_rows(rows: slice, width: int) -> slice:
    """Query-token rows ``rows`` (whole grid rows) -> grid-row slice."""
    if rows.start is None:
        return rows
    return slice(rows.start // width, rows.stop // width)


def _bias_index(bias: torch.Tensor, block: Block) -> Tuple[slice, slice, slice]:
    """Index of a block in a bias that may broadcast over batch and/or heads."""
    bs, hs, rows = block
    return (
        bs if bias.shape[0] > 1 else slice(None),
        hs if bias.shape[1] > 1 else slice(None),
        rows,
    )


def _bias_block(
    rel_h: Optional[torch.Tensor],
    rel_w: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    block: Block,
    lse: Optional[torch.Tensor] = None,
    scratch: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The summed bias of one block, ``(b, h, rows, N)``.

    With ``lse`` (backward) it is ``bias - lse[..., None]``, written into ``scratch`` (a flat tensor
    reused across blocks: a fresh block-sized allocation costs more than the sum itself) or a new
    tensor; without, a bias-only block may be a broadcasting view.
    """
    bs, hs, rows = block
    if rel_h is not None:
        grid_rows = _grid_rows(rows, rel_h.shape[3])
        part_h = rel_h[bs, hs, grid_rows]
        if lse is not None:  # fold the row constant into the small factor
            part_h = part_h - lse[bs, hs, rows].view(part_h.shape[:-1] + (1,)).to(part_h.dtype)
        out = expand_decomposed(part_h, rel_w[bs, hs, grid_rows], scratch)
        if bias is not None:
            out.add_(bias[_bias_index(bias, block)])
        return out
    out = bias[_bias_index(bias, block)]  # a view (may broadcast) without lse
    if lse is not None:
        row_constant = lse[bs, hs, rows].unsqueeze(-1).to(out.dtype)
        shape = torch.broadcast_shapes(out.shape, row_constant.shape)
        out = torch.sub(out, row_constant, out=_take(scratch, shape) if scratch is not None else None)
    return out


def _scratch(q: torch.Tensor, n_keys: int, row_unit: int) -> torch.Tensor:
    """A flat buffer for the largest block of logits: the first (only a last one may be smaller)."""
    batch, heads, n, _ = q.shape
    bs, hs, rows = next(_blocks(batch, heads, n, row_unit))
    return q.new_empty(len(range(batch)[bs]) * len(range(heads)[hs]) * len(range(n)[rows]) * n_keys)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``(b, h, n, d) -> (b*h, n, d)`` (a copy only when the view is impossible)."""
    return t.reshape((-1,) + tuple(t.shape[2:]))


class _CpuBiasedSDPA(torch.autograd.Function):
    """Fused-kernel forward, blockwise recomputing backward (see module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, rel_h, rel_w, bias, scale):
        batch, heads, n, _ = q.shape
        row_unit = rel_h.shape[3] if rel_h is not None else 1
        out = q.new_empty(q.shape[:-1] + (v.shape[-1],))
        lse = None
        scratch = _scratch(q, k.shape[2], row_unit) if rel_h is not None else None
        for block in _blocks(batch, heads, n, row_unit):
            bs, hs, rows = block
            mask = _bias_block(rel_h, rel_w, bias, block, scratch=scratch)
            o, l = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q[bs, hs, rows], k[bs, hs], v[bs, hs], 0.0, False, attn_mask=mask, scale=scale
            )
            out[bs, hs, rows] = o
            if lse is None:
                lse = l.new_empty((batch, heads, n))
            lse[bs, hs, rows] = l
        ctx.save_for_backward(q, k, v, out, lse, rel_h, rel_w, bias)
        ctx.scale = scale
        ctx.row_unit = row_unit
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, rel_h, rel_w, bias = ctx.saved_tensors
        scale = ctx.scale
        need_rel = rel_h is not None and (ctx.needs_input_grad[3] or ctx.needs_input_grad[4])
        need_bias = bias is not None and ctx.needs_input_grad[5]
        batch, heads, n, _ = q.shape
        dq = torch.empty_like(q)
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        d_rel_h = torch.empty_like(rel_h) if need_rel else None
        d_rel_w = torch.empty_like(rel_w) if need_rel else None
        d_bias = torch.zeros_like(bias) if need_bias else None
        minus_delta = (grad_out * out).sum(-1, keepdim=True).neg_()  # (B, heads, N, 1)
        p_scratch, ds_scratch = (_scratch(q, k.shape[2], ctx.row_unit) for _ in range(2))
        for block in _blocks(batch, heads, n, ctx.row_unit):
            bs, hs, rows = block
            qb, kb, vb, gb = (_flat(t) for t in (q[bs, hs, rows], k[bs, hs], v[bs, hs],
                                                  grad_out[bs, hs, rows]))  # fmt: skip
            # probabilities p = exp(q k^T * scale + bias - lse), recomputed; the GEMM adds into
            # the (bias - lse) block in place
            p = _bias_block(rel_h, rel_w, bias, block, lse=lse, scratch=p_scratch)
            shape = p.shape
            p = p.reshape(-1, shape[-2], shape[-1])
            p.baddbmm_(qb, kb.transpose(1, 2), alpha=scale).exp_()
            dv[bs, hs] += torch.bmm(p.transpose(1, 2), gb).view(dv[bs, hs].shape)
            # d logits = p * (grad_out v^T - rowsum(grad_out * out))
            ds = torch.baddbmm(_flat(minus_delta[bs, hs, rows]), gb, vb.transpose(1, 2),
                               out=_take(ds_scratch, p.shape)).mul_(p)
            del p
            dq[bs, hs, rows] = torch.bmm(ds, kb).mul_(scale).view(dq[bs, hs, rows].shape)
            dk[bs, hs] += torch.bmm(ds.transpose(1, 2), qb).mul_(scale).view(dk[bs, hs].shape)
            ds = ds.view(shape)
            if need_rel:
                grid_rows = _grid_rows(rows, rel_h.shape[3])
                b_, h_, hq, w, h = rel_h[bs, hs, grid_rows].shape
                grid = ds.view(b_, h_, hq, w, h, w)
                d_rel_h[bs, hs, grid_rows] = grid.sum(-1)
                d_rel_w[bs, hs, grid_rows] = grid.sum(-2)
            if need_bias:
                part = ds.sum(0, keepdim=True) if bias.shape[0] == 1 else ds
                part = part.sum(1, keepdim=True) if bias.shape[1] == 1 else part
                d_bias[_bias_index(bias, block)] += part
        return dq, dk, dv, d_rel_h, d_rel_w, d_bias, None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: Optional[torch.Tensor] = None,
    rel_h: Optional[torch.Tensor] = None,
    rel_w: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Attention of ``q, k, v`` ``(B, heads, N, d)`` with optional additive biases.

    Args:
        bias: ``(1 | B, 1 | heads, N, N)``, e.g. a BEiT bias ``(1, heads, N, N)``.
        rel_h, rel_w: decomposed terms ``(B, heads, h, w, h)`` / ``(B, heads, h, w, w)`` from
            :func:`mae_transfer.models.attention.decomposed_rel_terms` (``N = h*w``).
        scale: logit scale for ``q k^T`` (default ``d ** -0.5``); biases are not scaled.

    Returns:
        ``(B, heads, N, d)``.
    """
    if rel_h is None and bias is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if bias is not None and bias.dim() != 4:
        raise ValueError(f"bias must be 4-d (1|B, 1|heads, N, N), got shape {tuple(bias.shape)}.")
    # under autocast q/k/v may be half precision while bias terms are float32: compute in q's dtype
    bias, rel_h, rel_w = (t.to(q.dtype) if t is not None else None for t in (bias, rel_h, rel_w))
    if q.device.type == "cpu" and not torch.jit.is_tracing():  # export traces the plain op below
        if scale is None:
            scale = q.shape[-1] ** -0.5
        return _CpuBiasedSDPA.apply(q, k, v, rel_h, rel_w, bias, scale)
    if rel_h is not None:
        mask = expand_decomposed(rel_h, rel_w)
        mask = mask if bias is None else mask + bias
    else:
        mask = bias
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
