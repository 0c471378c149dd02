"""Where generated datasets live, and the manifests that make generation idempotent."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from mae_transfer.utils.fileio import atomic_write_text

MANIFEST_VERSION = 2  # bump when the generator's output changes, so caches are rebuilt


def builtin_root() -> Path:
    """Cache directory of the built-in datasets: ``$MAE_TRANSFER_DATA`` or ``~/.cache/mae_transfer/data``."""
    env = os.environ.get("MAE_TRANSFER_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mae_transfer" / "data"


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as they round-trip through json (tuples become lists)."""
    return json.loads(json.dumps({**params, "version": MANIFEST_VERSION}, sort_keys=True))


def is_generated(manifest: Path, params: dict[str, Any]) -> bool:
    """True when ``manifest`` exists and records exactly ``params``."""
    try:
        return json.loads(manifest.read_text()) == _jsonable(params)
    except (OSError, ValueError):
        return False


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write json atomically (:func:`~mae_transfer.utils.fileio.atomic_write_text`): readers never
    see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, sort_keys=True, separators=(",", ":")))


def write_manifest(manifest: Path, params: dict[str, Any]) -> None:
    """Record ``params``; written last, so an interrupted generation is redone next time."""
    write_json_atomic(manifest, _jsonable(params))


def remove_stale(directory: Path, pattern: str, keep: set[str]) -> None:
    """Delete files matching ``pattern`` that a previous, larger generation left behind."""
    for path in directory.glob(pattern):
        if path.name not in keep:
            path.unlink()


@contextlib.contextmanager
def generation_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on ``directory`` while it is generated, so that concurrent processes
    (e.g. one per GPU) generate it once and never read half-written files."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
