"""Frozen-feature segmentation probe (DINOv2's protocol): a BatchNorm + 1x1 conv head on cached
patch-token maps of a frozen backbone, several seeds, mIoU as MMSeg's ``IoUMetric``.

    from mae_transfer.probe import BackboneInit, load_ade, run_probe
    train, val, k = load_ade("data/ade/ADEChallengeData2016", size=128)
    results = run_probe(BackboneInit("mae", checkpoint="mae.pth"), train, val, protocol="linear",
                        seeds=(0, 1, 2), num_classes=k)

Plain PyTorch on :mod:`mae_transfer.models` and :mod:`mae_transfer.checkpoints`; no framework import.
"""
from .data import IGNORE_INDEX, SegSplit, load_ade, load_ade_split, reduce_zero_label
from .features import (
    PROTOCOL_BLOCKS,
    BackboneInit,
    FeatureCache,
    FeatureExtractor,
    ViTFeatures,
    extract_features,
    protocol_blocks,
)
from .head import HeadConfig, ProbeHead, evaluate_head, train_head
from .metrics import IoUAccumulator
from .report import format_table, spread, summarize, write_probe_json
from .run import ProbeResult, run_probe

__all__ = [
    "IGNORE_INDEX", "SegSplit", "load_ade", "load_ade_split", "reduce_zero_label",
    "PROTOCOL_BLOCKS", "BackboneInit", "FeatureCache", "FeatureExtractor", "ViTFeatures", "extract_features",
    "protocol_blocks", "HeadConfig", "ProbeHead", "evaluate_head", "train_head", "IoUAccumulator",
    "format_table", "spread", "summarize", "write_probe_json", "ProbeResult", "run_probe",
]
