"""Data-loading throughput per worker, and the loader workers per GPU a recipe needs (``loader``).

A DataLoader worker runs the dataset mapping serially, so the rate of the train loader built with
``num_workers 0`` (the same mapping in the main process) is the rate of one worker:

- detection: ``configs/det/coco_vitb_mae.yaml``'s train loader (read + decode, LSJ at 1024:
  flip, resize scale 0.1-2.0, 1024 crop, polygon masks cropped, boxes recomputed from them) on
  generated 1024x1024 images with polygon instances;
- segmentation: ``configs/seg/ade20k_vitb_mae.py``'s ADE20K train pipeline (read + decode,
  random resize to 2048x512 scale 0.5-2.0, 512 crop with ``cat_max_ratio``, flip, photometric
  distortion, packing) on generated 512x683 images.

Workers per GPU = ceil(images per GPU per second / images per second per worker), with images
per GPU per second = per-GPU batch / step time. The step times are the model zoos':
ViTDet-B Mask R-CNN 0.314 s/iter at batch 64 on 64 A100s (1 image per GPU per iteration: 3.18
images/s/GPU). MMSeg's MAE-B UperNet publishes no step time (its metafile: 8x V100, batch 16), so
its row states the rate needed at the same 0.314 s/iter with its 2 images per GPU (6.37 images/s),
and the formula for any other step time.
"""

from __future__ import annotations

import math
import time
from typing import Dict, List, Optional

from . import synthetic

__all__ = ["run", "workers_needed", "ZOO_STEP_S"]

ZOO_STEP_S = 0.314  # ViTDet-B Mask R-CNN, Detectron2 model zoo, 64 A100s, batch 64


def workers_needed(per_gpu_batch: int, step_s: float, img_per_s_per_worker: float) -> int:
    """Loader workers that keep one GPU fed: ``ceil(per_gpu_batch / step_s / rate per worker)``."""
    return math.ceil(per_gpu_batch / step_s / img_per_s_per_worker)


def _rate(batches, batch: int, count: int) -> Dict:
    next(batches)  # warm-up: loader start-up, first file reads
    times = []
    for _ in range(count):
        start = time.perf_counter()
        next(batches)
        times.append(time.perf_counter() - start)
    per_image = sorted(times)[len(times) // 2] / batch
    return {"img_per_s": 1.0 / per_image, "seconds": times}


def _det_batches(size: int, quick: bool):
    from mae_transfer.det import load_config
    from mae_transfer.det.data import build_train_loader

    dataset, _ = synthetic.coco_dataset(size, num_images=2 if quick else 4)
    cfg = load_config("coco_vitb_mae", ["DATASETS.TRAIN", (dataset,), "DATASETS.TEST", (),
                                        "SOLVER.IMS_PER_BATCH", 1, "DATALOADER.NUM_WORKERS", 0,
                                        "INPUT.LSJ.IMAGE_SIZE", size])  # fmt: skip
    return iter(build_train_loader(cfg))


def _seg_batches(crop: int, quick: bool):
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    import mae_transfer.seg  # noqa: F401  (registrations)
    from mae_transfer.seg.config import load_config

    root = synthetic.ade_dataset((crop, crop * 4 // 3), num_images=2 if quick else 4)
    cfg = load_config("ade20k_vitb_mae", {"model.backbone.pretrained": None})
    loader = cfg.train_dataloader
    loader.update(batch_size=2, num_workers=0, persistent_workers=False)
    loader.dataset.data_root = str(root)
    for t in loader.dataset.pipeline:
        if quick and t["type"] == "RandomResize":
            t["scale"] = (crop * 4, crop)
        if quick and t["type"] == "RandomCrop":
            t["crop_size"] = (crop, crop)
    with DefaultScope.overwrite_default_scope("mmseg"):
        return iter(Runner.build_dataloader(loader))


def _row(task: str, name: str, rate: Dict, batch: int, per_gpu: int, step_s: float, note: str) -> Dict:
    need = per_gpu / step_s
    return {"task": task, "name": name, "img_per_s_per_worker": rate["img_per_s"], "seconds": rate["seconds"],
            "batch": batch, "per_gpu_batch": per_gpu, "step_s": step_s, "img_per_s_per_gpu_needed": need,
            "workers_per_gpu": workers_needed(per_gpu, step_s, rate["img_per_s"]), "note": note}  # fmt: skip


def run(*, quick: bool, count: Optional[int] = None) -> List[Dict]:
    """Rows for the two train pipelines; a ``skipped`` row where one cannot run."""
    count = count or (2 if quick else 10)
    rows = []
    size = 128 if quick else 1024
    try:
        rate = _rate(_det_batches(size, quick), 1, count)
        rows.append(_row("det", f"LSJ mapper @{size}, polygon masks (coco_vitb_mae)", rate, 1, 1, ZOO_STEP_S,
                         "ViTDet-B zoo: 0.314 s/iter, 64 img on 64 A100 = 1 img/GPU/iter"))
    except Exception as e:  # a missing framework must not stop the run
        rows.append({"task": "det", "name": "LSJ mapper", "skipped": f"{type(e).__name__}: {e}"})
    crop = 128 if quick else 512
    try:
        rate = _rate(_seg_batches(crop, quick), 2, max(1, count // 2))
        rows.append(_row("seg", f"ADE20K train pipeline @{crop} (ade20k_vitb_mae)", rate, 2, 2, ZOO_STEP_S,
                         "no published MMSeg step time: at 0.314 s/iter, 2 img/GPU"))
    except Exception as e:
        rows.append({"task": "seg", "name": "ADE20K pipeline", "skipped": f"{type(e).__name__}: {e}"})
    return rows
