"""Detectron2 glue: ViT backbones in ``BACKBONE_REGISTRY``, yacs config keys, the trainer.

    from mae_transfer.det import Trainer, build_model, load_config
    cfg = load_config("demo_vit_tiny", ["SOLVER.MAX_ITER", "20"])
    trainer = Trainer(cfg); trainer.resume_or_load(resume=False); trainer.train()
    model = build_model("coco_vitb_mae", ["MODEL.VIT.WEIGHTS", ""], device="cpu")
"""
from . import (
    backbone,  # noqa: F401  (registers the backbones)
    layouts,  # noqa: F401  (registers this package's checkpoint layout)
)
from .build import build_model
from .config import ConfigError, add_vit_config, get_det_cfg, load_config
from .data import build_train_augmentation, prepare_datasets, register_coco_dataset
from .engine import NonFiniteLossError, Trainer, create_ddp_model_any_device, summary_line

__all__ = [
    "build_model", "ConfigError", "add_vit_config", "get_det_cfg", "load_config", "build_train_augmentation",
    "register_coco_dataset", "prepare_datasets", "NonFiniteLossError", "Trainer",
    "create_ddp_model_any_device", "summary_line",
]
