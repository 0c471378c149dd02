"""Biased attention through ``torch.nn.attention.flex_attention`` (fused kernels on CUDA).

``F.scaled_dot_product_attention`` only takes a relative position bias as a dense ``attn_mask``,
which keeps it off the flash kernels. FlexAttention instead adds the bias inside the kernel
through a ``score_mod`` that reads small tensors, never an ``(N, N)`` one:

- ViTDet decomposed terms: ``score + rel_h[b, h, q, kv // W] + rel_w[b, h, q, kv % W]`` with
  ``rel_h`` ``(B, heads, N, H)`` and ``rel_w`` ``(B, heads, N, W)``;
- BEiT table: ``score + table[index[q, kv], h]`` (``table`` ``(L, heads)``, ``index`` ``(N, N)``);
- a dense bias ``(1 | B, 1 | heads, N, N)`` (e.g. a shared BEiT bias), read per element.

Gradients flow to every captured tensor that requires one (``rel_h``/``rel_w`` and so the
``rel_pos_h``/``rel_pos_w`` tables, the BEiT table). On CUDA the call goes through
``torch.compile(flex_attention)`` (fused forward and backward); elsewhere flex runs eagerly (an
unfused reference implementation), which torch allows only without gradients on CPU.
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable, Optional

import torch

__all__ = ["ATTN_IMPLS", "flex_available", "use_flex", "flex_attention_biased", "disable_flex"]

logger = logging.getLogger(__name__)

ATTN_IMPLS = ("auto", "sdpa", "flex")

# torch refuses flex backward on CPU at its API (its eager math path would work); tests lift this
CPU_BACKWARD = False

_STATE = {"module": None, "compiled": None, "disabled": None}


def _flex_module():
    """``torch.nn.attention.flex_attention`` or None when this torch has none (or it fails)."""
    if _STATE["module"] is None:
        try:
            import torch.nn.attention.flex_attention as module

            _STATE["module"] = module
        except Exception as e:  # an old torch or a broken build: fall back to SDPA
            logger.info("flex_attention unavailable (%s: %s); using SDPA.", type(e).__name__, e)
            _STATE["module"] = False
    return _STATE["module"] or None


def flex_available() -> bool:
    """Whether flex attention can be imported and has not been disabled after a failure."""
    return _STATE["disabled"] is None and _flex_module() is not None


def disable_flex(reason: str) -> None:
    """Stop using flex for the rest of the process (after a failed call), with one warning."""
    if _STATE["disabled"] is None:
        logger.warning("flex_attention disabled, falling back to SDPA: %s", reason)
    _STATE["disabled"] = reason


def use_flex(impl: str, q: torch.Tensor, needs_grad: bool) -> bool:
    """Whether attention implementation ``impl`` runs flex for queries ``q``.

    ``"auto"``: on CUDA when flex is available. ``"flex"``: wherever it can run (CUDA; CPU
    without gradients). ``"sdpa"``: never.
    """
    if impl == "sdpa" or not flex_available():
        return False
    if q.device.type == "cuda":
        return True
    return impl == "flex" and q.device.type == "cpu" and (CPU_BACKWARD or not needs_grad)


def _kernel(device: torch.device) -> Callable:
    """``torch.compile(flex_attention)`` on CUDA (built once), plain ``flex_attention`` elsewhere."""
    module = _flex_module()
    if device.type != "cuda":
        return module.flex_attention
    if _STATE["compiled"] is None:
        _STATE["compiled"] = torch.compile(module.flex_attention, dynamic=False)
    return _STATE["compiled"]


def _score_mod(
    rel_h: Optional[torch.Tensor],
    rel_w: Optional[torch.Tensor],
    table: Optional[torch.Tensor],
    index: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
) -> Callable:
    """A ``score_mod(score, b, h, q, kv)`` adding whichever terms are given (see module doc)."""
    width = rel_w.shape[-1] if rel_w is not None else 1
    bias_b = bias is not None and bias.shape[0] > 1
    bias_h = bias is not None and bias.shape[1] > 1

    def score_mod(score, b, h, q_idx, kv_idx):
        if rel_h is not None:
            score = score + rel_h[b, h, q_idx, kv_idx // width] + rel_w[b, h, q_idx, kv_idx % width]
        if table is not None:
            score = score + table[index[q_idx, kv_idx], h]
        if bias is not None:
            score = score + bias[b if bias_b else 0, h if bias_h else 0, q_idx, kv_idx]
        return score

    return score_mod


def flex_attention_biased(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: Optional[float] = None,
    rel_h: Optional[torch.Tensor] = None,
    rel_w: Optional[torch.Tensor] = None,
    table: Optional[torch.Tensor] = None,
    index: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``softmax(q k^T * scale + terms) v`` for ``q, k, v`` ``(B, heads, N, d)``.

    Args:
        rel_h, rel_w: decomposed terms ``(B, heads, h, w, h)`` / ``(B, heads, h, w, w)``
            (:func:`~mae_transfer.models.attention.decomposed_rel_terms`, ``N = h*w``).
        table, index: BEiT table ``(L, heads)`` and its ``(N, N)`` long index.
        bias: dense ``(1 | B, 1 | heads, N, N)``.

    Returns:
        ``(B, heads, N, d)``.
    """
    if rel_h is not None:
        b, n_heads, h, w, _ = rel_h.shape
        rel_h = rel_h.reshape(b, n_heads, h * w, h).to(q.dtype)
        rel_w = rel_w.reshape(b, n_heads, h * w, w).to(q.dtype)
    if table is not None:
        table = table.to(q.dtype)
    if bias is not None:
        bias = bias.to(q.dtype)
    score_mod = _score_mod(rel_h, rel_w, table, index, bias)
    if q.device.type == "cuda":
        return _kernel(q.device)(q, k, v, score_mod=score_mod, scale=scale)
    with warnings.catch_warnings():  # "called without torch.compile()": eager is the intent here
        warnings.simplefilter("ignore", UserWarning)
        return _kernel(q.device)(q, k, v, score_mod=score_mod, scale=scale)
