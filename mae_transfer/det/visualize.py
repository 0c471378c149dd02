"""Draw a detector's predictions on test images with Detectron2's Visualizer and save PNGs."""
from __future__ import annotations

import os

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, build_detection_test_loader, detection_utils
from detectron2.utils.visualizer import Visualizer


def save_visualizations(cfg: CfgNode, model: torch.nn.Module, dataset_name: str, num_images: int,
                        output_dir: str, score_thresh: float = 0.5) -> list[str]:
    """Run ``model`` on the first ``num_images`` images of ``dataset_name``; save one PNG each.

    Boxes, classes, scores and masks of predictions scoring at least ``score_thresh`` are drawn on
    the original image. Returns the written paths (``output_dir/<image file stem>.png``).
    """
    os.makedirs(output_dir, exist_ok=True)
    metadata = MetadataCatalog.get(dataset_name)
    loader = build_detection_test_loader(cfg, dataset_name)
    was_training = model.training
    model.eval()
    paths = []
    with torch.no_grad():
        for inputs in loader:
            if len(paths) >= num_images:
                break
            record = inputs[0]
            instances = model(inputs)[0]["instances"].to("cpu")
            instances = instances[instances.scores >= score_thresh]
            image = detection_utils.read_image(record["file_name"], format="RGB")
            drawn = Visualizer(image, metadata=metadata).draw_instance_predictions(instances)
            path = os.path.join(output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png")
            drawn.save(path)
            paths.append(path)
    model.train(was_training)
    return paths
