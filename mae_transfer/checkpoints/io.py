"""Read checkpoint files safely: local paths or URLs (cached), `.pth/.pt/.pkl/.safetensors`.

Safe by default: torch pickles are read with ``torch.load(weights_only=True)``, plain pickles
(Detectron2 ``.pkl``) with an unpickler that only accepts numpy arrays and plain containers,
and safetensors hold no code at all. A file that needs arbitrary code to unpickle is refused
unless the caller opts in with ``unsafe=True`` (``--unsafe-load`` on the command line).
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import os
import pickle
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mae_transfer.errors import CheckpointError, UnsafeCheckpointError
from mae_transfer.utils.fileio import atomic_write
from mae_transfer.utils.logger import get_logger

logger = get_logger(__name__)

UNSAFE_HINT = "pass unsafe=True (--unsafe-load on the command line) only if you trust its source"


def cache_dir() -> Path:
    """Where downloaded checkpoints live: ``$MAE_TRANSFER_CACHE/checkpoints``
    (default ``~/.cache/mae_transfer/checkpoints``)."""
    root = os.environ.get("MAE_TRANSFER_CACHE", "~/.cache/mae_transfer")
    return Path(root).expanduser() / "checkpoints"


def is_url(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and urllib.parse.urlparse(source).scheme in ("http", "https", "ftp")


def download(url: str, directory: str | os.PathLike | None = None) -> Path:
    """Download ``url`` once into the cache and return the local file.

    The file name keeps the URL's base name (its suffix tells the format) behind a short hash
    of the whole URL, so two URLs with the same base name do not collide. The write is atomic
    (temporary file in the same directory, fsync, rename): an interrupted download never
    leaves a file that looks complete.
    """
    directory = Path(directory) if directory is not None else cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name or "checkpoint.pth"
    target = directory / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    if target.is_file():
        logger.info("Using cached %s for %s", target, url)
        return target
    directory.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s to %s", url, target)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            atomic_write(target, lambda out: shutil.copyfileobj(response, out, 1 << 20))
    except (urllib.error.URLError, OSError) as err:
        raise CheckpointError(
            f"Could not download checkpoint {url} ({err}); check the address, or download the "
            f"file by hand and pass its local path."
        ) from err
    logger.info("Downloaded %.1f MB", target.stat().st_size / 1e6)
    return target


# Globals a checkpoint may reference without running code of the file's choosing: numpy
# arrays (Detectron2 .pkl, some MMEngine metadata), ordered dicts, and training arguments
# stored as an argparse.Namespace (MAE / DeiT training checkpoints).
def _numpy_globals() -> list[Any]:
    multiarray = getattr(np, "_core", None) or np.core
    dtype_classes = [type(np.dtype(t)) for t in "?bhilqBHILQefdgFDGUSO"]
    return [multiarray.multiarray._reconstruct, multiarray.multiarray.scalar, np.ndarray,
            np.dtype, *dtype_classes]


def _safe_globals() -> list[Any]:
    return [argparse.Namespace, collections.OrderedDict, *_numpy_globals()]


class _RestrictedUnpickler(pickle.Unpickler):
    """Plain-pickle reader (Detectron2 .pkl) that accepts numpy arrays and plain containers only."""

    ALLOWED = {
        ("collections", "OrderedDict"), ("argparse", "Namespace"), ("numpy", "ndarray"),
        ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")


def _numpy_to_torch(obj: Any) -> Any:
    """Detectron2 .pkl files hold numpy arrays; turn them into tensors (recursively)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return type(obj)((k, _numpy_to_torch(v)) for k, v in obj.items()) if isinstance(
            obj, collections.OrderedDict) else {k: _numpy_to_torch(v) for k, v in obj.items()}
    return obj


def _refused(path: Path, err: Exception) -> UnsafeCheckpointError:
    found = re.search(r"GLOBAL (\S+)", str(err))
    what = f"'{found.group(1)}'" if found else "an object that is not plain weights"
    return UnsafeCheckpointError(
        f"Refused to load {path}: unpickling it would run code ({what}); {UNSAFE_HINT}."
    )


def _read_file(path: Path, unsafe: bool) -> Any:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK") or _TORCH_LEGACY_MAGIC in head:
        # torch.save: zip archive (memory-mapped, so a ViT-H file is not read twice), or pre-1.6 format
        return _torch_load(path, unsafe, mmap=head.startswith(b"PK"))
    if _looks_like_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file ({err}); "
                                  f"it may be truncated: download or copy it again.") from err
    return _pickle_load(path, unsafe)  # plain pickle, e.g. Detectron2 model-zoo .pkl


# torch.save's legacy (non-zip) format starts with this pickled magic number.
_TORCH_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _looks_like_safetensors(head: bytes) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON object."""
    return len(head) > 8 and head[8:9] == b"{"


def _torch_load(path: Path, unsafe: bool, mmap: bool) -> Any:
    try:
        if unsafe:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise _refused(path, err) from None
        raise CheckpointError(f"{path} is corrupt ({err}); download or copy it again.") from err
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({str(err).splitlines()[0]}); download or copy it again."
        ) from err


def _pickle_load(path: Path, unsafe: bool) -> Any:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1") if unsafe else _RestrictedUnpickler(
                f, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):
            raise _refused(path, err) from None
        raise CheckpointError(f"{path} is corrupt ({err}); download or copy it again.") from err
    except (EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is truncated or corrupt ({err}); download or copy it again.") from err
    return _numpy_to_torch(obj)


def read_checkpoint(source: str | os.PathLike, *, unsafe: bool = False) -> Any:
    """Return the object stored in a checkpoint file (a state dict or a dict wrapping one).

    Args:
        source: local path or http(s) URL (downloaded once to :func:`cache_dir`).
        unsafe: allow pickles that run arbitrary code while loading. Off by default; such a
            file raises :class:`UnsafeCheckpointError` naming this option.
    """
    path = download(source) if is_url(source) else Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} does not exist; check the path "
                              f"(or pass an http(s) URL).")
    return _read_file(path, unsafe)


def save_checkpoint(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write a flat state dict atomically: ``.safetensors`` (with string ``metadata``) or
    ``{'model': tensors, 'mae_transfer': metadata}`` via ``torch.save`` for any other suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save
        atomic_write(path, lambda f: f.write(save(tensors, metadata=dict(metadata or {}))))
    else:
        atomic_write(path, lambda f: torch.save({"model": tensors, "mae_transfer": dict(metadata or {})}, f))
    return path
