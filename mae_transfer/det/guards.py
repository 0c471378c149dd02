"""Checks that turn bad detection inputs into one clear sentence, before a run starts if possible.

* :func:`check_inputs` (``tools/train_det.py``, before any process starts or any file is written):
  a new run does not overwrite an earlier run's checkpoints, checkpoint paths exist, ``--eval-only``
  has weights, every COCO-format dataset the config names is well formed (fields, ids, polygons,
  image files on disk).
* :class:`CheckedMapper`: an image that cannot be decoded, or whose size differs from the json,
  stops training naming the file, or is skipped and counted with ``DATALOADER.SKIP_UNREADABLE_IMAGES``.
* :func:`check_weights_fit`: ``MODEL.WEIGHTS`` of another architecture is refused instead of being
  silently skipped tensor by tensor (Detectron2 only logs shape mismatches).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import Any, Callable, Mapping

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import SizeMismatchError
from PIL import UnidentifiedImageError

from mae_transfer.errors import UserError
from mae_transfer.utils import weights_fit

logger = logging.getLogger("mae_transfer.det")

# Validated datasets, by (json path, size, mtime, image root, masks): children started by
# ``launch`` inherit the environment variable, so a dataset is checked once per machine.
_CHECKED_ENV = "MAE_TRANSFER_CHECKED_DATASETS"


def add_guard_config(cfg: CfgNode) -> CfgNode:
    """Config keys of the input checks (defaults: check everything, stop on the first problem)."""
    cfg.DATALOADER.CHECK_DATASETS = True  # validate COCO json + image files before training
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = False  # True: skip undecodable images, logging a count
    return cfg


def _is_local(path: str) -> bool:
    return bool(path) and "://" not in path


def _has_last_checkpoint(output_dir: str) -> bool:
    return os.path.isfile(os.path.join(output_dir, "last_checkpoint"))


def check_weights_paths(cfg: CfgNode, *, eval_only: bool, resume: bool) -> None:
    """``MODEL.WEIGHTS`` / ``MODEL.VIT.WEIGHTS`` exist; ``--eval-only`` has something to evaluate."""
    resuming = resume and _has_last_checkpoint(cfg.OUTPUT_DIR)
    if eval_only and not cfg.MODEL.WEIGHTS and not resuming:
        raise UserError("--eval-only evaluates MODEL.WEIGHTS, which is empty; pass MODEL.WEIGHTS "
                        "path/to/model_final.pth (or --resume to evaluate the last checkpoint in OUTPUT_DIR).")
    if not resuming and _is_local(cfg.MODEL.WEIGHTS) and not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise UserError(f"MODEL.WEIGHTS file '{cfg.MODEL.WEIGHTS}' does not exist; check the path "
                        "(a backbone-only pretrained checkpoint goes in MODEL.VIT.WEIGHTS).")
    vit_weights = cfg.MODEL.VIT.WEIGHTS  # not read by --eval-only (MODEL.WEIGHTS replaces them)
    if not eval_only and _is_local(vit_weights) and not os.path.isfile(vit_weights):
        raise UserError(f"MODEL.VIT.WEIGHTS file '{vit_weights}' does not exist; check the path.")


def check_output_dir(cfg: CfgNode, *, eval_only: bool, resume: bool) -> None:
    """A new training run must not overwrite the checkpoints of an earlier run in ``OUTPUT_DIR``."""
    pointer = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    if not eval_only and not resume and os.path.isfile(pointer):
        with open(pointer) as f:
            last = f.read().strip()
        raise UserError(f"OUTPUT_DIR {cfg.OUTPUT_DIR} already holds a run (last checkpoint {last}); pass --resume "
                        "to continue it, or choose another OUTPUT_DIR (or delete this one) to start over.")


def check_inputs(cfg: CfgNode, *, eval_only: bool = False, resume: bool = False) -> None:
    """Weights paths and COCO datasets, before anything reads them; raises :class:`UserError`.

    Call :func:`check_output_dir` too, once every other problem had its chance to be reported.
    """
    check_weights_paths(cfg, eval_only=eval_only, resume=resume)
    if not cfg.DATALOADER.CHECK_DATASETS:
        return
    names = ([] if eval_only else list(cfg.DATASETS.TRAIN)) + list(cfg.DATASETS.TEST)
    for name in dict.fromkeys(names):
        meta = MetadataCatalog.get(name)
        json_file, image_root = meta.get("json_file"), meta.get("image_root")
        if json_file and image_root:
            check_coco_dataset(json_file, image_root, masks=cfg.MODEL.MASK_ON, dataset=name)


def type_mismatch_error(err: ValueError, source: str) -> UserError:
    """yacs' "Type mismatch (<class 'int'> vs. <class 'str'>) with values (300 vs. abc) for config key: K"."""
    found = re.search(r"\(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) for config key: (\S+)",
                      str(err))
    if not found:
        return UserError(f"Bad config value in {source} ({err}); give a value of the key's type.")
    want, _, default, given, key = found.groups()
    return UserError(f"Config key {key} in {source} expects a {want} (like {default}), not '{given}'; "
                     "give a value of that type.")


# ----------------------------------------------------------------------------- COCO json checks

def _stamp(json_file: str, image_root: str, masks: bool) -> str:
    stat = os.stat(json_file)
    return f"{os.path.abspath(json_file)}|{stat.st_size}|{stat.st_mtime_ns}|{os.path.abspath(image_root)}|{int(masks)}"


def check_coco_dataset(json_file: str, image_root: str, *, masks: bool = True, dataset: str = "") -> None:
    """Validate a COCO instances json and its image folder; raise :class:`UserError` on the first problem.

    Checked: valid JSON with ``images``/``annotations``/``categories`` lists; the fields Detectron2
    reads; annotations pointing at existing images and categories; finite boxes; polygons with at
    least 3 points and a non-zero area (``masks``); every listed image file present. Image contents
    are checked when they are read (:class:`CheckedMapper`).
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


# ----------------------------------------------------------------------------- reading images

class CheckedMapper:
    """Wrap a Detectron2 mapper: an unreadable image stops the run naming the file, or is skipped.

    With ``skip`` the mapper returns None for such an image (Detectron2's dataset then draws another
    one) and logs how many were skipped so far in this process.
    """

    def __init__(self, mapper: Callable[[dict], dict], skip: bool = False):
        self.mapper, self.skip, self.skipped = mapper, skip, 0

    def __call__(self, dataset_dict: dict) -> dict | None:
        try:
            return self.mapper(dataset_dict)
        except (OSError, UnidentifiedImageError, SizeMismatchError) as err:
            name = dataset_dict.get("file_name", "?")
            if isinstance(err, SizeMismatchError):
                size = (dataset_dict.get("height"), dataset_dict.get("width"))
                reason = f"its size differs from the (height, width) {size} in the json"
                fix = "fix the json or the image"
            else:
                reason = "not a decodable image" if isinstance(err, UnidentifiedImageError) else \
                    " ".join(str(err).split()) or type(err).__name__
                fix = "replace it"
            if not self.skip:
                raise UserError(f"Image file {name} cannot be used ({reason}); {fix}, or set "
                                "DATALOADER.SKIP_UNREADABLE_IMAGES True to skip such images.") from None
            self.skipped += 1
            logger.warning("Skipped unreadable image %s (%s); %d skipped so far in this process.",
                           name, reason, self.skipped)
            return None


# ----------------------------------------------------------------------------- checkpoint shapes

def check_weights_fit(model_state: Mapping[str, torch.Tensor], checkpoint_state: Mapping[str, Any],
                      filename: str) -> None:
    """``MODEL.WEIGHTS`` of another architecture is refused (see :mod:`mae_transfer.utils.weights_fit`)."""
    weights_fit.check_weights_fit(model_state, checkpoint_state, filename=filename, option="MODEL.WEIGHTS",
                                  backbone_option="MODEL.VIT.WEIGHTS",
                                  config_hint="use a config that matches the checkpoint (MODEL.VIT.*)")


def newest_checkpoint(save_dir: str, missing: str) -> str:
    """The newest ``model_*.pth`` in ``save_dir`` (``model_final`` first) when ``last_checkpoint`` names
    the file ``missing``, which is gone; raises :class:`UserError` when there is none."""
    names = sorted(n for n in os.listdir(save_dir) if re.fullmatch(r"model_\d+\.pth", n))
    if os.path.isfile(os.path.join(save_dir, "model_final.pth")):
        names.append("model_final.pth")
    if not names:
        raise UserError(f"--resume: {os.path.join(save_dir, 'last_checkpoint')} names {missing}, which does not "
                        "exist, and there is no other model_*.pth; restore the file or start without --resume.")
    logger.warning("last_checkpoint names %s, which does not exist; resuming from %s", missing, names[-1])
    return os.path.join(save_dir, names[-1])
