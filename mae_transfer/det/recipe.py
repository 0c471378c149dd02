"""Detectron2 recipe extraction: this project's yacs config and Detectron2's ViTDet LazyConfigs, each
built with its own code, flattened into the framework-free form of :mod:`mae_transfer.recipe_diff`.

The reference LazyConfigs (``projects/ViTDet/configs``) ship in the Detectron2 source tarball, not in
the installed package; they are extracted once into a cache folder (``$MAE_TRANSFER_CACHE`` or
``~/.cache/mae_transfer``). The tarball is ``$MAE_TRANSFER_DETECTRON2_SRC`` or the one
``scripts/install.sh`` installs from (``../shared/deps/detectron2-*.tar.gz`` beside the checkout).
"""
from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler

from mae_transfer.errors import ConfigError
from mae_transfer.optim import param_settings
from mae_transfer.recipe_diff import Recipe, init_signature, is_new_parameter

from .config import load_config
from .data import build_train_augmentation
from .optimizer import layer_decay_kwargs

ROOT = Path(__file__).resolve().parents[2]
VITDET_CONFIGS = "projects/ViTDet/configs"
# this project's config -> Detectron2 LazyConfig (relative to projects/ViTDet/configs)
REFERENCES = {
    "coco_vitb_mae": "COCO/mask_rcnn_vitdet_b_100ep.py",
    "coco_vitl_mae": "COCO/mask_rcnn_vitdet_l_100ep.py",
}


def detectron2_tarball() -> Path:
    """The Detectron2 source tarball that holds ``projects/ViTDet``."""
    env = os.environ.get("MAE_TRANSFER_DETECTRON2_SRC")
    candidates = [Path(env)] if env else sorted((ROOT.parent / "shared" / "deps").glob("detectron2-*.tar.gz"))
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        "No Detectron2 source tarball for the ViTDet reference configs; set MAE_TRANSFER_DETECTRON2_SRC "
        "to detectron2-<commit>.tar.gz (the source Detectron2 was installed from)."
    )


def vitdet_config_dir() -> Path:
    """``projects/ViTDet/configs`` extracted from the tarball into the cache (once)."""
    tarball = detectron2_tarball()
    cache = Path(os.environ.get("MAE_TRANSFER_CACHE", Path.home() / ".cache" / "mae_transfer"))
    out = cache / tarball.name.removesuffix(".tar.gz")
    target = out / "detectron2" / VITDET_CONFIGS
    if not (target / "COCO").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers() if f"/{VITDET_CONFIGS}/" in m.name and m.isfile()]
            tar.extractall(out, members=members, filter="data")
    return target


def load_reference(name: str):
    """The ViTDet LazyConfig (e.g. ``COCO/mask_rcnn_vitdet_b_100ep.py``) loaded by Detectron2."""
    return LazyConfig.load(str(vitdet_config_dir() / name))


def _tensors(model: torch.nn.Module, lr_wd: dict[str, tuple[float, float]]) -> dict:
    """Name -> shape, lr scale, weight decay and (for parameters no checkpoint sets) init."""
    tensors = {}
    for name, param in model.named_parameters():
        init = init_signature(param) if is_new_parameter(name, "backbone.net.") else None
        tensors[name] = dict(shape=list(param.shape), lr_scale=lr_wd[name][0], weight_decay=lr_wd[name][1], init=init)
    return tensors


def _model_settings(model: torch.nn.Module) -> dict[str, Any]:
    """What the built model itself says about input, test-time and position handling."""
    backbone, heads, rpn = model.backbone, model.roi_heads, model.proposal_generator
    vit = backbone.net
    predictor = heads.box_predictor
    return {
        "input.pixel_mean": [round(float(v), 4) for v in model.pixel_mean.flatten()],
        "input.pixel_std": [round(float(v), 4) for v in model.pixel_std.flatten()],
        "input.format": model.input_format,
        "input.padded_size": _padded_sizes(backbone),
        "model.drop_path": [round(float(getattr(b.drop_path, "drop_prob", getattr(b.drop_path, "p", 0.0))), 6)
                            for b in vit.blocks],
        "model.window_size": _window_sizes(vit),
        "model.layer_scale": any("gamma" in n or ".ls" in n for n, _ in vit.named_parameters()),
        "test.score_thresh": predictor.test_score_thresh,
        "test.nms_thresh": predictor.test_nms_thresh,
        "test.detections_per_image": predictor.test_topk_per_image,
        "rpn.pre_nms_topk": _topk(rpn.pre_nms_topk),
        "rpn.post_nms_topk": _topk(rpn.post_nms_topk),
        **_head_settings(rpn, heads),
    }


def _head_settings(rpn: torch.nn.Module, heads: torch.nn.Module) -> dict[str, Any]:
    """Sampling, matching, losses, anchors and poolers of the RPN and ROI heads."""
    predictor, pooler = heads.box_predictor, heads.box_pooler.level_poolers[0]
    return {
        "rpn.anchors": [[round(float(v), 3) for v in a.flatten()] for a in rpn.anchor_generator.cell_anchors],
        "rpn.sampling": [rpn.batch_size_per_image, rpn.positive_fraction, rpn.nms_thresh],
        "rpn.matcher": [list(rpn.anchor_matcher.thresholds), list(rpn.anchor_matcher.labels)],
        "rpn.loss": [rpn.box_reg_loss_type, rpn.smooth_l1_beta,
                     _weights(rpn.loss_weight, ("loss_rpn_cls", "loss_rpn_loc"))],
        "roi.sampling": [heads.batch_size_per_image, heads.positive_fraction],
        "roi.matcher": [list(heads.proposal_matcher.thresholds), list(heads.proposal_matcher.labels)],
        "roi.box_loss": [predictor.box_reg_loss_type, predictor.smooth_l1_beta,
                         _weights(predictor.loss_weight, ("loss_cls", "loss_box_reg")),
                         list(predictor.box2box_transform.weights)],
        "roi.box_pooler": [type(pooler).__name__, list(pooler.output_size), pooler.sampling_ratio,
                           getattr(pooler, "aligned", None)],
        "roi.mask_pooler": [list(heads.mask_pooler.level_poolers[0].output_size), len(heads.mask_pooler.level_poolers)],
    }


def _weights(loss_weight, keys: tuple[str, ...]) -> dict[str, float]:
    """Effective loss weights (Detectron2 multiplies a loss missing from the dict by 1)."""
    if isinstance(loss_weight, (int, float)):
        return {k: float(loss_weight) for k in keys}
    return {k: float(loss_weight.get(k, 1.0)) for k in keys}


def _padded_sizes(backbone: torch.nn.Module) -> dict[str, list[int]]:
    """Image size after GeneralizedRCNN's padding (size divisibility, square pad) for sample images."""
    from detectron2.structures import ImageList

    sizes = {}
    for h, w in ((1024, 683), (683, 1024), (512, 384)):
        images = ImageList.from_tensors([torch.zeros(3, h, w)], backbone.size_divisibility,
                                        padding_constraints=backbone.padding_constraints)
        sizes[f"{h}x{w}"] = list(images.tensor.shape[-2:])
    return sizes


def _window_sizes(vit: torch.nn.Module) -> list[int]:
    """Window side per block, 0 = global attention (ours: ``global_blocks``; Detectron2: per block)."""
    if hasattr(vit, "global_blocks"):
        return [0 if i in vit.global_blocks else int(vit.window_size) for i in range(len(vit.blocks))]
    return [int(b.window_size) for b in vit.blocks]


def _augmentations(augs) -> list[dict]:
    """Each augmentation as its class and constructor parameters (its public attributes)."""
    return [{"type": type(a).__name__, **{k: v for k, v in vars(a).items() if not k.startswith("_")}} for a in augs]


def _multiplier_samples(scheduler, max_iter: int, points: list[int]) -> dict[int, float]:
    return {i: round(float(scheduler(i / max_iter)), 10) for i in points}


def ours(config: str, opts: list[str] | None = None) -> Recipe:
    """This project's recipe for a Detectron2 config, built with this project's code."""
    cfg = load_config(config, opts)
    cfg.defrost()
    weights, cfg.MODEL.VIT.WEIGHTS = cfg.MODEL.VIT.WEIGHTS, ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = cfg.MODEL.ROI_HEADS.NUM_CLASSES or 80  # COCO
    torch.manual_seed(0)
    model = build_model(cfg)
    records = param_settings(model, **layer_decay_kwargs(cfg, model))
    lr_wd = {r["name"]: (r["lr_scale"], r["weight_decay"]) for r in records}
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    max_iter = cfg.SOLVER.MAX_ITER
    settings = {
        "optimizer.type": cfg.SOLVER.OPTIMIZER.lower(),
        "optimizer.lr": cfg.SOLVER.BASE_LR,
        "optimizer.weight_decay": cfg.SOLVER.WEIGHT_DECAY,
        "optimizer.betas": list(cfg.SOLVER.BETAS),
        "optimizer.eps": 1e-8,  # torch.optim.AdamW's default; build_optimizer passes none
        "optimizer.grad_clip": cfg.SOLVER.CLIP_GRADIENTS.ENABLED,
        "schedule.max_iter": max_iter,
        "schedule.lr_multiplier": _multiplier_samples(scheduler._multiplier, max_iter, _points(cfg)),
        "train.batch": cfg.SOLVER.IMS_PER_BATCH,
        "train.amp": cfg.SOLVER.AMP.ENABLED,
        "train.fp16_grad_compression": bool(cfg.SOLVER.FP16_COMPRESSION),
        "train.init_checkpoint": os.path.basename(weights.split("?")[0]),
        "train.augmentations": _augmentations(build_train_augmentation(cfg)),
        "train.recompute_boxes": bool(cfg.INPUT.LSJ.ENABLED and cfg.MODEL.MASK_ON),
        "input.mapper_format": cfg.INPUT.FORMAT,
        "test.augmentations": _augmentations(DatasetMapper(cfg, is_train=False).augmentations.augs),
        "train.datasets": list(cfg.DATASETS.TRAIN),
        "test.datasets": list(cfg.DATASETS.TEST),
        **_model_settings(model),
    }
    # the Detectron2 backbone keeps ViTDet's parameter names (backbone.net.*, backbone.simfp_*), so
    # tensors compare without renaming; a renamed tensor shows up as missing on one side
    return Recipe(name=config, tensors=_tensors(model, lr_wd), settings=settings)


def _points(cfg: CfgNode) -> list[int]:
    """Sampled iterations: warmup start/middle/end, just before and after each step, the end."""
    warm = cfg.SOLVER.WARMUP_ITERS
    steps = [s + d for s in cfg.SOLVER.STEPS for d in (-1, 0)]
    return sorted({0, 1, warm // 2, max(warm - 1, 0), warm, *steps, cfg.SOLVER.MAX_ITER - 1})


def reference(name: str, points_from: Recipe) -> Recipe:
    """The ViTDet LazyConfig's recipe, built with Detectron2's own code (CPU, a few seconds)."""
    from detectron2.solver.build import get_default_optimizer_params  # noqa: F401  (the config calls it)

    lazy = load_reference(name)
    lazy.model.roi_heads.num_classes = lazy.model.roi_heads.get("num_classes", 80)
    torch.manual_seed(0)
    model = instantiate(lazy.model)
    lazy.optimizer.params.model = model
    groups = instantiate(lazy.optimizer.params)
    base_lr, names = lazy.optimizer.lr, {id(p): n for n, p in model.named_parameters()}
    # a group without "weight_decay" gets the optimizer's own (torch.optim semantics)
    wd = lazy.optimizer.weight_decay
    lr_wd = {names[id(p)]: (g.get("lr", base_lr) / base_lr, g.get("weight_decay", wd))
             for g in groups for p in g["params"]}
    train, loader = lazy.train, lazy.dataloader
    scheduler = instantiate(lazy.lr_multiplier)
    points = sorted(int(i) for i in points_from.settings["schedule.lr_multiplier"])
    settings = {
        "optimizer.type": lazy.optimizer._target_.__name__.lower(),
        "optimizer.lr": base_lr,
        "optimizer.weight_decay": lazy.optimizer.weight_decay,
        "optimizer.betas": list(lazy.optimizer.betas),
        "optimizer.eps": lazy.optimizer.get("eps", 1e-8),
        "optimizer.grad_clip": False,  # lazyconfig_train_net.py clips nothing
        "schedule.max_iter": train.max_iter,
        "schedule.lr_multiplier": _multiplier_samples(scheduler, train.max_iter, points),
        "train.batch": loader.train.total_batch_size,
        "train.amp": train.amp.enabled,
        "train.fp16_grad_compression": train.ddp.fp16_compression,
        "train.init_checkpoint": os.path.basename(train.init_checkpoint.split("?")[0]),
        "train.augmentations": _augmentations(instantiate(loader.train.mapper.augmentations)),
        "train.recompute_boxes": loader.train.mapper.recompute_boxes,
        "test.augmentations": _augmentations(instantiate(loader.test.mapper.augmentations)),
        "train.datasets": [loader.train.dataset.names] if isinstance(loader.train.dataset.names, str)
        else list(loader.train.dataset.names),
        "test.datasets": [loader.test.dataset.names],
        **_model_settings(model),
    }
    settings["input.mapper_format"] = loader.train.mapper.image_format
    return Recipe(name=f"detectron2 {VITDET_CONFIGS}/{name}", tensors=_tensors(model, lr_wd), settings=settings)


def _topk(value):
    """Detectron2 keeps RPN top-k per mode as a dict (train/test); a list compares either form."""
    return list(value.values()) if isinstance(value, dict) else value
