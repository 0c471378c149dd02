"""MMEngine hooks added to every segmentation run by :func:`mae_transfer.seg.runner.build_runner`.

* :class:`MetricsJsonHook`: ``work_dir/metrics.json`` (one json object per line, as Detectron2
  writes it) with training losses and validation metrics, and a final summary line with the mIoU.
* :class:`NonFiniteLossHook`: stops training with a message naming the iteration and the loss
  terms as soon as a loss is NaN/inf, before the checkpoint hook could save the broken weights.
* :class:`ResumableCheckpointHook`: makes the run's checkpoints loadable with
  ``torch.load(weights_only=True)`` (MMEngine stores ``HistoryBuffer`` objects whose pickles call
  ``getattr``) and carries the torch RNG state, so ``--resume`` continues the same run.
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
from mmengine.logging import HistoryBuffer
from mmseg.registry import HOOKS

from mae_transfer.errors import NonFiniteLossError
from mae_transfer.utils.logger import get_logger

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
        last = Path(runner.work_dir) / "last_checkpoint"
        kept = last.read_text().strip() if last.is_file() else None
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items()) or "on another rank"
        kept_text = kept or "none was saved yet"
        raise NonFiniteLossError(
            f"Non-finite loss at iteration {runner.iter + 1} ({shown}); training stopped without "
            f"saving these weights (last good checkpoint: {kept_text}). Lower the learning rate, "
            "enable gradient clipping (optim_wrapper.clip_grad) or check the data.",
            iteration=runner.iter + 1, losses=terms, last_checkpoint=kept)


def _to_plain(buffer: HistoryBuffer) -> dict:
    return {"__history_buffer__": True, "max_length": buffer.max_length,
            "log_history": torch.as_tensor(np.asarray(buffer._log_history, dtype=np.float64)),
            "count_history": torch.as_tensor(np.asarray(buffer._count_history, dtype=np.float64))}


def _from_plain(state: dict) -> HistoryBuffer:
    return HistoryBuffer(state["log_history"].tolist(), state["count_history"].tolist(), state["max_length"])


def _numpy_free(obj: Any) -> Any:
    """numpy arrays/scalars -> tensors/Python numbers (recursively), so weights_only can load them."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, _numpy_free(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_numpy_free(v) for v in obj)
    return obj


@HOOKS.register_module()
class ResumableCheckpointHook(Hook):
    """Plain-data checkpoints (no pickled code) that carry the torch RNG states for exact resumption.

    Only torch's generators need saving: MMEngine re-runs the data pipeline over the batches already
    seen when it resumes (numpy/python RNGs, used by the augmentations, end where they were, and
    the sampler has its own seeded generator), while dropout/drop path draw from torch's RNG in the
    forward passes it skips. The states are restored right before the first resumed iteration.
    """

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._pending_rng: dict | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub")
        if hub is not None:
            hub["log_scalars"] = {k: _to_plain(v) if isinstance(v, HistoryBuffer) else v
                                  for k, v in hub["log_scalars"].items()}
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state()
        for key in ("message_hub", "meta"):
            if key in checkpoint:
                checkpoint[key] = _numpy_free(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub")
        if hub is not None:
            hub["log_scalars"] = {k: _from_plain(v) if isinstance(v, dict) and v.get("__history_buffer__") else v
                                  for k, v in hub["log_scalars"].items()}
        self._pending_rng = checkpoint.get("rng_state")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending_rng is None:
            return
        state, self._pending_rng = self._pending_rng, None
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
