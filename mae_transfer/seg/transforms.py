"""Pipeline transforms that check every sample of a segmentation dataset as it is read.

* ``CheckedLoadImageFromFile``: an undecodable image stops the run naming the file (or is skipped and
  counted with ``--skip-unreadable-images``).
* ``CheckSegLabels``: a label map whose size differs from its image, or with classes out of range,
  stops the run.

:func:`add_sample_checks` puts them into a config's pipelines.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine.config import Config
from mmseg.registry import TRANSFORMS

from mae_transfer.data.unreadable import UnreadableImages, error_reason
from mae_transfer.errors import UserError

LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def dataset_configs(dataset: Any) -> Iterator[Mapping]:
    """A dataloader's dataset config and the ones it wraps (RepeatDataset, ConcatDataset)."""
    if not isinstance(dataset, Mapping):
        return
    yield dataset
    yield from dataset_configs(dataset.get("dataset"))
    for inner in dataset.get("datasets") or []:
        yield from dataset_configs(inner)


def add_sample_checks(cfg: Config, *, skip_unreadable: bool) -> None:
    """Swap in ``CheckedLoadImageFromFile`` and add ``CheckSegLabels`` after ``LoadAnnotations``."""
    heads = (cfg.get("model") or {}).get("decode_head")
    head = heads[0] if isinstance(heads, list) else heads
    num_classes = (head or {}).get("num_classes")
    for key in LOADERS:
        for dataset in dataset_configs((cfg.get(key) or {}).get("dataset")):
            pipeline = dataset.get("pipeline")
            if not isinstance(pipeline, list) or any(t.get("type") == "CheckSegLabels" for t in pipeline):
                continue  # not a list, or already checked (the same dict reached through two loaders)
            checked = []
            for transform in pipeline:
                if transform.get("type") == "LoadImageFromFile":
                    transform = dict(transform, type="CheckedLoadImageFromFile",
                                     skip=skip_unreadable and key == "train_dataloader")
                checked.append(transform)
                if transform.get("type") == "LoadAnnotations" and num_classes:
                    checked.append(dict(type="CheckSegLabels", num_classes=num_classes))
            dataset["pipeline"] = checked


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that names an undecodable file in one sentence, or skips it (``skip``).

    A skipped training image makes MMEngine's dataset draw another one; the count is logged
    (:class:`mae_transfer.data.unreadable.UnreadableImages`).
    """

    def __init__(self, skip: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.unreadable = UnreadableImages(skip, "pass --skip-unreadable-images to skip such training images")

    def transform(self, results: dict) -> dict | None:
        try:
            return super().transform(results)
        except Exception as err:  # noqa: BLE001  (mmcv raises what the decoder raises, or AssertionError)
            self.unreadable.handle(results.get("img_path"), error_reason(err))
            return None


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Stop on a label map whose size differs from its image or whose values are out of range.

    Valid values after loading: ``0 .. num_classes - 1`` and ``ignore_index`` (255; label 0 becomes
    255 with ``reduce_zero_label``).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def transform(self, results: dict) -> dict:
        label, path = results["gt_seg_map"], results.get("seg_map_path")
        image_hw = tuple(results.get("ori_shape") or label.shape[:2])
        if tuple(label.shape[:2]) != image_hw:
            raise UserError(f"Label map {path} is {label.shape[1]}x{label.shape[0]} pixels but its image "
                            f"{results.get('img_path')} is {image_hw[1]}x{image_hw[0]}; a label map must have "
                            "its image's size.")
        valid = (label < self.num_classes) | (label == self.ignore_index)
        if not valid.all():
            values = np.unique(label[~valid])
            shift = 1 if results.get("reduce_zero_label") else 0
            raw = ", ".join(str(int(v) + shift) for v in values[:5])
            allowed = f"1..{self.num_classes}, 0 = unlabelled" if shift else f"0..{self.num_classes - 1}"
            raise UserError(f"Label map {path} contains class id {raw} but the dataset has {self.num_classes} "
                            f"classes (ids {allowed}); fix the file or the class list (--classes).")
        return results
