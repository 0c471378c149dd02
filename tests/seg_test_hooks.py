"""Test-only MMEngine hooks, imported by configs through ``custom_imports`` (tests/ on PYTHONPATH)."""
from pathlib import Path

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpRankWeightsHook(Hook):
    """After training, every rank saves its parameters to work_dir/rank{R}_weights.pt.

    Parameters only: BN running statistics are per process on CPU (SyncBN needs GPUs; the
    checkpoint holds rank 0's), so they legitimately differ between ranks.
    """

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
        torch.save(state, Path(runner.work_dir) / f"rank{get_rank()}_weights.pt")


@HOOKS.register_module()
class InjectNaNHook(Hook):
    """Make the model produce NaN from iteration ``at`` on (1-based), to test the non-finite stop;
    only on process ``rank`` when given."""

    def __init__(self, at: int = 3, rank: int | None = None) -> None:
        self.at, self.rank = at, rank

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.at and self.rank in (None, get_rank()):
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            with torch.no_grad():
                next(model.decode_head.parameters()).fill_(float("nan"))


class Interrupted(RuntimeError):
    pass


@HOOKS.register_module()
class InterruptHook(Hook):
    """Stop the run abruptly (an exception, like a crash) right before iteration ``at`` (1-based)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.at:
            raise Interrupted(f"interrupted before iteration {self.at}")
