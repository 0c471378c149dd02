"""Transformer MLPs: ``fc1 -> GELU -> fc2`` (timm ``Mlp``) and DINOv2's packed SwiGLU.

In training, :class:`Mlp` runs ``GELU -> fc2`` as one autograd function that keeps only the GELU
input for backward and recomputes the GELU there (one element-wise pass): autograd would keep both
the ``(..., hidden)`` GELU input and output, the largest activations of a ViT block. For ViT-B at
1024 (4096 tokens, hidden 3072) that is 50 MB less per block, 600 MB for the 12 blocks. The
arithmetic is the same calls in the same order, so outputs and gradients equal the plain path's.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .saving import keeps_less_for_backward

__all__ = ["Mlp", "SwiGLU", "MLP_LAYERS", "gelu_linear"]


def _compute_dtype(h: torch.Tensor) -> Optional[torch.dtype]:
    """The autocast dtype for ``h``'s device, or None when autocast is off."""
    device = h.device.type
    try:
        enabled = torch.is_autocast_enabled(device)
    except RuntimeError:  # a device type without autocast (e.g. meta)
        return None
    return torch.get_autocast_dtype(device) if enabled else None


class _GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)``, saving ``h`` only (see module docstring)."""

    @staticmethod
    def forward(ctx, h, weight, bias):
        dtype = _compute_dtype(h)
        w, b = weight, bias
        if dtype is not None:  # what autocast does for F.linear: every operand in its dtype
            h = h.to(dtype)
            w = weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
        with torch.autocast(h.device.type, enabled=False) if dtype is not None else nullcontext():
            out = F.linear(F.gelu(h), w, b)
        ctx.save_for_backward(h, w)
        ctx.param_dtypes = (weight.dtype, bias.dtype if bias is not None else None)  # None: no bias
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, w = ctx.saved_tensors
        grad_out = grad_out.to(w.dtype)
        g2 = grad_out.reshape(-1, grad_out.shape[-1])  # (tokens, out)
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.ops.aten.gelu_backward(grad_out.matmul(w), h)
        if ctx.needs_input_grad[1]:
            act = F.gelu(h).reshape(-1, h.shape[-1])  # recomputed: (tokens, hidden)
            grad_w = g2.t().mm(act).to(ctx.param_dtypes[0])
        if ctx.param_dtypes[1] is not None and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0).to(ctx.param_dtypes[1])
        return grad_h, grad_w, grad_b


def gelu_linear(h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear(F.gelu(h), weight, bias)``; ``h`` ``(..., hidden)`` -> ``(..., out)``.

    With gradients on (outside tracing and compilation) the GELU output is not kept for backward.
    """
    if keeps_less_for_backward(h, weight):
        return _GeluLinear.apply(h, weight, bias)
    return F.linear(F.gelu(h), weight, bias)


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` (timm ``Mlp`` names)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., dim) -> (..., dim)``."""
        h = self.fc1(x)
        act = self.act
        if type(act) is nn.GELU and act.approximate == "none" and not (act._forward_hooks or act._forward_pre_hooks):
            return gelu_linear(h, self.fc2.weight, self.fc2.bias)
        return self.fc2(self.act(h))  # a replaced or hooked activation runs as a module


class SwiGLU(nn.Module):
    """Packed SwiGLU (DINOv2 giant; timm ``SwiGLUPacked``): ``fc1`` to ``2h``, ``silu(a) * b``,
    ``fc2`` from ``h``. DINOv2's own names ``w12`` / ``w3`` are renamed at load."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(a) * b)


MLP_LAYERS = {"gelu": Mlp, "swiglu": SwiGLU}
