"""Named built-in datasets, generated on first use into :func:`builtin_root`.

``builtin_dataset("builtin_coco_train")`` returns where the data lives, generating it only when the
cache is missing or was made with other parameters. Keyword overrides (e.g. ``num_images=16``)
go to a separate directory named after their hash, so differently sized variants coexist.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ade import STUFF_CLASSES, ade_class_names, make_ade_semantic
from .cache import builtin_root
from .coco import make_coco_instances
from .render import shape_classes

NUM_OBJECT_CLASSES = 5  # house, cross, arrow, L, dumbbell (sky and ground are added in ADE)

# Labelled splits sized for the CPU demo (a few minutes of fine-tuning per run on 2 cores); the
# pretraining pool is 16x the labelled train split. Splits draw from different random streams (keyed
# by split name), so pool, train and val never share an image.
BUILTIN_DATASETS: dict[str, dict[str, Any]] = {
    "builtin_coco_train": dict(kind="coco", split="train", num_images=64, image_size=(256, 256),
                               num_classes=NUM_OBJECT_CLASSES, seed=0),
    "builtin_coco_val": dict(kind="coco", split="val", num_images=32, image_size=(256, 256),
                             num_classes=NUM_OBJECT_CLASSES, seed=0),
    "builtin_ade": dict(kind="ade", num_train=64, num_val=32, image_size=(256, 256),
                        num_classes=len(STUFF_CLASSES) + NUM_OBJECT_CLASSES, seed=0),
    # The unlabelled pool for MAE pretraining (its annotations serve only supervised pretraining).
    "builtin_pretrain": dict(kind="coco", split="pretrain", num_images=1024, image_size=(256, 256),
                             num_classes=NUM_OBJECT_CLASSES, seed=0),
}


@dataclass(frozen=True)
class BuiltinDataset:
    """Paths and class names of a generated dataset.

    ``json_path``/``image_dir`` are set for COCO-style datasets, ``root`` for all (the
    ADEChallengeData2016-like folder for ``kind == "ade"``).
    """
    name: str
    kind: str
    root: Path
    class_names: tuple[str, ...]
    json_path: Path | None = None
    image_dir: Path | None = None


def _dataset_dir(name: str, overrides: dict[str, Any], root: Path) -> Path:
    if not overrides:
        return root / name
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=list).encode()).hexdigest()
    return root / f"{name}-{digest[:8]}"


def builtin_dataset(name: str, root: str | Path | None = None, **overrides: Any) -> BuiltinDataset:
    """Generate (idempotently) and describe the built-in dataset ``name``.

    Args:
        name: one of ``BUILTIN_DATASETS`` ("builtin_coco_train", "builtin_coco_val", "builtin_ade",
            "builtin_pretrain").
        root: cache directory (default :func:`builtin_root`).
        overrides: generator arguments to change, e.g. ``num_images=16``.
    """
    if name not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset {name!r}; choose one of {sorted(BUILTIN_DATASETS)}.")
    params = dict(BUILTIN_DATASETS[name])
    unknown = (set(overrides) - set(params)) | ({"kind"} & set(overrides))
    if unknown:
        raise TypeError(f"built-in dataset {name!r} has no parameter(s) {sorted(unknown)}; "
                        f"valid ones: {sorted(set(params) - {'kind'})}.")
    params.update(overrides)
    kind = params.pop("kind")
    directory = _dataset_dir(name, overrides, Path(root) if root else builtin_root())
    if kind == "ade":
        ade_root = make_ade_semantic(directory, **params)
        return BuiltinDataset(name, kind, ade_root, ade_class_names(params["num_classes"]))
    json_path, image_dir = make_coco_instances(directory, **params)
    names = tuple(c.name for c in shape_classes(params["num_classes"]))
    return BuiltinDataset(name, kind, directory, names, json_path, image_dir)


def builtin_image_dir(name: str = "builtin_pretrain", root: str | Path | None = None,
                      **overrides: Any) -> Path:
    """A plain folder of images for pretraining (the images of a COCO-style built-in)."""
    dataset = builtin_dataset(name, root, **overrides)
    if dataset.image_dir is None:
        return dataset.root / "images" / "training"
    return dataset.image_dir
