"""Errors a user can cause and fix, and how the command-line tools report them.

Every such error carries ONE sentence that names the file or config key and what to do. The tools
catch them in one place (their ``main``), print ``<tool>: error: <sentence>`` and exit non-zero,
without a traceback.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Sequence


class UserError(ValueError):
    """A problem in the user's inputs (config, checkpoint, dataset); the message says the fix."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception classes the tools report as one sentence (the project's own user errors)."""
    from mae_transfer.checkpoints import CheckpointMismatchError, CheckpointReadError

    return (UserError, CheckpointReadError, CheckpointMismatchError)


def one_sentence(error: BaseException) -> str:
    """The message of ``error`` on one line.

    A DataLoader worker re-raises a worker's exception with the whole traceback as its message
    ("Caught X in DataLoader worker process 0. Original Traceback ..."); the sentence is its last line.
    """
    text = str(error).strip()
    if "Original Traceback" in text or "Traceback (most recent call last)" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


class ConfigError(UserError):
    """A user-fixable problem in a config file, an override or a dataset path (one sentence)."""


def find_config_file(name: str | os.PathLike, folder: Path, suffixes: Sequence[str]) -> Path:
    """``name`` as a path, or a bare config name (``coco_vitb_mae``) looked up in ``folder``.

    Raises:
        ConfigError: naming the closest shipped config, or listing them all.
    """
    path = Path(name)
    if path.is_file():
        return path
    stem = path.stem if path.suffix in suffixes else path.name
    for suffix in suffixes:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    shipped = sorted({p.stem for suffix in suffixes for p in folder.glob(f"*{suffix}")
                      if not p.stem.endswith(".deviations")})  # recipe-diff deviations, not configs
    close = difflib.get_close_matches(stem, shipped, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"shipped configs: {', '.join(shipped)}."
    raise ConfigError(f"Config file '{name}' not found (neither a path nor a name in {folder}); {hint}")
