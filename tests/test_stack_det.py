"""The Detectron2 half of the pinned stack: its own Mask R-CNN R50-FPN config trains and evaluates
on CPU through this project's trainer, in one process and in two gloo processes."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import launch
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks
from detectron2.utils import comm

from mae_transfer.data import make_coco_instances
from mae_transfer.det import Trainer, get_det_cfg, register_coco_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


R50_FPN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"


def _r50_cfg(train: str, test: str | None, output_dir: str, max_iter: int = 2):
    """Detectron2's own R50-FPN Mask R-CNN config, shrunk to 128 px on CPU without weights.

    GroupNorm replaces FrozenBN: without ImageNet weights frozen statistics let activations blow up.
    """
    cfg = get_det_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(R50_FPN))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SEED", 0, "MODEL.RESNETS.NORM", "GN",
        "INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 128,
        "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 128,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 1e-3,
        "SOLVER.MAX_ITER", max_iter, "SOLVER.CHECKPOINT_PERIOD", 1000,
        "DATASETS.TRAIN", (train,), "DATASETS.TEST", (test,) if test else (),
        "OUTPUT_DIR", output_dir,
    ])
    return cfg


def _register(name: str, root, split: str, num_images: int) -> None:
    json_file, image_dir = make_coco_instances(root, split=split, num_images=num_images,
                                               image_size=(128, 128), num_classes=3, seed=0)
    register_coco_dataset(name, str(json_file), str(image_dir))


@pytest.fixture
def coco_datasets(tmp_path):
    names = (f"stack_train_{tmp_path.name}", f"stack_val_{tmp_path.name}")
    _register(names[0], tmp_path / "coco", "train", 4)
    _register(names[1], tmp_path / "coco", "val", 2)
    yield names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_coco_evaluator_gives_perfect_ap_for_ground_truth(coco_datasets, tmp_path):
    """Sanity of the evaluation path itself: ground truth fed back as predictions scores AP 100."""
    val = coco_datasets[1]
    evaluator = COCOEvaluator(val, output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for record in DatasetCatalog.get(val):
        h, w = record["height"], record["width"]
        inst = Instances((h, w))
        anns = record["annotations"]
        inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                              for a in anns], dtype=torch.float32))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns])
        polygons = PolygonMasks([a["segmentation"] for a in anns])
        inst.pred_masks = BitMasks.from_polygon_masks(polygons, h, w).tensor
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": inst}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0, abs=0.5)
    assert results["segm"]["AP"] > 95.0


@pytest.mark.slow
def test_detectron2_r50_fpn_trains_and_evaluates_on_cpu(coco_datasets, tmp_path):
    train, val = coco_datasets
    cfg = _r50_cfg(train, val, str(tmp_path / "out"))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()

    assert trainer.cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3  # taken from the training json
    assert trainer.iter == 2  # iterations 0 and 1 ran
    for task in ("bbox", "segm"):
        assert 0.0 <= results[task]["AP"] <= 100.0
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.json").read_text().splitlines()]
    losses = [line["total_loss"] for line in lines if "total_loss" in line]
    assert len(losses) >= 1 and all(np.isfinite(losses))
    assert any("bbox/AP" in line and "segm/AP" in line for line in lines)
    assert (tmp_path / "out" / "model_final.pth").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_process_worker(root: str, output_dir: str) -> None:
    """Runs in each spawned process: train 2 iterations, save this rank's weights."""
    _register("stack_ddp_train", root, "train", 4)
    trainer = Trainer(_r50_cfg("stack_ddp_train", None, output_dir))
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    assert isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               f"{output_dir}/rank{comm.get_rank()}.pth")
    torch.distributed.destroy_process_group()  # gloo processes can abort at exit without it


@pytest.mark.slow
def test_detectron2_r50_fpn_two_gloo_processes(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    launch(_two_process_worker, num_gpus_per_machine=2, dist_url=f"tcp://127.0.0.1:{_free_port()}",
           args=(str(tmp_path / "coco"), str(output_dir)))
    rank0 = torch.load(output_dir / "rank0.pth")
    rank1 = torch.load(output_dir / "rank1.pth")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    saved = torch.load(output_dir / "model_final.pth")["model"]  # written by rank 0 only
    for key in rank0:
        torch.testing.assert_close(saved[key], rank0[key], rtol=0, atol=0, msg=key)
