"""A run's output directory, the same in Detectron2 and MMEngine runs: its checkpoints and its
``last_checkpoint`` pointer, and the rule that a new run never overwrites an earlier one.

Both frameworks write ``<run dir>/last_checkpoint`` holding the newest checkpoint's name
(Detectron2: a base name, ``model_0000099.pth``; MMEngine: a full path, ``work/iter_100.pth``),
and number their checkpoints (``model_<N>.pth`` / ``iter_<N>.pth``); the patterns are the callers'.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mae_transfer.errors import UserError

POINTER = "last_checkpoint"


def is_local(path: Any) -> bool:
    """True for a non-empty local path; False for ``""``, None and URLs (``https://``, ``s3://``...)."""
    return isinstance(path, (str, os.PathLike)) and bool(str(path)) and "://" not in str(path)


def pointer_target(run_dir: str | os.PathLike) -> str | None:
    """What ``run_dir/last_checkpoint`` names (as written), or None when there is no pointer."""
    pointer = Path(run_dir) / POINTER
    return pointer.read_text().strip() if pointer.is_file() else None


def _named_path(run_dir: str | os.PathLike, named: str) -> Path:
    """A pointer's base name lies in ``run_dir``; a path with a folder is used as written."""
    path = Path(named)
    return path if path.parent != Path(".") else Path(run_dir) / path


def newest_numbered(run_dir: str | os.PathLike, pattern: str, final: str | None = None) -> Path | None:
    """The checkpoint in ``run_dir`` whose name matches ``pattern`` with the largest number (its
    first group, compared as a number: ``iter_10`` is newer than ``iter_9``); ``final`` (e.g.
    ``model_final.pth``) is newer than all of them when it exists. None when there is none."""
    run_dir = Path(run_dir)
    if final and (run_dir / final).is_file():
        return run_dir / final
    found = [(int(m.group(1)), p) for p in run_dir.glob("*") if (m := re.fullmatch(pattern, p.name)) and p.is_file()]
    return max(found)[1] if found else None


def last_checkpoint(run_dir: str | os.PathLike, pattern: str, final: str | None = None) -> Path | None:
    """The newest complete checkpoint of a run: the file ``last_checkpoint`` names if it exists, else
    :func:`newest_numbered` (partial writes never carry a checkpoint's name). None when there is none."""
    named = pointer_target(run_dir)
    if named and _named_path(run_dir, named).is_file():
        return _named_path(run_dir, named)
    return newest_numbered(run_dir, pattern, final)


def refuse_earlier_run(run_dir: str | os.PathLike, *, what: str, choose: str) -> None:
    """Raise :class:`UserError` when ``run_dir`` already holds a run's checkpoints.

    Args:
        what: how the message names the directory (``"OUTPUT_DIR"``, ``"Work dir"``).
        choose: the option that picks another one (``"OUTPUT_DIR"``, ``"--work-dir"``).
    """
    named = pointer_target(run_dir)
    if named is not None:
        raise UserError(f"{what} {run_dir} already holds a run (last checkpoint {Path(named).name}); pass --resume "
                        f"to continue it, or choose another {choose} (or delete this one) to start over.")
