"""A pure-PyTorch stand-in for ``mmcv.ops`` so that MMSegmentation imports with mmcv-lite.

Why: mmsegmentation 1.2.2 asserts ``mmcv<2.2.0``, full mmcv 2.1.0 does not build against torch 2.14
(its setup forces C++17, torch's headers need C++20), and mmcv-lite ships ``mmcv/ops/*.py`` without
the compiled ``mmcv._ext`` they import. Four mmseg modules import ``mmcv.ops`` unguarded
(``point_sample`` in three, ``sigmoid_focal_loss`` in ``models/losses/focal_loss.py``), so
``import mmseg.models`` fails. This module provides those two functions in pure PyTorch and makes
every other name raise ``ModuleNotFoundError``, which is what mmseg's guarded imports catch, so
optional heads (PSA, CCNet, point head) report themselves unavailable exactly as with a CPU-less
mmcv build.

Use: nothing, in the project's venv: ``scripts/install.sh`` adds a one-line ``.pth`` that registers
:mod:`mae_transfer.compat.mmcv_ops_hook`, an import hook that serves this module when ``mmcv.ops`` is
first imported (nothing heavy runs at interpreter start). Elsewhere ``import mae_transfer.compat.mmcv_ops``
(or :func:`install`) before ``import mmseg.models``; ``mae_transfer.seg`` does this first.
A full mmcv with compiled ops, when installed, is left alone.
"""
from __future__ import annotations

import importlib
import sys
import types

import torch
import torch.nn.functional as F

__all__ = ["install", "point_sample", "sigmoid_focal_loss"]


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False,
                 **kwargs) -> torch.Tensor:
    """Sample ``input`` at normalised ``points`` (``mmcv.ops.point_sample`` semantics).

    Args:
        input: (N, C, H, W) feature map.
        points: (N, P, 2) or (N, Hp, Wp, 2) coordinates in [0, 1] x [0, 1], (x, y) order.
        align_corners: passed to ``F.grid_sample``.
    Returns:
        (N, C, P) or (N, C, Hp, Wp) sampled features.
    """
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       alpha: float = 0.25, weight: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Sigmoid focal loss with class-index targets (``mmcv.ops.sigmoid_focal_loss`` semantics).

    Args:
        input: (N, C) logits.
        target: (N,) class indices; the value C means "background" (no positive class).
        gamma, alpha: focal-loss parameters (alpha weights positives, 1 - alpha negatives).
        weight: optional (C,) per-class weight, applied by each sample's target class.
        reduction: "none" -> (N, C); "sum"; "mean" = sum / N (as mmcv does).
    """
    num_classes = input.size(1)
    one_hot = F.one_hot(target.long(), num_classes + 1)[:, :num_classes].to(input.dtype)
    prob = input.sigmoid()
    # log-sigmoid instead of log(p): the same value, without underflow for large |logits|
    pos = -alpha * (1 - prob).pow(gamma) * F.logsigmoid(input)
    neg = -(1 - alpha) * prob.pow(gamma) * F.logsigmoid(-input)
    loss = one_hot * pos + (1 - one_hot) * neg
    if weight is not None:
        padded = torch.cat([weight.to(input.dtype), weight.new_ones(1).to(input.dtype)])
        loss = loss * padded[target.long()].unsqueeze(1)
    if reduction == "mean":
        return loss.sum() / input.size(0)
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"sigmoid_focal_loss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}.")


def _missing(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    raise ModuleNotFoundError(
        f"mmcv.ops.{name} needs mmcv's compiled ops, which mmcv-lite does not have; "
        "mae_transfer provides only point_sample and sigmoid_focal_loss (mae_transfer/compat/mmcv_ops.py).",
        name=f"mmcv.ops.{name}")


def _has_compiled_mmcv() -> bool:
    try:
        importlib.import_module("mmcv._ext")
    except ImportError:
        return False
    return True


def install() -> None:
    """Register the stand-in as ``mmcv.ops`` unless a compiled mmcv is present. Idempotent."""
    current = sys.modules.get("mmcv.ops")
    if current is not None and getattr(current, "__mae_transfer_shim__", False):
        return
    import mmcv

    if _has_compiled_mmcv():
        return
    shim = types.ModuleType("mmcv.ops", __doc__)
    shim.__mae_transfer_shim__ = True
    shim.point_sample = point_sample
    shim.sigmoid_focal_loss = sigmoid_focal_loss
    shim.__getattr__ = _missing
    sys.modules["mmcv.ops"] = shim
    mmcv.ops = shim


install()
