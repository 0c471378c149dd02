"""When the memory-saving autograd functions of the models apply."""

from __future__ import annotations

import torch

__all__ = ["keeps_less_for_backward"]


def keeps_less_for_backward(*tensors: torch.Tensor) -> bool:
    """True when a custom autograd function that keeps less for backward should run: gradients
    are on and one of ``tensors`` needs them, outside tracing (export) and ``torch.compile``
    (which get the plain ops)."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return needs_grad and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
