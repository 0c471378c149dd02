"""Partial fine-tuning end to end: ``last_k_blocks:4`` through the project's Detectron2 Trainer (ViT
Mask R-CNN) and MMEngine Runner (UperNet-ViT) on generated data. Frozen parameters must come out
bitwise unchanged, every other parameter changed, and the optimizer must hold state only for the
trainable ones."""
from __future__ import annotations

import pytest
import torch
from mmengine.hooks import Hook

from mae_transfer.data import make_ade_semantic, make_coco_instances

FREEZE = "last_k_blocks:4"
VIT = "backbone.net."
FROZEN_BLOCKS = tuple(f"blocks.{i}." for i in range(8))  # ViT-Ti has 12 blocks


pytestmark = pytest.mark.usefixtures("one_thread")


def should_freeze(name: str) -> bool:
    rel = name[len(VIT):] if name.startswith(VIT) else None
    return rel is not None and (rel in ("cls_token", "pos_embed") or rel.startswith(("patch_embed.",) + FROZEN_BLOCKS))


def check_partial_training(model: torch.nn.Module, before: dict, optimizer: torch.optim.Optimizer) -> None:
    after = dict(model.named_parameters())
    assert {n for n, p in after.items() if not p.requires_grad} == {n for n in after if should_freeze(n)}
    unchanged = {n for n, p in after.items() if torch.equal(p.detach(), before[n])}
    assert unchanged == {n for n in after if should_freeze(n)}
    assert {id(p) for p in optimizer.state} == {id(p) for p in after.values() if p.requires_grad}


@pytest.mark.slow
def test_detectron2_trainer_last_k_blocks(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from mae_transfer.det import Trainer, load_config, register_coco_dataset

    json_file, image_dir = make_coco_instances(tmp_path / "coco", split="train", num_images=2,
                                               image_size=(128, 128), num_classes=3, seed=0)
    name = f"optim_e2e_{tmp_path.name}"
    register_coco_dataset(name, str(json_file), str(image_dir))
    cfg = load_config("demo_vit_tiny", [
        "MODEL.DEVICE", "cpu", "MODEL.VIT.FREEZE", FREEZE, "MODEL.VIT.IMG_SIZE", 128,
        "MODEL.PYRAMID.SQUARE_PAD", 128, "INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 128,
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (), "SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.WARMUP_ITERS", 0, "SOLVER.BASE_LR", 1e-3, "SOLVER.CHECKPOINT_PERIOD", 1000,
        "OUTPUT_DIR", str(tmp_path / "out"), "SEED", 0,
    ])
    try:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert trainer.iter == 2  # iterations 0 and 1 ran
    check_partial_training(trainer.model, before, trainer.optimizer)


class _Snapshot(Hook):
    """Parameters as training starts (after init_weights and checkpoint loading)."""

    def before_train(self, runner):
        self.params = {n: p.detach().clone() for n, p in runner.model.named_parameters()}


@pytest.mark.slow
def test_mmengine_runner_last_k_blocks(tmp_path):
    from mae_transfer.seg.config import prepare_config
    from mae_transfer.seg.runner import build_runner

    root = make_ade_semantic(tmp_path / "ade", num_train=2, num_val=1, image_size=(64, 64), num_classes=3, seed=0)
    (tmp_path / "classes.txt").write_text("sky\nground\nshape\n")
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
                dict(type="PackSegInputs")]
    options = {
        "optim_wrapper.paramwise_cfg": dict(layer_decay_rate=0.75, freeze=FREEZE), "model.backbone.img_size": 64,
        "model.data_preprocessor.size": (64, 64), "train_dataloader.dataset.pipeline": pipeline,
        "train_dataloader.batch_size": 2, "param_scheduler": [dict(type="ConstantLR", factor=1.0, by_epoch=False)],
        "train_cfg.max_iters": 2, "train_cfg.val_interval": 10 ** 6, "default_hooks.checkpoint.interval": 10 ** 6,
        "model.backbone.final_norm": False,  # unused by the multi-level outputs (it would get no gradient)
    }
    cfg = prepare_config("demo_vit_tiny", cfg_options=options, work_dir=str(tmp_path / "work"),
                         data_root=str(root), classes=str(tmp_path / "classes.txt"))
    runner = build_runner(cfg)
    snapshot = _Snapshot()
    runner.register_hook(snapshot)
    runner.train()
    assert runner.iter == 2
    check_partial_training(runner.model, snapshot.params, runner.optim_wrapper.optimizer)
