"""Validation of a COCO instances json and its image folder, before training reads them.

Framework-free: Detectron2's input checks (:func:`mae_transfer.det.guards.check_inputs`) call
:func:`check_coco_dataset` for every COCO-format dataset a config names; the image contents are
checked when they are read (:class:`mae_transfer.det.data.CheckedMapper`).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from mae_transfer.errors import UserError

# Validated datasets, by (json path, size, mtime, image root, masks): children started by
# ``launch`` inherit the environment variable, so a dataset is checked once per machine.
_CHECKED_ENV = "MAE_TRANSFER_CHECKED_DATASETS"


def _stamp(json_file: str, image_root: str, masks: bool) -> str:
    stat = os.stat(json_file)
    return f"{os.path.abspath(json_file)}|{stat.st_size}|{stat.st_mtime_ns}|{os.path.abspath(image_root)}|{int(masks)}"


def check_coco_dataset(json_file: str, image_root: str, *, masks: bool = True, dataset: str = "") -> None:
    """Validate a COCO instances json and its image folder; raise :class:`UserError` on the first problem.

    Checked: valid JSON with ``images``/``annotations``/``categories`` lists; the fields Detectron2
    reads; annotations pointing at existing images and categories; finite boxes; polygons with at
    least 3 points and a non-zero area (``masks``); every listed image file present. Image contents
    are checked when they are read (:class:`mae_transfer.det.data.CheckedMapper`).
    """
    where = f"COCO annotation file {json_file}" + (f" (dataset '{dataset}')" if dataset else "")
    if not os.path.isfile(json_file):
        raise UserError(f"{where} does not exist; for COCO put it under $DETECTRON2_DATASETS/coco/annotations "
                        "(see README), for your own data check the --register-coco path.")
    if not os.path.isdir(image_root):
        raise UserError(f"Image folder {image_root} of {where} does not exist; check the path.")
    stamp = _stamp(json_file, image_root, masks)
    checked = os.environ.get(_CHECKED_ENV, "").split("\n")
    if stamp in checked:
        return
    data = _read_json(json_file, where)
    images = _check_images(data, where)
    categories = {c.get("id") for c in _entries(data, "categories", where, ("id", "name"))}
    _check_annotations(data, where, set(images), categories, masks)
    _check_image_files(images, image_root, where)
    os.environ[_CHECKED_ENV] = "\n".join([*checked, stamp]).strip()


def _read_json(json_file: str, where: str) -> dict:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise UserError(f"{where} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                        "fix or regenerate it.") from None
    except UnicodeDecodeError:
        raise UserError(f"{where} is not a text (JSON) file; pass the instances json.") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} holds a {type(data).__name__}, not a COCO object; it needs 'images', "
                        "'annotations' and 'categories' lists.")
    return data


def _entries(data: Mapping, key: str, where: str, required: tuple[str, ...]) -> list[dict]:
    """``data[key]`` as a list of dicts that all have ``required`` fields."""
    entries = data.get(key)
    if not isinstance(entries, list):
        raise UserError(f"{where} has no '{key}' list; a COCO instances file needs 'images', "
                        "'annotations' and 'categories' lists.")
    for index, entry in enumerate(entries):
        missing = [field for field in required if not isinstance(entry, dict) or field not in entry]
        if missing:
            ident = entry.get("id", "?") if isinstance(entry, dict) else "?"
            raise UserError(f"{where}: {key} entry #{index} (id {ident}) lacks '{missing[0]}'; every "
                            f"{key} entry needs {', '.join(repr(f) for f in required)}.")
    return entries


def _check_images(data: Mapping, where: str) -> dict[Any, str]:
    images = _entries(data, "images", where, ("id", "file_name", "height", "width"))
    by_id: dict[Any, str] = {}
    for image in images:
        if image["id"] in by_id:
            raise UserError(f"{where}: image id {image['id']} appears twice in 'images'; image ids must be unique.")
        by_id[image["id"]] = image["file_name"]
    return by_id


def _polygon_area(points: list[float]) -> float:
    xs, ys = points[0::2], points[1::2]
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


def _segmentation_problem(segmentation: Any) -> str | None:
    """Why a polygon segmentation cannot make a mask (None when fine; RLE dicts are not checked)."""
    if isinstance(segmentation, dict):
        return None
    if not isinstance(segmentation, list) or not segmentation:
        return "an empty segmentation"
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            count = len(polygon) if isinstance(polygon, list) else 0
            return f"a polygon with {count} coordinates (needs >= 3 x,y points)"
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in polygon):
            return "a polygon with a non-numeric or non-finite coordinate"
        if _polygon_area(polygon) == 0:
            return "a polygon of zero area"
    return None


def _check_annotations(data: Mapping, where: str, image_ids: set, category_ids: set, masks: bool) -> None:
    required = ("image_id", "category_id", "bbox") + (("segmentation",) if masks else ())
    fix = "fix or delete these annotations (or set DATALOADER.CHECK_DATASETS False to train anyway)"
    bad: list[tuple[Any, str]] = []
    for ann in _entries(data, "annotations", where, required):
        ident = ann.get("id", "?")
        if ann["image_id"] not in image_ids:
            raise UserError(f"{where}: annotation {ident} points at image_id {ann['image_id']}, which is not "
                            "in 'images'; add the image or delete the annotation.")
        if ann["category_id"] not in category_ids:
            raise UserError(f"{where}: annotation {ident} has category_id {ann['category_id']}, which is not "
                            "in 'categories'; add the category or fix the annotation.")
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
            bad.append((ident, f"bbox {box} (needs 4 finite numbers x, y, w, h)"))
        elif masks and not ann.get("iscrowd", 0):
            problem = _segmentation_problem(ann["segmentation"])
            if problem:
                bad.append((ident, problem))
    if bad:
        ident, problem = bad[0]
        raise UserError(f"{where}: annotation {ident} has {problem}" +
                        (f" ({len(bad)} bad annotations in all)" if len(bad) > 1 else "") + f"; {fix}.")


def _check_image_files(images: Mapping[Any, str], image_root: str, where: str) -> None:
    missing = [name for name in images.values() if not os.path.isfile(os.path.join(image_root, name))]
    if missing:
        raise UserError(f"{where} lists {len(missing)} image(s) missing from {image_root} (first: "
                        f"{os.path.join(image_root, missing[0])}); fix the image folder or remove them from the json.")
