"""The shipped configs, installed with the package (as Detectron2's ``model_zoo`` ships its own):
``det/*.yaml`` (Detectron2 yacs, ``_BASE_``) and ``seg/*.py`` (MMSegmentation, ``_base_/``).

A tool's ``--config`` is a path, or a bare name (``coco_vitb_mae``) looked up here from any
directory. The repository's top-level ``configs/`` is a link to this folder.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Sequence

from mae_transfer.errors import ConfigError

CONFIG_ROOT = Path(__file__).resolve().parent
DET_CONFIG_DIR = CONFIG_ROOT / "det"
SEG_CONFIG_DIR = CONFIG_ROOT / "seg"
DET_SUFFIXES = (".yaml", ".yml")
SEG_SUFFIXES = (".py",)


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


def framework_of(config: str | os.PathLike) -> str:
    """``"det"`` for a Detectron2 yaml config, ``"seg"`` for an MMSeg python config; a bare name is
    looked up in both folders.

    Raises:
        ConfigError: a bare name found in both folders or in neither.
    """
    suffix = Path(config).suffix
    if suffix in DET_SUFFIXES:
        return "det"
    if suffix in SEG_SUFFIXES:
        return "seg"
    det = any((DET_CONFIG_DIR / f"{config}{s}").is_file() for s in DET_SUFFIXES)
    seg = any((SEG_CONFIG_DIR / f"{config}{s}").is_file() for s in SEG_SUFFIXES)
    if det == seg:
        where = "both configs/det and configs/seg" if det else "neither configs/det nor configs/seg"
        raise ConfigError(f"Config '{config}' is in {where}; pass a path to a .yaml or .py file.")
    return "det" if det else "seg"
