"""Detectron2 checkpointing with atomic writes (every rank's RNG state: :mod:`.resume_state`)."""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import torch
from detectron2.checkpoint import DetectionCheckpointer

from mae_transfer.checkpoints import read_checkpoint
from mae_transfer.errors import UserError
from mae_transfer.utils import weights_fit
from mae_transfer.utils.fileio import atomic_torch_save, atomic_write_text
from mae_transfer.utils.run_dir import POINTER, newest_numbered

logger = logging.getLogger("mae_transfer.det")

# Detectron2's periodic checkpoints (model_0000099.pth) and the one written at the end.
CHECKPOINT_PATTERN, FINAL_CHECKPOINT = r"model_(\d+)\.pth", "model_final.pth"


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic writes and safe reads.

    Writes go to a temporary name, are fsynced and renamed; ``last_checkpoint`` is re-pointed only
    after the new file is complete, so ``--resume`` after a crash (even during a save) finds the
    last complete checkpoint. Reads go through :func:`mae_transfer.checkpoints.read_checkpoint`:
    files that would run code when unpickled are refused unless ``unsafe=True``.
    """

    def __init__(self, model, save_dir: str = "", *, unsafe: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.unsafe = unsafe

    def _load_file(self, filename: str) -> dict:
        self._loading = filename
        if filename.endswith(".pkl") and not self.unsafe:
            read_checkpoint(filename)  # raises if the pickle needs anything but arrays and dicts
        return super()._load_file(filename)

    def _load_model(self, checkpoint: dict):
        if not checkpoint.get("matching_heuristics"):  # refuse another architecture's weights
            check_weights_fit(self.model.state_dict(), checkpoint["model"], getattr(self, "_loading", "?"))
        return super()._load_model(checkpoint)

    def _torch_load(self, f: str) -> dict:
        return read_checkpoint(f, unsafe=self.unsafe)

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        trainer = self.checkpointables.get("trainer")
        if getattr(getattr(trainer, "_trainer", None), "stopped_non_finite", False):
            self.logger.info(f"Not saving {name}: training stopped on a non-finite loss")
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(basename)

    def get_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names, or, when that file is gone, the newest ``model_*.pth``."""
        named = super().get_checkpoint_file()
        if not named or os.path.isfile(named):
            return named
        return newest_checkpoint(self.save_dir, missing=named)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, POINTER), last_filename_basename)


def check_weights_fit(model_state: Mapping[str, torch.Tensor], checkpoint_state: Mapping[str, Any],
                      filename: str) -> None:
    """``MODEL.WEIGHTS`` of another architecture is refused (see :mod:`mae_transfer.utils.weights_fit`)."""
    weights_fit.check_weights_fit(model_state, checkpoint_state, filename=filename, option="MODEL.WEIGHTS",
                                  backbone_option="MODEL.VIT.WEIGHTS",
                                  config_hint="use a config that matches the checkpoint (MODEL.VIT.*)")


def newest_checkpoint(save_dir: str, missing: str) -> str:
    """The newest ``model_*.pth`` in ``save_dir`` (``model_final`` first) when ``last_checkpoint`` names
    the file ``missing``, which is gone; raises :class:`UserError` when there is none."""
    found = newest_numbered(save_dir, CHECKPOINT_PATTERN, final=FINAL_CHECKPOINT)
    if found is None:
        raise UserError(f"--resume: {os.path.join(save_dir, POINTER)} names {missing}, which does not "
                        "exist, and there is no other model_*.pth; restore the file or start without --resume.")
    logger.warning("last_checkpoint names %s, which does not exist; resuming from %s", missing, found.name)
    return str(found)

