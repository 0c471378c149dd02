"""Detection / segmentation pipeline timings and data-loading throughput (demo configs).

- ``det``: Mask R-CNN (``configs/det/demo_vit_tiny.yaml`` on the built-in data) train step
  (forward, backward, optimizer step) and inference per image, built by ``mae_transfer.det``
  exactly as ``tools/train_det.py`` builds them.
- ``seg``: UperNet (``configs/seg/demo_vit_tiny.py``) ``train_step`` through MMEngine's Runner and
  test-time inference per image.
- with each: seconds per batch of the task's train loader, beside its step time (``data / step``
  well below 1 means loading is not the bottleneck).

- ``det_vitb`` / ``seg_vitb``: ViT-B at the recipe resolutions (:mod:`.recipes`).

A case whose framework is missing or fails reports a ``skipped`` row with the reason.
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Dict, List, Optional

import torch

from . import recipes
from .measure import Timer, median

__all__ = ["run"]

logger = logging.getLogger("mae_transfer.benchmark")


def _row(task: str, case: str, value: Optional[float], unit: str, note: str = "") -> Dict:
    return {"task": task, "case": case, "value": value, "unit": unit, "note": note}


def _timed(fn, device: torch.device, n: int) -> float:
    timer = Timer(device)
    fn()  # warm-up
    return median([timer(fn) for _ in range(n)])


def _det(device: torch.device, quick: bool) -> List[Dict]:
    from detectron2.utils.events import EventStorage

    from mae_transfer.det import build_model, load_config, prepare_datasets
    from mae_transfer.det.data import build_train_loader
    from mae_transfer.det.optimizer import build_optimizer

    cfg = prepare_datasets(load_config("demo_vit_tiny", ["MODEL.DEVICE", device.type, "DATALOADER.NUM_WORKERS", "0"]))
    model = build_model(cfg, device=device.type)
    optimizer = build_optimizer(cfg, model)
    batches = iter(build_train_loader(cfg))
    n = 1 if quick else 3
    train_step, infer = recipes.detector_steps(model, optimizer, next(batches), device)
    with EventStorage(0):  # Detectron2's heads log into it during training
        step = _timed(train_step, device, n)
    data = median([_time_next(batches) for _ in range(n + 1)])
    size = cfg.SOLVER.IMS_PER_BATCH
    return [
        _row("det", "Mask R-CNN demo_vit_tiny train step", step, "s/iter", f"batch {size}"),
        _row("det", "Mask R-CNN demo_vit_tiny inference", _timed(infer, device, n), "s/img"),
        _row("data", "det train loader", data, "s/batch",
             f"data/step = {data / step:.2f} (NUM_WORKERS 0)"),
    ]  # fmt: skip


def _time_next(iterator) -> float:
    start = time.perf_counter()
    next(iterator)
    return time.perf_counter() - start


def _seg(device: torch.device, quick: bool) -> List[Dict]:
    import mae_transfer.seg  # noqa: F401  (mmcv.ops stand-in, registrations)
    from mae_transfer.seg.config import prepare_config
    from mae_transfer.seg.runner import MAETransferRunner

    with tempfile.TemporaryDirectory() as work_dir:
        cfg = prepare_config("demo_vit_tiny", work_dir=work_dir)
        runner = MAETransferRunner.from_cfg(cfg)
        model = runner.model.to(device)
        optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
        loader = runner.build_dataloader(cfg.train_dataloader)
        batches = iter(loader)
        data = next(batches)
        n = 1 if quick else 3

        def train_step():
            model.train()
            model.train_step(data, optim_wrapper)

        one = {"inputs": data["inputs"][:1], "data_samples": data["data_samples"][:1]}

        def infer():
            model.eval()
            with torch.no_grad():
                model.test_step(one)

        step = _timed(train_step, device, n)
        load = median([_time_next(batches) for _ in range(n + 1)])
        size = cfg.train_dataloader.batch_size
        return [
            _row("seg", "UperNet demo_vit_tiny train step", step, "s/iter", f"batch {size}"),
            _row("seg", "UperNet demo_vit_tiny inference", _timed(infer, device, n), "s/img",
                 f"test_cfg mode {cfg.model.test_cfg.get('mode')}"),
            _row("data", "seg train loader", load, "s/batch",
                 f"data/step = {load / step:.2f} (num_workers {cfg.train_dataloader.num_workers})"),
        ]  # fmt: skip


def run(case: str, *, device: torch.device, quick: bool, amp: Optional[str]) -> List[Dict]:
    """Rows ``{"task", "case", "value", "unit", "note"}``; ``{"task", "case", "skipped"}`` where a
    case cannot run. Each case also returns its ``data`` row (it shares the step timing)."""

    def timed(fn) -> float:
        return _timed(fn, device, 1 if quick or device.type == "cpu" else 10)

    fn = {"det": lambda: _det(device, quick), "seg": lambda: _seg(device, quick),
          "det_vitb": lambda: recipes.det_recipe(device, quick, amp, timed),
          "seg_vitb": lambda: recipes.seg_recipe(device, quick, amp, timed)}[case]
    try:
        return fn()
    except Exception as e:  # a missing framework or a broken glue layer must not stop the run
        logger.warning("%s benchmark skipped: %s: %s", case, type(e).__name__, e)
        return [{"task": case, "case": f"{case} demo config", "skipped": f"{type(e).__name__}: {e}"}]
