"""A segmentation run's checkpoints: found for ``--resume``, written so they resume exactly, and refused
when they are of another architecture.

* :func:`find_last_checkpoint`: the newest complete checkpoint of a work dir.
* :class:`ResumableCheckpointHook`: makes the run's checkpoints loadable with
  ``torch.load(weights_only=True)`` (MMEngine stores ``HistoryBuffer`` objects whose pickles call
  ``getattr``) and carries every rank's RNG states, so ``--resume`` continues the same run.
* :class:`CheckpointFitHook`: ``load_from`` / ``--eval-only`` / ``--resume`` checkpoints of another
  architecture are refused instead of being loaded key by key with warnings.

The atomic writes and the safe reads are in :class:`mae_transfer.seg.runner.MAETransferRunner`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from mae_transfer.utils.dist import get_rng_state, restore_rng_state
from mae_transfer.utils.run_dir import last_checkpoint
from mae_transfer.utils.weights_fit import check_weights_fit

# MMEngine's iteration-based checkpoints (iter_100.pth).
CHECKPOINT_PATTERN = r"iter_(\d+)\.pth"


def find_last_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run: ``last_checkpoint`` if it names an existing file,
    else the ``iter_N.pth`` with the largest N (partial writes never carry that name)."""
    return last_checkpoint(work_dir, CHECKPOINT_PATTERN)


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
    """Plain-data checkpoints (no pickled code) that carry every rank's RNG states for exact resumption.

    The runner gathers each rank's Python, NumPy and torch (CPU/CUDA) RNG state when it saves
    (:meth:`mae_transfer.seg.runner.MAETransferRunner.save_checkpoint`, on all ranks); this hook
    stores the list, and on resume each rank restores its own torch (CPU/CUDA) states right before
    the first resumed iteration, i.e. after MMEngine has re-run the data pipeline over the batches already seen (which
    puts the sampler and the dataloader workers where they were). With another number of
    processes every rank is reseeded from (seed, rank, iteration) instead, with one log line.
    """

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._pending_rng: dict | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub")
        if hub is not None:
            hub["log_scalars"] = {k: _to_plain(v) if isinstance(v, HistoryBuffer) else v
                                  for k, v in hub["log_scalars"].items()}
        states = getattr(runner, "rng_states", None)
        checkpoint["rng_state"] = {"per_rank": states if states is not None else [get_rng_state()]}
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
        if "per_rank" in state:
            # NumPy/Python: MMEngine's replay of the pipeline already put them where they were *after*
            # fetching this iteration's batch; the saved states are from before that fetch.
            restore_rng_state(state["per_rank"], runner.seed or 0, runner.iter, torch_only=True)
        else:  # a checkpoint from before per-rank states: torch's state only
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state(state["cuda"])


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Refuse ``load_from`` / ``--eval-only`` / ``--resume`` checkpoints of another architecture."""

    priority = "VERY_HIGH"

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = checkpoint.get("state_dict", checkpoint)
        check_weights_fit(model.state_dict(), state, filename=str(runner._load_from), option="load_from",
                          backbone_option="model.backbone.pretrained",
                          config_hint="use the config the checkpoint was trained with")
