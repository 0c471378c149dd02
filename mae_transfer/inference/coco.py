"""Detections in COCO results format (boxes x y w h, RLE masks), loadable with pycocotools ``loadRes``."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_util

from .det import DetectionResult


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_results(result: DetectionResult, image_id: int, category_ids: Sequence[int] | None = None
                 ) -> list[dict[str, Any]]:
    """One COCO result dict per detection; class c gets ``category_ids[c]`` (default c + 1)."""
    boxes, scores, classes, masks = result.boxes, result.scores, result.classes, result.masks
    records = []
    for k in range(len(result)):
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        category = int(category_ids[classes[k]]) if category_ids is not None else int(classes[k]) + 1
        record = {"image_id": int(image_id), "category_id": category, "bbox": [x0, y0, x1 - x0, y1 - y0],
                  "score": float(scores[k])}
        if masks is not None:
            record["segmentation"] = encode_mask(masks[k])
        records.append(record)
    return records


def coco_images(entries: Sequence[tuple[int, str, int, int]], class_names: Sequence[str],
                category_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """A COCO dataset skeleton (``images`` and ``categories``, no annotations) for the predicted images:
    ``COCO(images.json).loadRes(predictions.json)`` needs one. ``entries``: (id, file, height, width)."""
    ids = list(category_ids) if category_ids is not None else list(range(1, len(class_names) + 1))
    return {"images": [{"id": i, "file_name": f, "height": h, "width": w} for i, f, h, w in entries],
            "categories": [{"id": int(c), "name": n} for c, n in zip(ids, class_names)],
            "annotations": []}
