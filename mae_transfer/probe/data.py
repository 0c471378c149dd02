"""ADE20K-layout folders read into memory at one square size, for the frozen-feature probe.

Layout under ``root`` (ADEChallengeData2016, and the built-in ``builtin_ade``)::

    images/{training,validation}/NAME.jpg       RGB images
    annotations/{training,validation}/NAME.png  uint8 labels: 0 = unlabelled, 1..K = classes

Labels are reduced as MMSeg's ``ADE20KDataset`` (``reduce_zero_label=True``): 0 -> 255 (ignored),
k -> k - 1, and a raw 255 stays ignored. Images are resized (bilinear) and labels (nearest) to
``size x size``; images are kept as uint8 and normalised with the ImageNet mean/std only when a
batch is read (:meth:`SegSplit.normalised`), so a large folder costs 3 bytes per pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from mae_transfer.errors import DataError, MissingFileError
from mae_transfer.utils.images import IMAGENET_MEAN, IMAGENET_STD, list_images

IGNORE_INDEX = 255
SPLITS = ("training", "validation")


@dataclass
class SegSplit:
    """One split in memory.

    Attributes:
        images: ``(N, 3, S, S)`` uint8 RGB.
        labels: ``(N, S, S)`` int64, classes ``0..K-1`` and :data:`IGNORE_INDEX`.
        names: file stems, in order.
    """

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def normalised(self, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """Images ``start:stop`` as float ``(B, 3, S, S)``, ImageNet mean/std normalised."""
        x = self.images[start:stop].float().div_(255)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def max_label(self) -> int:
        """The largest class index present (-1 when every pixel is ignored)."""
        valid = self.labels[self.labels != IGNORE_INDEX]
        return int(valid.max()) if valid.numel() else -1


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
    """MMSeg's ``reduce_zero_label``: ``0 -> 255``, ``k -> k - 1``, raw 255 stays 255; ``(H, W)`` uint8."""
    out = raw.astype(np.int64) - 1
    out[(raw == 0) | (raw == IGNORE_INDEX)] = IGNORE_INDEX
    return out


def _read_pair(image_path: Path, label_path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with Image.open(image_path) as image:
            rgb = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
        with Image.open(label_path) as label:
            if label.mode not in ("L", "P"):
                raise DataError(f"Annotation {label_path} has mode {label.mode}; ADE20K-layout labels are "
                                f"single-channel uint8 PNGs (0 = unlabelled, 1..K = classes).")
            raw = np.asarray(label.resize((size, size), Image.NEAREST))
    except OSError as err:
        raise DataError(f"Image or annotation {image_path.stem} cannot be read ({err}); replace or "
                        f"remove it.") from None
    return rgb, reduce_zero_label(raw)


def load_ade_split(root: str | Path, split: str = "training", size: int = 128) -> SegSplit:
    """Read ``root/images/<split>`` and ``root/annotations/<split>`` (matched by file stem).

    Args:
        root: an ADE20K-layout folder (see the module docstring).
        split: ``"training"`` or ``"validation"``.
        size: square side the images and labels are resized to.

    Raises:
        MissingFileError: the folder, the split or an image's annotation is missing, or no images.
        DataError: an annotation that is not a single-channel label map, or an unreadable file.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"Data folder {root} does not exist; pass --data with an ADE20K-layout folder "
                               f"(images/{{training,validation}}, annotations/{{training,validation}}).")
    image_dir, label_dir = root / "images" / split, root / "annotations" / split
    if not image_dir.is_dir():
        raise MissingFileError(f"{image_dir} does not exist; an ADE20K-layout folder has "
                               f"images/{{training,validation}} and annotations/{{training,validation}}.")
    images = list_images(image_dir)
    pairs = []
    for path in images:
        label_path = label_dir / path.relative_to(image_dir).with_suffix(".png")
        if not label_path.is_file():
            raise MissingFileError(f"Image {path} has no annotation {label_path}; add the label map "
                                   f"(uint8 PNG, same stem) or remove the image.")
        pairs.append(_read_pair(path, label_path, size))
    rgb = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(np.stack([p[1] for p in pairs]))
    return SegSplit(rgb, labels, [p.stem for p in images])


def load_ade(root: str | Path, size: int = 128,
             num_classes: Optional[int] = None) -> tuple[SegSplit, SegSplit, int]:
    """Both splits of an ADE20K-layout folder and the number of classes ``K``.

    ``K`` is ``num_classes`` when given (checked against the labels), else one more than the
    largest reduced label found in either split.

    Raises:
        DataError: a label is ``>= num_classes``, or no pixel is labelled at all.
    """
    train, val = (load_ade_split(root, split, size) for split in SPLITS)
    largest = max(train.max_label(), val.max_label())
    if num_classes is None:
        if largest < 0:
            raise DataError(f"Every annotation under {root} is 0 (unlabelled); labels 1..K mark the classes.")
        return train, val, largest + 1
    if largest >= num_classes:
        raise DataError(f"Annotations under {root} hold label {largest + 1} (class {largest} after "
                        f"reduce_zero_label) but num_classes={num_classes}; pass the right number of classes.")
    return train, val, num_classes
