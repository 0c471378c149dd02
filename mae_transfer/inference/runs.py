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

_DET_CKPT = re.compile(r"^model_(\d+|final)\.pth$")
_SEG_CKPT = re.compile(r"^iter_(\d+)\.pth$")


@dataclass(frozen=True)
class RunFiles:
    """What a predictor needs from a run: its task ("det" | "seg"), config and weights."""
    task: str
    config: Path
    weights: Path


def _named_checkpoint(run_dir: Path) -> Path | None:
    """The file ``last_checkpoint`` names, if it exists: in the run dir first (MMEngine writes absolute
    paths, which point into the old place when a run folder was copied or moved)."""
    pointer = run_dir / "last_checkpoint"
    if not pointer.is_file():
        return None
    named = pointer.read_text().strip()
    if not named:
        return None
    for candidate in (run_dir / Path(named).name, Path(named)):
        if candidate.is_file():
            return candidate
    return None


def _newest(run_dir: Path, pattern: re.Pattern) -> Path | None:
    found = []
    for path in run_dir.iterdir():
        match = pattern.match(path.name)
        if match and path.is_file():
            found.append((float("inf") if match.group(1) == "final" else int(match.group(1)), path))
    return max(found)[1] if found else None


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
        final = run_dir / "model_final.pth"
        weights = final if final.is_file() else _named_checkpoint(run_dir) or _newest(run_dir, _DET_CKPT)
        task, config = "det", run_dir / "config.yaml"
    elif (config := _seg_config(run_dir)) is not None:
        weights = _named_checkpoint(run_dir) or _newest(run_dir, _SEG_CKPT)
        task = "seg"
    else:
        raise UserError(f"Run folder {run_dir} holds neither config.yaml (a detection run) nor a dumped config "
                        ".py (a segmentation work dir); pass the folder a training run wrote.")
    if weights is None:
        pattern = "model_final.pth or model_*.pth" if task == "det" else "iter_*.pth"
        raise UserError(f"Run folder {run_dir} has no checkpoint yet ({pattern}): the run is unfinished or was "
                        "stopped before its first checkpoint; wait for it, or resume it with --resume.")
    return RunFiles(task, config, weights)
