"""Optimizer wrappers that stop every rank on a non-finite loss *before* the optimizer step.

MMEngine's ``train_step`` hands the summed loss to ``optim_wrapper.update_params``, which runs
backward and ``optimizer.step``. :class:`FiniteCheckOptimWrapper` (and the AMP variant) checks
first: a finiteness flag is all-reduced (MAX) over the ranks, so when any rank's loss is NaN/inf
every rank raises the same :class:`~mae_transfer.errors.NonFiniteLossError` (iteration, loss
terms of the first bad rank, last good checkpoint) and no rank steps or saves. The loss terms
come from the model's ``parse_losses``, watched by :func:`watch_loss_terms`.

:func:`use_finite_check` swaps ``OptimWrapper`` / ``AmpOptimWrapper`` in a config for these.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from mae_transfer.errors import NonFiniteLossError
from mae_transfer.utils.run_dir import pointer_target

# The last loss terms (detached tensors) of this process's model, set by watch_loss_terms.
_last_terms: dict[str, torch.Tensor] = {}

REPLACEMENTS = {"OptimWrapper": "FiniteCheckOptimWrapper", "AmpOptimWrapper": "FiniteCheckAmpOptimWrapper"}


def watch_loss_terms(model: torch.nn.Module) -> None:
    """Record the loss terms each time ``model.parse_losses`` runs (the unwrapped model)."""
    parse = model.parse_losses

    def parse_and_record(losses):
        loss, log_vars = parse(losses)
        _last_terms.clear()
        _last_terms.update({k: v.detach() for k, v in log_vars.items() if "loss" in k and torch.is_tensor(v)})
        return loss, log_vars

    model.parse_losses = parse_and_record


class _FiniteCheck:
    """Mixin for MMEngine optimizer wrappers; ``work_dir`` is set by the runner (for the message)."""

    work_dir: str | None = None

    def update_params(self, loss: torch.Tensor, step_kwargs: dict | None = None,
                      zero_kwargs: dict | None = None) -> None:
        self.check_finite(loss)
        super().update_params(loss, step_kwargs=step_kwargs, zero_kwargs=zero_kwargs)

    def check_finite(self, loss: torch.Tensor) -> None:
        """Raise on every rank when ``loss`` (shape ()) is non-finite on any rank."""
        bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item() == 0:
            return
        terms = {k: float(v) for k, v in _last_terms.items()} or {"loss": float(loss.detach())}
        ranks = [terms]
        if distributed:
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, terms)
        rank, shown = next((r, t) for r, t in enumerate(ranks) if not all(map(math.isfinite, t.values())))
        iteration = int(MessageHub.get_current_instance().get_info("iter", -1)) + 1
        raise NonFiniteLossError(
            f"Non-finite loss at iteration {iteration} ("
            + ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
            + f" on rank {rank}); every rank stopped before the optimizer step, without saving these weights "
            f"(last good checkpoint: {last_checkpoint(self.work_dir)}). Lower the learning rate, enable "
            "gradient clipping (optim_wrapper.clip_grad) or check the data, then --resume.")


def last_checkpoint(work_dir: str | None) -> str:
    return pointer_target(work_dir or ".") or "none was saved yet"


@OPTIM_WRAPPERS.register_module()
class FiniteCheckOptimWrapper(_FiniteCheck, OptimWrapper):
    """``OptimWrapper`` that stops all ranks on a non-finite loss before the step."""


@OPTIM_WRAPPERS.register_module()
class FiniteCheckAmpOptimWrapper(_FiniteCheck, AmpOptimWrapper):
    """``AmpOptimWrapper`` that stops all ranks on a non-finite loss before the step (the loss, not
    the scaled gradients, whose overflow the loss scaler handles by skipping the step)."""


def use_finite_check(cfg: Config) -> bool:
    """Swap MMEngine's standard optimizer wrapper types in ``cfg`` for the checking ones.

    Returns:
        False when the config names another wrapper type (left as is).
    """
    wrapper: Any = cfg.get("optim_wrapper")
    if wrapper is None:
        return False
    kind = wrapper.get("type", "OptimWrapper")
    if kind in REPLACEMENTS.values():
        return True
    if kind not in REPLACEMENTS:
        return False
    wrapper["type"] = REPLACEMENTS[kind]
    return True
