"""Test-only hooks for the reliability tests: freeze a run at an iteration (to SIGKILL it there),
or turn the model's outputs into NaN. Importable by subprocesses (tests/ on PYTHONPATH)."""
from __future__ import annotations

import time
from pathlib import Path

import torch


def _hang(marker: str) -> None:
    Path(marker).touch()
    time.sleep(3600)  # the test kills the process now


# ----------------------------------------------------------------------------- Detectron2

def det_hooks(hang_at: int | None = None, marker: str = "", nan_at: int | None = None, rank: int | None = None):
    """Detectron2 hooks: wait to be killed before iteration ``hang_at`` (0-based, after the previous
    iteration's checkpoint was written), or fill a box-head weight with NaN before ``nan_at``;
    only on process ``rank`` when given."""
    from detectron2.engine import HookBase
    from detectron2.utils import comm

    class _TestHook(HookBase):
        def before_step(self):
            if rank is not None and comm.get_rank() != rank:
                return
            if self.trainer.iter == hang_at:
                _hang(marker)
            if self.trainer.iter == nan_at:
                model = getattr(self.trainer.model, "module", self.trainer.model)
                with torch.no_grad():
                    next(model.roi_heads.box_predictor.parameters()).fill_(float("nan"))

    return [_TestHook()]


def install_det_hooks(**kwargs) -> None:
    """Make every ``mae_transfer.det.Trainer`` of this process append :func:`det_hooks`."""
    from mae_transfer.det.engine import Trainer

    build_hooks = Trainer.build_hooks
    Trainer.build_hooks = lambda self: build_hooks(self) + det_hooks(**kwargs)


ENV = "MAE_TRANSFER_TEST_DET_HOOKS"  # json kwargs of det_hooks, for every process of a launch


def det_worker_from_env(args):
    """``mae_transfer.cli.train_det.train_worker`` with :func:`det_hooks` installed from
    ``$MAE_TRANSFER_TEST_DET_HOOKS`` (importable by the processes Detectron2's ``launch`` spawns)."""
    import json
    import os

    from mae_transfer.cli import train_det

    if os.environ.get(ENV):
        install_det_hooks(**json.loads(os.environ[ENV]))
    return _original_worker(train_det)(args)


def _original_worker(train_det):
    return getattr(train_det, "_unpatched_worker", train_det.train_worker)


def run_det_tool_with_env_hooks(argv) -> int:
    """tools/train_det.py, with every process it launches running :func:`det_worker_from_env`."""
    from mae_transfer.cli import train_det

    train_det._unpatched_worker = train_det.train_worker
    train_det.train_worker = det_worker_from_env
    return train_det.main(argv)


# ----------------------------------------------------------------------------- MMEngine

def _register_mmengine_hooks() -> None:
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    @HOOKS.register_module(force=True)
    class HangBeforeIterHook(Hook):
        """Wait to be killed right before iteration ``at`` (1-based)."""

        def __init__(self, at: int, marker: str) -> None:
            self.at, self.marker = at, marker

        def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
            if runner.iter + 1 == self.at:
                _hang(self.marker)


try:
    _register_mmengine_hooks()
except ImportError:  # Detectron2-only environment
    pass
