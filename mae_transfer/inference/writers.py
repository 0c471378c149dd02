"""What ``tools/predict.py`` writes per image, into a folder that becomes the output only when complete.

Detection: ``<stem>.png`` (masks, boxes, class names, scores), ``predictions.json`` (COCO results
format, RLE masks) and ``images.json`` (the COCO ``images`` / ``categories`` the results refer to:
``COCO("images.json").loadRes("predictions.json")``).
Segmentation: ``<stem>.png`` (colour map over the image, legend beside it), ``labels/<stem>.png``
(class ids as pixel values, a palette PNG; 16-bit above 256 classes) and ``index.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mae_transfer.errors import UserError

from .coco import coco_images, coco_results
from .draw import draw_detections, draw_segmentation


class StagedFolder:
    """A temporary folder beside ``out`` that is renamed to ``out`` on :meth:`commit`, or deleted.

    Raises:
        UserError: when ``out`` exists and is not an empty folder (an earlier output is kept).
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise UserError(f"Output {self.out} already exists and is not empty; choose another --out or delete it.")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))

    def commit(self) -> Path:
        if self.out.is_dir():
            self.out.rmdir()  # empty (checked above)
        os.rename(self.path, self.out)
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def unique_stem(path: Path, taken: set[str]) -> str:
    """The file's stem, with ``_2``, ``_3``, ... when an earlier input had the same stem."""
    stem, k = path.stem, 1
    while stem in taken:
        k += 1
        stem = f"{path.stem}_{k}"
    taken.add(stem)
    return stem


def _write_json(path: Path, data: Any, indent: int | None = 1) -> None:
    path.write_text(json.dumps(data, indent=indent) + "\n")


class DetectionWriter:
    """Overlay PNGs and COCO results of detections."""

    def __init__(self, folder: Path, class_names: tuple[str, ...], category_ids: list[int] | None):
        self.folder, self.class_names, self.category_ids = folder, class_names, category_ids
        self.results: list[dict] = []
        self.images: list[tuple[int, str, int, int]] = []

    def add(self, source: Path, stem: str, image: np.ndarray, result) -> None:
        image_id = len(self.images) + 1
        draw_detections(image, result).save(self.folder / f"{stem}.png")
        self.results.extend(coco_results(result, image_id, self.category_ids))
        self.images.append((image_id, str(source), *result.image_size))

    def finish(self) -> None:
        _write_json(self.folder / "predictions.json", self.results, indent=None)  # compact: RLE strings make it large
        _write_json(self.folder / "images.json", coco_images(self.images, self.class_names, self.category_ids))


class SegmentationWriter:
    """Overlay PNGs with a legend, label PNGs and their index."""

    def __init__(self, folder: Path, class_names: tuple[str, ...], palette: tuple[tuple[int, int, int], ...]):
        self.folder, self.class_names, self.palette = folder, class_names, palette
        (folder / "labels").mkdir()
        self.entries: list[dict] = []

    def _label_png(self, label_map: np.ndarray) -> Image.Image:
        if len(self.class_names) > 256:
            return Image.fromarray(label_map.astype(np.uint16))
        label = Image.fromarray(label_map.astype(np.uint8), mode="P")
        label.putpalette([v for colour in self.palette for v in colour])
        return label

    def add(self, source: Path, stem: str, image: np.ndarray, result) -> None:
        draw_segmentation(image, result).save(self.folder / f"{stem}.png")
        self._label_png(result.label_map).save(self.folder / "labels" / f"{stem}.png")
        present = [int(c) for c in np.unique(result.label_map)]
        self.entries.append({"image": str(source), "overlay": f"{stem}.png", "labels": f"labels/{stem}.png",
                             "height": result.image_size[0], "width": result.image_size[1],
                             "classes_present": [self.class_names[c] for c in present]})

    def finish(self) -> None:
        _write_json(self.folder / "index.json", {
            "label_values": "pixel value = class id, an index into 'classes'",
            "classes": list(self.class_names), "palette": [list(c) for c in self.palette],
            "images": self.entries})
