"""``det.build_model`` / ``seg.build_segmentor`` build the models the trainers build."""
from __future__ import annotations

import pytest

pytest.importorskip("detectron2")
pytest.importorskip("mmseg")

SHALLOW_DET = ["MODEL.VIT.WEIGHTS", "", "MODEL.VIT.DEPTH", 2, "MODEL.VIT.GLOBAL_BLOCKS", "[1]",
               "MODEL.ROI_HEADS.NUM_CLASSES", 3]
SHALLOW_SEG = {"model.backbone.depth": 2, "model.backbone.out_indices": (0, 1, 1, 1), "model.decode_head.channels": 64,
               "model.auxiliary_head.channels": 64}


def _shapes(model) -> dict:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def test_det_build_model_matches_the_trainer(tmp_path):
    from mae_transfer.det import Trainer, build_model, load_config

    ours = build_model("coco_vitb_mae", SHALLOW_DET)
    cfg = load_config("coco_vitb_mae", SHALLOW_DET + ["MODEL.DEVICE", "cpu"])
    trainers = Trainer.build_model(cfg)  # what Trainer(cfg) builds (DefaultTrainer.build_model)
    assert _shapes(ours) == _shapes(trainers)
    assert "backbone.net.blocks.1.attn.qkv.weight" in _shapes(ours) and next(ours.parameters()).device.type == "cpu"
    again = build_model(cfg, ["MODEL.ROI_HEADS.NUM_CLASSES", 5])  # a loaded config is not modified
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert _shapes(again)["roi_heads.box_predictor.cls_score.weight"][0] == 6


def test_seg_build_segmentor_matches_the_runner(tmp_path):
    from mae_transfer.seg import build_segmentor
    from mae_transfer.seg.config import load_config
    from mae_transfer.seg.runner import MAETransferRunner

    ours = build_segmentor("ade20k_vitb_mae", SHALLOW_SEG)
    cfg = load_config("ade20k_vitb_mae", SHALLOW_SEG)
    cfg.work_dir = str(tmp_path)
    runners = MAETransferRunner.from_cfg(cfg).model  # what tools/train_seg.py trains (data built lazily)
    assert _shapes(ours) == _shapes(runners)
    assert "backbone.net.blocks.1.attn.qkv.weight" in _shapes(ours) and "neck.pyramid.fpn1.0.weight" in _shapes(ours)
