"""Finding a finished (or stopped) training run's config and weights in its output directory.

* Detection (``tools/train_det.py``): ``OUTPUT_DIR/config.yaml`` (written by Detectron2's
  ``default_setup``) and ``model_final.pth``, else the checkpoint ``last_checkpoint`` names, else
  the newest ``model_*.pth``.
* Segmentation (``tools/train_seg.py``): the config MMEngine dumps into the work dir
  (``<work_dir>/<config name>.py``) and the checkpoint ``last_checkpoint`` names, else the newest
  ``iter_*.pth``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mae_transfer.errors import UserError
from mae_transfer.utils.run_dir import last_checkpoint

# The checkpoint names Detectron2 and MMEngine write (as mae_transfer.det.checkpoint /
# mae_transfer.seg.checkpoint; not imported here, so finding a det run does not load MMSeg).
_DET_CKPT, _DET_FINAL = r"model_(\d+)\.pth", "model_final.pth"
_SEG_CKPT = r"iter_(\d+)\.pth"


@dataclass(frozen=True)
class RunFiles:
    """What a predictor needs from a run: its task ("det" | "seg"), config and weights."""
    task: str
    config: Path
    weights: Path


def _seg_config(run_dir: Path) -> Path | None:
    """The dumped MMEngine config: a ``*.py`` in the run dir that defines ``model`` (newest first)."""
    candidates = sorted(run_dir.glob("*.py"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        text = path.read_text(errors="replace")
        if re.search(r"^model\s*=", text, flags=re.M):
            return path
    return None


def find_run(run_dir: str | os.PathLike) -> RunFiles:
    """The config and weights of the run in ``run_dir``.

    Raises:
        UserError: when the folder does not exist, is not a run folder, or holds no checkpoint yet.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"Run folder {run_dir} does not exist; pass the OUTPUT_DIR of tools/train_det.py or the "
                        "--work-dir of tools/train_seg.py.")
    if (run_dir / "config.yaml").is_file():
        final = run_dir / _DET_FINAL
        weights = final if final.is_file() else last_checkpoint(run_dir, _DET_CKPT, final=_DET_FINAL)
        task, config = "det", run_dir / "config.yaml"
    elif (config := _seg_config(run_dir)) is not None:
        weights = last_checkpoint(run_dir, _SEG_CKPT)
        task = "seg"
    else:
        raise UserError(f"Run folder {run_dir} holds neither config.yaml (a detection run) nor a dumped config "
                        ".py (a segmentation work dir); pass the folder a training run wrote.")
    if weights is None:
        pattern = "model_final.pth or model_*.pth" if task == "det" else "iter_*.pth"
        raise UserError(f"Run folder {run_dir} has no checkpoint yet ({pattern}): the run is unfinished or was "
                        "stopped before its first checkpoint; wait for it, or resume it with --resume.")
    return RunFiles(task, config, weights)
