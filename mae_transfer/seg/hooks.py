"""MMEngine hooks for a segmentation run's metrics, added to every run by
:func:`mae_transfer.seg.runner.build_runner` (the checkpoint hooks are in :mod:`mae_transfer.seg.checkpoint`).

* :class:`MetricsJsonHook`: ``work_dir/metrics.json`` (one json object per line, as Detectron2
  writes it) with training losses and validation metrics, and a final summary line with the mIoU.
* :class:`NonFiniteLossHook`: for optimizer wrappers other than MMEngine's two, stops training
  after the step where a loss is NaN/inf, before the checkpoint hook could save the broken weights
  (MMEngine's ``OptimWrapper`` / ``AmpOptimWrapper`` are replaced by wrappers that stop *before*
  the step: :mod:`mae_transfer.seg.optim_wrapper`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from mae_transfer.errors import NonFiniteLossError
from mae_transfer.utils.logger import get_logger
from mae_transfer.utils.run_dir import pointer_target

logger = get_logger(__name__)

SUMMARY_PREFIX = "mae_transfer seg result:"


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


@HOOKS.register_module()
class MetricsJsonHook(Hook):
    """Append training losses (every ``interval`` iterations) and val/test metrics to metrics.json."""

    priority = "LOW"

    def __init__(self, interval: int = 50, filename: str = "metrics.json") -> None:
        self.interval = interval
        self.filename = filename
        self.last_metrics: dict | None = None

    @master_only
    def _append(self, runner, record: dict) -> None:
        with open(Path(runner.work_dir) / self.filename, "a") as f:
            f.write(json.dumps(record) + "\n")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        iteration = runner.iter + 1
        if outputs and (iteration % self.interval == 0 or iteration == 1 or iteration == runner.max_iters):
            record = {"iteration": iteration, "lr": runner.message_hub.get_scalar("train/lr").current()}
            record.update({k: _scalar(v) for k, v in outputs.items()})
            self._append(runner, record)

    def _metrics(self, runner, split: str, metrics: dict | None) -> None:
        if not metrics:
            return
        values = {k: _scalar(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number, torch.Tensor))}
        self.last_metrics = {"split": split, "iteration": runner.iter, **values}
        self._append(runner, self.last_metrics)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self._metrics(runner, "val", metrics)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self._metrics(runner, "test", metrics)

    @master_only
    def after_run(self, runner) -> None:
        path = Path(runner.work_dir) / self.filename
        if self.last_metrics is None:
            line = f"{SUMMARY_PREFIX} no evaluation was run; logs in {runner.work_dir}"
        else:
            m = self.last_metrics
            extra = ", ".join(f"{k} {m[k]:.2f}" for k in ("aAcc", "mAcc") if k in m)
            line = (f"{SUMMARY_PREFIX} mIoU {m.get('mIoU', float('nan')):.2f} ({extra}) on {m['split']} "
                    f"after {m['iteration']} iterations; metrics in {path}")
        runner.logger.info(line)
        print(line, flush=True)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop with a clear message when any loss term is NaN/inf (all ranks stop together)."""

    priority = "ABOVE_NORMAL"  # before the checkpoint hook (VERY_LOW) can save broken weights

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        terms = {k: _scalar(v) for k, v in (outputs or {}).items() if "loss" in k}
        bad = torch.tensor([float(not all(math.isfinite(v) for v in terms.values()))])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item() == 0:
            return
        kept = pointer_target(runner.work_dir)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items()) or "on another rank"
        kept_text = kept or "none was saved yet"
        raise NonFiniteLossError(
            f"Non-finite loss at iteration {runner.iter + 1} ({shown}); training stopped without "
            f"saving these weights (last good checkpoint: {kept_text}). Lower the learning rate, "
            "enable gradient clipping (optim_wrapper.clip_grad) or check the data.",
            iteration=runner.iter + 1, losses=terms, last_checkpoint=kept)
