"""The MMSegmentation half of the pinned stack (issue 3), on CPU with real files on disk.

MMSeg's own UperNet + MMSeg's own ``MAE`` ViT backbone (tiny) train through the MMEngine Runner on
a generated ADE20K-layout dataset read by ``ADE20KDataset`` and validate with ``IoUMetric``; the
mIoU is checked against a brute-force confusion matrix. A 2-process gloo run of the same config
goes through ``tools/train_seg.py`` (our CPU DDP set-up lives in ``mae_transfer/seg/runner.py``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mae_transfer.compat.mmcv_ops  # noqa: F401  (before mmseg.models)
from mae_transfer.data import make_ade_semantic

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


pytestmark = pytest.mark.usefixtures("one_thread")


def mmseg_mae_upernet_cfg(data_root: Path, work_dir: Path, max_iters: int = 2) -> dict:
    """A full MMSeg UperNet + ``MAE`` config (the layout of mmseg's configs/mae), shrunk to CPU size."""
    norm_cfg = dict(type="SyncBN", requires_grad=True)  # the Runner / our set-up turn this into BN on CPU
    crop = (SIZE, SIZE)
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", reduce_zero_label=True),
        dict(type="RandomResize", scale=(2 * SIZE, SIZE), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"),
        dict(type="PackSegInputs"),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=(2 * SIZE, SIZE), keep_ratio=True),
        dict(type="LoadAnnotations", reduce_zero_label=True),
        dict(type="PackSegInputs"),
    ]

    def loader(split: str, pipeline: list, sampler: str, batch: int) -> dict:
        return dict(batch_size=batch, num_workers=0, sampler=dict(type=sampler, shuffle=sampler != "DefaultSampler"),
                    dataset=dict(type="ADE20KDataset", data_root=str(data_root), pipeline=pipeline,
                                 data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}")))

    return dict(
        default_scope="mmseg",
        work_dir=str(work_dir),
        randomness=dict(seed=0),
        model=dict(
            type="EncoderDecoder",
            data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                                   seg_pad_val=255, size=crop),
            backbone=dict(type="MAE", img_size=crop, patch_size=16, embed_dims=32, num_layers=4,
                          num_heads=2, mlp_ratio=2, out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
                          norm_cfg=dict(type="LN", eps=1e-6), init_values=1.0),
            neck=dict(type="Feature2Pyramid", embed_dim=32, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
            decode_head=dict(type="UPerHead", in_channels=[32] * 4, in_index=[0, 1, 2, 3],
                             pool_scales=(1, 2, 3, 6), channels=32, dropout_ratio=0.1, num_classes=150,
                             norm_cfg=norm_cfg, align_corners=False,
                             loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
            auxiliary_head=dict(type="FCNHead", in_channels=32, in_index=2, channels=16, num_convs=1,
                                concat_input=False, dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg,
                                align_corners=False,
                                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4)),
            train_cfg=dict(),
            test_cfg=dict(mode="slide", crop_size=crop, stride=(43, 43))),
        train_dataloader=loader("training", train_pipeline, "InfiniteSampler", 2),
        val_dataloader=loader("validation", test_pipeline, "DefaultSampler", 1),
        val_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
        optim_wrapper=dict(type="OptimWrapper", constructor="LayerDecayOptimizerConstructor",
                           optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
                           paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.65)),
        param_scheduler=[dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1)],
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters),
        val_cfg=dict(type="ValLoop"),
        default_hooks=dict(timer=dict(type="IterTimerHook"),
                           logger=dict(type="LoggerHook", interval=1, log_metric_by_epoch=False),
                           param_scheduler=dict(type="ParamSchedulerHook"),
                           checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=max_iters)),
        env_cfg=dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
                     dist_cfg=dict(backend="nccl")),
        log_processor=dict(by_epoch=False),
        log_level="WARNING",
    )


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    return make_ade_semantic(tmp_path_factory.mktemp("ade"), num_train=4, num_val=2,
                             image_size=(SIZE, SIZE), num_classes=4, seed=0)


def brute_force_miou(model, dataloader, num_classes: int) -> float:
    """mIoU (in %) from a confusion matrix over all validation pixels, classes with union > 0."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for batch in dataloader:
        for sample in model.test_step(batch):
            pred = sample.pred_sem_seg.data.squeeze(0).numpy().ravel()
            gt = sample.gt_sem_seg.data.squeeze(0).numpy().ravel()
            keep = gt != 255
            confusion += np.bincount(gt[keep] * num_classes + pred[keep],
                                     minlength=num_classes ** 2).reshape(num_classes, num_classes)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    return float(np.round(np.mean(inter[union > 0] / union[union > 0]) * 100, 2))


@pytest.mark.slow
def test_mmseg_upernet_mae_trains_and_validates(ade_root, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config(mmseg_mae_upernet_cfg(ade_root, tmp_path / "work"))
    runner = Runner.from_cfg(cfg)
    runner.train()
    logged = [json.loads(line) for line in
              next((tmp_path / "work").glob("*/vis_data/scalars.json")).read_text().splitlines()]
    losses = [entry["loss"] for entry in logged if "loss" in entry]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert (tmp_path / "work" / "iter_2.pth").is_file()

    metrics = runner.val()
    expected = brute_force_miou(runner.model, runner.val_dataloader, num_classes=150)
    assert metrics["mIoU"] == pytest.approx(expected, abs=0.011)
    assert {"aAcc", "mIoU", "mAcc"} <= set(metrics)


@pytest.mark.slow
def test_mmseg_upernet_two_process_gloo(ade_root, tmp_path):
    """torch.distributed.run with 2 CPU processes through tools/train_seg.py; both ranks in sync."""
    from mmengine.config import Config

    cfg = Config(mmseg_mae_upernet_cfg(ade_root, tmp_path / "work"))
    cfg.custom_imports = dict(imports=["seg_test_hooks"], allow_failed_imports=False)
    cfg.custom_hooks = [dict(type="DumpRankWeightsHook")]
    cfg.log_level = "INFO"  # the environment summary ("Distributed training: True") is logged at INFO
    cfg.dump(tmp_path / "stack_cfg.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), str(REPO / "tools" / "train_seg.py"),
           str(tmp_path / "stack_cfg.py"), "--launcher", "pytorch"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = next((tmp_path / "work").glob("*/*.log")).read_text()
    assert "Distributed training: True" in log
    rank0 = torch.load(tmp_path / "work" / "rank0_weights.pt")
    rank1 = torch.load(tmp_path / "work" / "rank1_weights.pt")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)
