"""Tiny trained detection and segmentation runs for the inference and export tests (trained once
per session: a few iterations of the demo configs shrunk further, ~10 s together on one core)."""
from __future__ import annotations

import shutil
from pathlib import Path

from mae_transfer.data import make_ade_semantic, make_coco_instances

from _det_cases import TINY_TRAIN

CLASSES_DET = ("house", "cross")  # make_coco_instances' first two shapes
CLASSES_SEG = ("sky", "ground", "house")
_RUNS: dict[str, Path] = {}

# demo_vit_tiny (seg) shrunk as tests/test_seg.py's TINY.
SEG_TINY = [
    "model.backbone.depth=4", "model.backbone.embed_dim=64", "model.backbone.num_heads=2",
    "model.backbone.out_indices=[0,1,2,3]", "model.neck.in_channels=64", "model.decode_head.in_channels=[64,64,64,64]",
    "model.decode_head.channels=16", "model.auxiliary_head.in_channels=64", "model.auxiliary_head.channels=8",
    "train_dataloader.batch_size=2", "train_cfg.max_iters=2", "train_cfg.val_interval=1000",
    "default_hooks.checkpoint.interval=2", "default_hooks.logger.interval=1",
]


def det_run(root: Path) -> tuple[Path, Path]:
    """(OUTPUT_DIR of a 2-iteration tools/train_det.py run at 128 px, its image folder)."""
    if "det" not in _RUNS:
        from mae_transfer.cli.train_det import main as run

        json_file, image_dir = make_coco_instances(root / "coco", split="train", num_images=2, image_size=(128, 128),
                                                   num_classes=2, seed=0)
        out = root / "det_run"
        code = run(["--config", "demo_vit_tiny", "--register-coco", "predict_tiny", str(json_file), str(image_dir),
                    *map(str, TINY_TRAIN), "DATASETS.TRAIN", "('predict_tiny',)", "DATASETS.TEST", "()",
                    "SOLVER.MAX_ITER", "2", "TEST.DETECTIONS_PER_IMAGE", "5", "OUTPUT_DIR", str(out)])
        assert code == 0
        _RUNS["det"], _RUNS["det_images"] = out, Path(image_dir)
    return _RUNS["det"], _RUNS["det_images"]


def seg_run(root: Path) -> tuple[Path, Path]:
    """(work dir of a 2-iteration tools/train_seg.py run on 64 px images, the ADE-layout data root)."""
    if "seg" not in _RUNS:
        from mae_transfer.cli.train_seg import main as train_seg

        data = make_ade_semantic(root / "ade", num_train=2, num_val=1, image_size=(64, 64),
                                 num_classes=len(CLASSES_SEG), seed=1)
        (root / "classes.txt").write_text("\n".join(CLASSES_SEG) + "\n")
        out = root / "seg_run"
        assert train_seg(["demo_vit_tiny", "--work-dir", str(out), "--data-root", str(data), "--classes",
                            str(root / "classes.txt"), "--cfg-options", *SEG_TINY]) == 0
        _RUNS["seg"], _RUNS["seg_data"] = out, Path(data)
    return _RUNS["seg"], _RUNS["seg_data"]


def copy_run(run: Path, to: Path) -> Path:
    """A copy of a run folder (to alter its config or checkpoints without touching the shared one)."""
    shutil.copytree(run, to)
    return to
