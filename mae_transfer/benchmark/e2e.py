"""Whole training steps and inference calls, ours beside the reference pipelines (``det_e2e``,
``seg_e2e``).

- ``det_e2e``: ViTDet-B Mask R-CNN at 1024. Ours: ``configs/det/coco_vitb_mae.yaml`` built by
  ``mae_transfer.det`` (model, layer-decay AdamW, LSJ train loader) as ``tools/train_det.py``
  builds them. Reference: Detectron2's ``projects/ViTDet`` LazyConfig
  ``mask_rcnn_vitdet_b_100ep.py`` (its model, its AdamW with layer decay, its LSJ loader),
  instantiated by Detectron2's own code, in fp32 (``train.amp`` off). Both step through
  Detectron2's ``SimpleTrainer.run_step`` (next batch from the loader, forward, backward,
  optimizer step) on the same generated COCO-format data with polygon masks, with the
  recipe's per-GPU batch (``IMS_PER_BATCH 64`` on 64 GPUs: 1 image). Inference: one
  1024x1024 image through each model.
- ``seg_e2e``: MAE ViT-B UperNet at 512. Ours: ``configs/seg/ade20k_vitb_mae.py``; reference:
  MMSeg's ``mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py``. Each config's own train loader
  (ADE20K pipeline) on the same generated ADE-layout data, batch 2, then ``model.train_step``;
  inference: ``model.test_step`` (sliding window) on one 512x683 validation image. One process
  and one device: SyncBN is built as BN in both; fp32 unless ``--amp``.

Loaders run in the main process (``num_workers 0``), so each step includes its data loading.
The steps of ours and the reference alternate (A, B, B, A, ...) after one warm-up each; medians,
min..max and the peak memory (:class:`~.measure.PeakMemory`) of the timed calls are reported.
"""

from __future__ import annotations

import gc
import logging
from typing import Callable, Dict, List, Optional, Tuple

import torch

from . import synthetic
from .measure import AMP_DTYPES, PeakMemory, Timer, autocast, median
from .profile import analyse

__all__ = ["run", "interleave", "e2e_targets"]

logger = logging.getLogger("mae_transfer.benchmark")

Step = Callable[[], object]
_QUICK_PROPOSALS = 32  # --quick: proposals / sampled RoIs (the code paths, not the recipe's cost)


def interleave(steps: Dict[str, Step], device: torch.device, repeats: int, warmup: int = 1) -> Dict[str, Dict]:
    """Time ``steps`` alternately (A, B, B, A, ...): ``{name: {"seconds": [...], "peak_bytes"}}``
    (peak: the largest over the timed calls)."""
    timer = Timer(device)
    out = {name: {"seconds": [], "peak_bytes": None} for name in steps}
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            logger.info("%s warm-up: %.3f s", name, timer(steps[name]))
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            gc.collect()
            mem = PeakMemory(device)
            with mem:
                out[name]["seconds"].append(timer(steps[name]))
            logger.info("%s repeat %d: %.3f s, peak %s bytes", name, r, out[name]["seconds"][-1], mem.bytes)
            if mem.bytes is not None:
                out[name]["peak_bytes"] = max(mem.bytes, out[name]["peak_bytes"] or 0)
    return out


def _measure(task: str, kind: str, steps: Dict[str, Step], names: Dict[str, str], unit_note: str, *,
             device: torch.device, repeats: int, quick: bool) -> List[Dict]:
    """Time ``steps`` (:func:`interleave`; no warm-up at ``quick`` toy sizes), then one more call
    each (:func:`.profile.analyse`): model FLOPs (matmuls, convolutions, attention; data loading
    and element-wise work count 0) and the operators that took the time. One row per step."""
    timings = interleave(steps, device, repeats, warmup=0 if quick else 1)
    analysis = {name: analyse(step, device) for name, step in steps.items()}
    return _rows(task, kind, timings, names, unit_note, analysis)


def _rows(task: str, kind: str, timings: Dict[str, Dict], names: Dict[str, str], unit_note: str,
          analysis: Dict[str, Tuple[Optional[int], List[Dict]]]) -> List[Dict]:
    rows = []
    for impl, t in timings.items():
        secs = t["seconds"]
        flops, top_ops = analysis[impl]
        rows.append({"task": task, "kind": kind, "impl": impl, "name": names[impl], "seconds": median(secs),
                     "min": min(secs), "max": max(secs), "repeats": len(secs),
                     "peak_mem_mb": t["peak_bytes"] / 2**20 if t["peak_bytes"] is not None else None,
                     "flops": flops, "top_ops": top_ops, "note": unit_note})  # fmt: skip
    ours, ref = rows
    if ours["seconds"] and ref["seconds"]:
        ref["speedup_of_ours"] = ref["seconds"] / ours["seconds"]
    if ours["peak_mem_mb"] and ref["peak_mem_mb"]:
        ref["memory_ratio_of_ours"] = ours["peak_mem_mb"] / ref["peak_mem_mb"]
    return rows


# -- detection -----------------------------------------------------------------------------------


def _det_ours(device: torch.device, dataset: str, size: int, batch: int, quick: bool):
    from detectron2.modeling import build_model

    from mae_transfer.det import load_config
    from mae_transfer.det.data import build_train_loader
    from mae_transfer.det.optimizer import build_optimizer

    opts = ["MODEL.VIT.WEIGHTS", "", "MODEL.DEVICE", device.type, "MODEL.ROI_HEADS.NUM_CLASSES", 80,
            "DATASETS.TRAIN", (dataset,), "DATASETS.TEST", (), "SOLVER.IMS_PER_BATCH", batch,
            "DATALOADER.NUM_WORKERS", 0, "SOLVER.AMP.ENABLED", False]  # fmt: skip
    if quick:
        opts += ["MODEL.VIT.NAME", "vit_tiny_patch16", "MODEL.VIT.IMG_SIZE", size, "MODEL.VIT.DEPTH", 2,
                 "MODEL.VIT.GLOBAL_BLOCKS", (1,), "MODEL.PYRAMID.SQUARE_PAD", size, "INPUT.LSJ.IMAGE_SIZE", size,
                 "MODEL.RPN.POST_NMS_TOPK_TRAIN", _QUICK_PROPOSALS, "MODEL.RPN.POST_NMS_TOPK_TEST", _QUICK_PROPOSALS,
                 "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", _QUICK_PROPOSALS, "TEST.DETECTIONS_PER_IMAGE", 5]  # fmt: skip
    cfg = load_config("coco_vitb_mae", opts)
    model = build_model(cfg)
    return model, build_optimizer(cfg, model), build_train_loader(cfg)


def _det_reference(device: torch.device, dataset: str, size: int, batch: int, quick: bool):
    import detectron2.data.transforms as T
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(synthetic.vitdet_config()))
    cfg.model.roi_heads.num_classes = 80
    if quick:
        net = cfg.model.backbone.net
        net.img_size, net.embed_dim, net.num_heads, net.depth, net.window_block_indexes = size, 192, 3, 2, [0]
        cfg.model.backbone.square_pad = size
        cfg.model.proposal_generator.post_nms_topk = (_QUICK_PROPOSALS, _QUICK_PROPOSALS)
        cfg.model.roi_heads.batch_size_per_image = _QUICK_PROPOSALS
        cfg.model.roi_heads.box_predictor.test_topk_per_image = 5
        cfg.optimizer.params.lr_factor_func.keywords["num_layers"] = 2
    cfg.dataloader.train.mapper.augmentations = [
        T.RandomFlip(horizontal=True),
        T.ResizeScale(min_scale=0.1, max_scale=2.0, target_height=size, target_width=size),
        T.FixedSizeCrop(crop_size=(size, size), pad=False),
    ]  # the LazyConfig's LSJ list, at ``size``
    cfg.dataloader.train.dataset.names = dataset
    cfg.dataloader.train.total_batch_size = batch
    cfg.dataloader.train.num_workers = 0
    model = instantiate(cfg.model).to(device)
    cfg.optimizer.params.model = model
    return model, instantiate(cfg.optimizer), instantiate(cfg.dataloader.train)


def _det_image(image_dir, size: int, device: torch.device) -> Dict:
    """The first generated image as a model input (``(3, H, W)`` uint8)."""
    import numpy as np
    from PIL import Image

    path = sorted(image_dir.glob("*.png"))[0]
    array = np.asarray(Image.open(path).convert("RGB"))[:size, :size]
    image = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous().to(device)
    return {"image": image, "height": image.shape[1], "width": image.shape[2]}


def det_e2e(device: torch.device, quick: bool, amp: Optional[str], repeats: int) -> List[Dict]:
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage

    size, batch = (128, 1) if quick else (1024, 1)
    dataset, image_dir = synthetic.coco_dataset(size, num_images=2 if quick else 4)
    builders = {"ours": _det_ours, "detectron2": _det_reference}
    trainers, models = {}, {}
    for impl, build in builders.items():
        model, optimizer, loader = build(device, dataset, size, batch, quick)
        trainers[impl] = SimpleTrainer(model, loader, optimizer, async_write_metrics=False)
        models[impl] = model
    image = _det_image(image_dir, size, device)

    def train(impl: str) -> Step:
        def step():
            trainer = trainers[impl]
            trainer.model.train()
            with EventStorage(trainer.iter) as storage, autocast(device, amp):
                trainer.storage = storage
                trainer.run_step()
            trainer.iter += 1
        return step

    def infer(impl: str) -> Step:
        def step():
            models[impl].eval()
            with torch.no_grad(), autocast(device, amp):
                models[impl]([image])
        return step

    for trainer in trainers.values():
        trainer.iter = 0
    names = {"ours": "ours coco_vitb_mae", "detectron2": "Detectron2 ViTDet mask_rcnn_vitdet_b_100ep"}
    if quick:
        names = {k: v + " (quick: ViT-Ti @128)" for k, v in names.items()}
    how = dict(device=device, repeats=repeats, quick=quick)
    return (_measure("det", "train step", {k: train(k) for k in builders}, names,
                     f"batch {batch} @{size} incl. LSJ loading (polygon masks), fwd+bwd+AdamW", **how)
            + _measure("det", "inference", {k: infer(k) for k in builders}, names, f"1 image {size}x{size}",
                       **how))  # fmt: skip


# -- segmentation --------------------------------------------------------------------------------


def _bn_for_syncbn(node) -> None:
    """SyncBN -> BN in a config tree (one process, one device: the same math)."""
    if isinstance(node, dict):
        if node.get("type") == "SyncBN":
            node["type"] = "BN"
        if node.get("norm") == "SyncBN":  # our pyramid neck names its norm by a string
            node["norm"] = "BN"
        for value in node.values():
            _bn_for_syncbn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _bn_for_syncbn(value)


def _seg_cfg(impl: str, root, crop: int, quick: bool, amp: Optional[str]):
    from mmengine.config import Config

    from mae_transfer.seg.config import load_config

    if impl == "ours":
        cfg = load_config("ade20k_vitb_mae", {"model.backbone.pretrained": None})
    else:
        cfg = Config.fromfile(str(synthetic.mmseg_mae_config()))
        cfg.model.pretrained = None
    _bn_for_syncbn(cfg.model)
    cfg.optim_wrapper.type = "AmpOptimWrapper" if amp else "OptimWrapper"
    for key in ("loss_scale", "dtype"):
        cfg.optim_wrapper.pop(key, None)
    if amp:
        cfg.optim_wrapper.dtype = AMP_DTYPES[amp]
    for key, batch in (("train_dataloader", 2), ("val_dataloader", 1)):
        loader = cfg[key]
        loader.update(batch_size=batch, num_workers=0, persistent_workers=False)
        loader.dataset.data_root = str(root)
    if quick:
        _quick_seg(cfg, impl, crop)
    return cfg


def _quick_seg(cfg, impl: str, crop: int) -> None:
    """ViT-Ti-sized backbone, narrow head and ``crop`` sized pipelines (same code paths)."""
    if impl == "ours":
        cfg.model.backbone.update(arch="vit_tiny_patch16", img_size=crop, depth=4, out_indices=(0, 1, 2, 3))
    else:
        cfg.model.backbone.update(embed_dims=192, num_heads=3, img_size=(crop, crop), num_layers=4,
                                  out_indices=[0, 1, 2, 3])
        cfg.model.neck.embed_dim = 192
    cfg.model.data_preprocessor.size = (crop, crop)
    if "neck" in cfg.model and "in_channels" in cfg.model.neck:
        cfg.model.neck.in_channels = 192
    cfg.model.decode_head.update(in_channels=[192] * 4, channels=64)
    cfg.model.auxiliary_head.in_channels = 192
    if "paramwise_cfg" in cfg.optim_wrapper and "num_layers" in cfg.optim_wrapper.paramwise_cfg:
        cfg.optim_wrapper.paramwise_cfg.num_layers = 4
    cfg.model.test_cfg.update(crop_size=(crop, crop), stride=(crop * 2 // 3,) * 2)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        for t in loader.dataset.pipeline:
            if t["type"] in ("RandomResize", "Resize"):
                t["scale"] = (crop * 4, crop)
            if t["type"] == "RandomCrop":
                t["crop_size"] = (crop, crop)


def seg_e2e(device: torch.device, quick: bool, amp: Optional[str], repeats: int) -> List[Dict]:
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    import mae_transfer.seg  # noqa: F401  (mmcv.ops stand-in, registrations)

    crop = 128 if quick else 512
    root = synthetic.ade_dataset((crop, crop * 4 // 3), num_images=2 if quick else 4)
    models, wrappers, batches, test_batches = {}, {}, {}, {}
    with DefaultScope.overwrite_default_scope("mmseg"):
        for impl in ("ours", "mmseg"):
            cfg = _seg_cfg(impl, root, crop, quick, amp)
            models[impl] = MODELS.build(cfg.model).to(device)
            wrappers[impl] = build_optim_wrapper(models[impl], cfg.optim_wrapper)
            batches[impl] = iter(Runner.build_dataloader(cfg.train_dataloader))
            test_batches[impl] = next(iter(Runner.build_dataloader(cfg.val_dataloader)))

    def train(impl: str) -> Step:
        def step():
            models[impl].train()
            with DefaultScope.overwrite_default_scope("mmseg"):
                models[impl].train_step(next(batches[impl]), wrappers[impl])
        return step

    def infer(impl: str) -> Step:
        def step():
            models[impl].eval()
            with torch.no_grad(), autocast(device, amp):
                models[impl].test_step(test_batches[impl])
        return step

    names = {"ours": "ours ade20k_vitb_mae", "mmseg": "MMSeg mae-base_upernet_8xb2-amp-160k_ade20k-512x512"}
    if quick:
        names = {k: v + " (quick: ViT-Ti @128)" for k, v in names.items()}
    impls = ("ours", "mmseg")
    how = dict(device=device, repeats=repeats, quick=quick)
    return (_measure("seg", "train step", {k: train(k) for k in impls}, names,
                     f"batch 2, {crop}x{crop} crops incl. ADE20K pipeline loading, fwd+bwd+AdamW", **how)
            + _measure("seg", "inference", {k: infer(k) for k in impls}, names,
                       f"slide (crop {crop}, stride {crop * 2 // 3}) on 1 image {crop}x{crop * 4 // 3}",
                       **how))  # fmt: skip


# -- entry -----------------------------------------------------------------------------------------

_GOALS = {  # (task, kind) -> (device type -> speed goal, memory goal or None)
    ("det", "train step"): ({"cpu": 1.6, "cuda": 1.3}, {"cpu": 0.6}),
    ("seg", "train step"): ({"cpu": 1.15}, {}),
    ("det", "inference"): ({"cpu": 1.3}, {}),
    ("seg", "inference"): ({"cpu": 1.3}, {}),
}


def e2e_targets(rows: List[Dict], device: torch.device) -> List[Dict]:
    """The issue's goals for the whole pipelines, met or missed, from the reference rows."""
    targets = []
    for r in rows:
        if r.get("impl") == "ours" and r.get("kind") == "train step" and r.get("gemm_share") is not None:
            targets.append({"target": f"{r['task']} train step model FLOP/s as a share of GEMM ({device.type})",
                            "goal": ">= 70%", "value": r["gemm_share"], "met": r["gemm_share"] >= 0.7})
        if r.get("impl") == "ours" or r.get("skipped"):
            continue
        speed, memory = _GOALS.get((r["task"], r["kind"]), ({}, {}))
        goal = speed.get(device.type)
        if goal is not None:
            value = r.get("speedup_of_ours")
            targets.append({"target": f"{r['task']} {r['kind']} vs {r['impl']} ({device.type})", "goal": f">= {goal}x",
                            "value": value, "met": None if value is None else value >= goal})  # fmt: skip
        goal = memory.get(device.type)
        if goal is not None:
            value = r.get("memory_ratio_of_ours")
            targets.append({"target": f"{r['task']} {r['kind']} peak memory vs {r['impl']} ({device.type})",
                            "goal": f"<= {goal}x", "value": value,
                            "met": None if value is None else value <= goal})  # fmt: skip
    return targets


def add_gemm_share(rows: List[Dict], gemm_flops_per_s: Optional[float]) -> None:
    """Each row's model FLOPs / median time as a share of the measured GEMM rate (``gemm_share``)."""
    for r in rows:
        if r.get("flops") and r.get("seconds") and gemm_flops_per_s:
            r["gemm_share"] = r["flops"] / r["seconds"] / gemm_flops_per_s


def run(case: str, *, device: torch.device, quick: bool, amp: Optional[str], repeats: int) -> List[Dict]:
    """Rows of ``det_e2e`` or ``seg_e2e``; one ``skipped`` row when a framework or a reference
    config is missing or a pipeline fails."""
    fn = {"det_e2e": det_e2e, "seg_e2e": seg_e2e}[case]
    try:
        return fn(device, quick, amp, repeats)
    except Exception as e:  # a missing framework or reference config must not stop the run
        logger.warning("%s benchmark skipped: %s: %s", case, type(e).__name__, e)
        return [{"task": case, "kind": "", "impl": "", "name": case, "skipped": f"{type(e).__name__}: {e}"}]
