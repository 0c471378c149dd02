"""Detection data: large-scale jitter, resumable train loader with checked image reads, COCO dataset
registration.

Standard COCO under ``$DETECTRON2_DATASETS/coco/{train2017,val2017,annotations}`` is registered by
Detectron2 itself (``coco_2017_train`` / ``coco_2017_val``); any other COCO-format json + image
folder is registered with :func:`register_coco_dataset`.
"""
from __future__ import annotations

import difflib
import importlib.util
import json
import os
from typing import Callable

import detectron2.data.transforms as T
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    detection_utils,
)
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.utils import comm
from PIL import UnidentifiedImageError

from mae_transfer.data import BUILTIN_DATASETS, builtin_dataset
from mae_transfer.data.unreadable import UnreadableImages, error_reason

from .config import ConfigError
from .resumable_loader import build_resumable_loader


def build_train_augmentation(cfg: CfgNode) -> list[T.Augmentation]:
    """ViTDet's large-scale jitter when ``INPUT.LSJ.ENABLED``, else Detectron2's default.

    LSJ: horizontal flip, resize to a random scale in [MIN_SCALE, MAX_SCALE] of IMAGE_SIZE (aspect
    kept), then a random IMAGE_SIZE x IMAGE_SIZE crop; the padding to a square happens in the model
    (``MODEL.PYRAMID.SQUARE_PAD``).
    """
    lsj = cfg.INPUT.LSJ
    if not lsj.ENABLED:
        return detection_utils.build_augmentation(cfg, is_train=True)
    if cfg.MODEL.MASK_ON and importlib.util.find_spec("shapely") is None:
        raise ConfigError(
            "INPUT.LSJ.ENABLED crops polygon masks, which needs the 'shapely' package (pip install shapely); "
            "install it or set INPUT.LSJ.ENABLED False."
        )
    size = lsj.IMAGE_SIZE
    return [
        T.RandomFlip(horizontal=True),
        T.ResizeScale(min_scale=lsj.MIN_SCALE, max_scale=lsj.MAX_SCALE, target_height=size, target_width=size),
        T.FixedSizeCrop(crop_size=(size, size), pad=False),
    ]


class CheckedMapper:
    """Wrap a Detectron2 mapper: an image that cannot be decoded, or whose size differs from the json,
    stops the run naming the file, or is skipped (``skip``, ``DATALOADER.SKIP_UNREADABLE_IMAGES``).

    A skipped image makes the mapper return None (Detectron2's dataset then draws another one);
    the count is logged (:class:`mae_transfer.data.unreadable.UnreadableImages`).
    """

    def __init__(self, mapper: Callable[[dict], dict], skip: bool = False):
        self.mapper = mapper
        self.unreadable = UnreadableImages(skip, "set DATALOADER.SKIP_UNREADABLE_IMAGES True to skip such images")

    def __call__(self, dataset_dict: dict) -> dict | None:
        try:
            return self.mapper(dataset_dict)
        except (OSError, UnidentifiedImageError, SizeMismatchError) as err:
            name = dataset_dict.get("file_name", "?")
            if isinstance(err, SizeMismatchError):
                size = (dataset_dict.get("height"), dataset_dict.get("width"))
                self.unreadable.handle(name, f"its size differs from the (height, width) {size} in the json",
                                       fix="fix the json or the image")
            else:
                reason = "not a decodable image" if isinstance(err, UnidentifiedImageError) else error_reason(err)
                self.unreadable.handle(name, reason)
            return None



def build_train_loader(cfg: CfgNode, start_iter: int = 0, seed: int | None = None):
    """The train loader with the augmentation above, continuing at iteration ``start_iter``.

    Sample order, aspect-ratio grouping and augmentations are a function of (``seed``, iteration,
    rank, number of processes) only (see :mod:`mae_transfer.det.resumable_loader`), so a resumed
    run with the same number of processes sees exactly what an uninterrupted one would have seen.
    ``seed`` is the run's data seed (default ``cfg.SEED``, or a shared random one when negative).
    """
    mapper_args = DatasetMapper.from_config(cfg, is_train=True)
    mapper_args["augmentations"] = build_train_augmentation(cfg)
    if cfg.INPUT.LSJ.ENABLED:
        mapper_args["recompute_boxes"] = cfg.MODEL.MASK_ON  # boxes of cropped instances from masks
    mapper = CheckedMapper(DatasetMapper(**mapper_args), skip=cfg.DATALOADER.SKIP_UNREADABLE_IMAGES)
    if seed is None:
        seed = data_seed(cfg)
    loader_args = build_detection_train_loader.from_config(cfg, mapper=mapper)
    sampler = loader_args["sampler"]
    if hasattr(sampler, "_seed"):  # TrainingSampler / RepeatFactorTrainingSampler: the saved seed
        sampler._seed = int(seed)
    per_rank = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
    return build_resumable_loader(loader_args["dataset"], mapper, sampler, per_rank, seed=seed,
                                  grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
                                  num_workers=cfg.DATALOADER.NUM_WORKERS, start=start_iter)


def data_seed(cfg: CfgNode) -> int:
    """The data seed of a new run: ``cfg.SEED``, or one random seed shared by all ranks when negative."""
    return int(cfg.SEED) if cfg.SEED >= 0 else int(comm.shared_random_seed())


def build_test_loader(cfg: CfgNode, dataset_name: str):
    """Detectron2's test loader; an image that cannot be read stops evaluation naming the file."""
    return build_detection_test_loader(cfg, dataset_name, mapper=CheckedMapper(DatasetMapper(cfg, is_train=False)))


def register_coco_dataset(name: str, json_file: str, image_root: str) -> None:
    """Register a COCO-format instances json and its image folder under ``name``.

    Raises:
        ConfigError: when a path does not exist or the name is taken by another dataset.
    """
    if not os.path.isfile(json_file):
        raise ConfigError(f"COCO annotation file '{json_file}' for dataset '{name}' does not exist; check the path.")
    if not os.path.isdir(image_root):
        raise ConfigError(f"Image folder '{image_root}' for dataset '{name}' does not exist; check the path.")
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return  # already registered identically (e.g. by an earlier call in this process)
        raise ConfigError(f"Dataset name '{name}' is already registered; choose another name for {json_file}.")
    register_coco_instances(name, {}, json_file, image_root)


def num_classes_of(dataset_name: str) -> int:
    """Number of thing classes of a registered dataset, read from its metadata or json."""
    meta = MetadataCatalog.get(dataset_name)
    if meta.get("thing_classes") is not None:
        return len(meta.thing_classes)
    json_file = meta.get("json_file")
    if json_file and os.path.isfile(json_file):
        with open(json_file) as f:
            return len(json.load(f).get("categories", []))
    DatasetCatalog.get(dataset_name)  # loading a COCO json fills in thing_classes
    return len(MetadataCatalog.get(dataset_name).thing_classes)


def register_builtin_datasets(names) -> None:
    """Register the generated ``builtin_coco_*`` datasets among ``names`` (generated on first use)."""
    for name in names:
        if name in DatasetCatalog.list() or BUILTIN_DATASETS.get(name, {}).get("kind") != "coco":
            continue
        dataset = builtin_dataset(name)
        register_coco_dataset(name, str(dataset.json_path), str(dataset.image_dir))


def prepare_datasets(cfg: CfgNode) -> CfgNode:
    """Register built-in datasets the config names, check every name is registered, and fill
    ``MODEL.ROI_HEADS.NUM_CLASSES`` from the training set when it is 0 (= auto)."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    register_builtin_datasets(names)
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            close = difflib.get_close_matches(name, sorted(registered), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"Dataset '{name}' is not registered{hint}; register a COCO-format dataset with "
                f"--register-coco {name} JSON IMAGE_ROOT, or use coco_2017_train/val or builtin_coco_train/val."
            )
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES > 0:
        return cfg
    counts = {name: num_classes_of(name) for name in (cfg.DATASETS.TRAIN or cfg.DATASETS.TEST)}
    if not counts:
        raise ConfigError("DATASETS.TRAIN and DATASETS.TEST are both empty; name a registered dataset.")
    if len(set(counts.values())) > 1:
        raise ConfigError(f"Training datasets have different numbers of classes {counts}; "
                          "set MODEL.ROI_HEADS.NUM_CLASSES.")
    cfg = cfg.clone()
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = next(iter(counts.values()))
    if was_frozen:
        cfg.freeze()
    return cfg
