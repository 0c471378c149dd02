"""End-to-end detection runs on CPU: the trainer overfits a tiny generated dataset and COCOEvaluator
scores it; tools/train_det.py trains with two gloo processes that stay in sync."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from detectron2.utils.env import seed_all_rng
from PIL import Image

from mae_transfer.cli.train_det import main as run
from mae_transfer.det import Trainer

from _det_cases import TINY_TRAIN, make_dataset, tiny_train_cfg, unregister

REPO = Path(__file__).resolve().parents[1]



pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def overfit_dataset(tmp_path):
    name = f"det_overfit_{tmp_path.name}"
    paths = make_dataset(tmp_path / "coco", name, num_images=2, num_classes=2)
    yield name, paths
    unregister(name)


@pytest.mark.slow
def test_tiny_vit_overfits_two_images_and_coco_evaluator_scores_it(overfit_dataset, tmp_path):
    """80 SGD steps on 2 images (from scratch): total loss at most half its start, bbox AP > 0,
    bbox/segm AP in metrics.json; --eval-only on the final weights gives the same AP and PNGs."""
    name, (json_file, image_dir) = overfit_dataset
    out = tmp_path / "train"
    # SGD with Detectron2's SGD weight decay (the base config's 0.1 is AdamW's; under the 'vitdet'
    # rule it also reaches biases and the channel LayerNorms)
    cfg = tiny_train_cfg(name, out, test=name, OPTIMIZER="SGD", BASE_LR=0.02, WEIGHT_DECAY=1e-4, MAX_ITER=80,
                         STEPS=(60,), CHECKPOINT_PERIOD=1000)
    seed_all_rng(cfg.SEED)  # as default_setup does: the same init whatever ran before
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()

    losses = [value for value, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 80
    assert np.median(losses[-10:]) <= 0.5 * losses[0], (losses[0], losses[-10:])
    assert results["bbox"]["AP"] > 0 and results["segm"]["AP"] >= 0
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    final = [r for r in records if "bbox/AP" in r][-1]
    assert final["bbox/AP"] == pytest.approx(results["bbox"]["AP"]) and "segm/AP" in final

    vis_out = tmp_path / "eval"
    code = run(["--config", "demo_vit_tiny", "--eval-only", "--vis", "2", "--register-coco", name, json_file,
                image_dir, *map(str, TINY_TRAIN), "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
                "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(vis_out)])
    assert code == 0
    pngs = sorted((vis_out / "vis").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (128, 128)
    evaluated = json.loads((vis_out / "inference" / "coco_instances_results.json").read_text())
    assert evaluated and {"bbox", "segmentation", "score"} <= set(evaluated[0])


def _digests(log: Path) -> dict[int, str]:
    return {int(it): d for it, d in re.findall(r"Weights digest at iteration (\d+): (\w+)", log.read_text())}


@pytest.mark.slow
def test_train_det_tool_two_gloo_processes_keep_identical_weights(tmp_path):
    json_file, image_dir = make_dataset(tmp_path / "coco", "unused_in_parent", num_images=4)
    unregister("unused_in_parent")
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "tools" / "train_det.py"), "--config", "demo_vit_tiny", "--num-gpus", "2",
           "--register-coco", "two_proc_train", json_file, image_dir, *map(str, TINY_TRAIN),
           "DATASETS.TRAIN", "('two_proc_train',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "3",
           "SOLVER.CHECKPOINT_PERIOD", "1000", "OUTPUT_DIR", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    log0, log1 = out / "log.txt", out / "log.txt.rank1"
    assert "World size: 2" in log0.read_text()
    rank0, rank1 = _digests(log0), _digests(log1)
    assert set(rank0) == set(rank1) == {0, 3}
    assert rank0 == rank1  # same weights on both ranks, before and after the steps
    assert rank0[0] != rank0[3]  # and the steps changed them
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    assert any("total_loss" in json.loads(line) for line in (out / "metrics.json").read_text().splitlines())
