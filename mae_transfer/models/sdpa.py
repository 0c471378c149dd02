"""Scaled dot-product attention with an additive position bias.

``attention(q, k, v, bias=..., rel_h=..., rel_w=...)`` computes
``softmax(q k^T * scale + bias + rel_h[..., :, None] + rel_w[..., None, :]) v`` through
``F.scaled_dot_product_attention`` (the bias goes in as ``attn_mask``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["attention", "expand_decomposed"]


def expand_decomposed(rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """``(B, n, h, w, h)`` and ``(B, n, h, w, w)`` -> ``(B, n, h*w, h*w)`` bias, one allocation."""
    b, n, h, w, _ = rel_h.shape
    # contiguous factors make the broadcast sum contiguous, so the final reshape is a view
    bias = rel_h.contiguous().unsqueeze(-1) + rel_w.contiguous().unsqueeze(-2)
    return bias.view(b, n, h * w, h * w)


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
        bias: broadcastable to ``(B, heads, N, N)`` (e.g. a BEiT bias ``(1, heads, N, N)``).
        rel_h, rel_w: decomposed terms from
            :func:`mae_transfer.models.attention.decomposed_rel_terms`.
        scale: logit scale for ``q k^T`` (default ``d ** -0.5``); biases are not scaled.

    Returns:
        ``(B, heads, N, d)``.
    """
    mask = None
    if rel_h is not None:
        mask = expand_decomposed(rel_h, rel_w)
        if bias is not None:
            mask = mask + bias
    elif bias is not None:
        mask = bias
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
