"""Mask R-CNN inference with a trained run's Detectron2 config, as Detectron2's ``DefaultPredictor``.

Test-time preprocessing is the config's own: ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST,
INPUT.MAX_SIZE_TEST)``, channels in ``INPUT.FORMAT``; normalisation and the padding (to a multiple
of the backbone's stride, and for the ViTDet / LSJ configs to the ``MODEL.PYRAMID.SQUARE_PAD``
square) happen inside the model, as in training and evaluation. Several images go through the model
as one padded batch; results are at each original image's size.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.structures import Instances

from mae_transfer.checkpoints import read_checkpoint

from .weights import checked_class_names, load_trained_weights, model_state_from

_CLS_SCORE = "roi_heads.box_predictor.cls_score.weight"


@dataclass
class DetectionResult:
    """One image's detections at its original size.

    Attributes:
        instances: Detectron2 ``Instances`` on the CPU (``pred_boxes``, ``scores``,
            ``pred_classes``, ``pred_masks``), as ``DefaultPredictor`` returns them.
        class_names: name of each class id.
    """
    instances: Instances
    class_names: tuple[str, ...]

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return tuple(self.instances.image_size)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float32 boxes, x0 y0 x1 y1 in pixels."""
        return self.instances.pred_boxes.tensor.numpy().astype(np.float32)

    @property
    def scores(self) -> np.ndarray:
        """(N,) float32 scores in [0, 1]."""
        return self.instances.scores.numpy().astype(np.float32)

    @property
    def classes(self) -> np.ndarray:
        """(N,) int64 class ids (indices into ``class_names``)."""
        return self.instances.pred_classes.numpy().astype(np.int64)

    @property
    def masks(self) -> np.ndarray | None:
        """(N, H, W) bool instance masks, or None for a model without a mask head."""
        if not self.instances.has("pred_masks"):
            return None
        return self.instances.pred_masks.numpy().astype(bool)

    def __len__(self) -> int:
        return len(self.instances)

    def filter(self, score_thresh: float) -> "DetectionResult":
        """Only the detections scoring at least ``score_thresh``."""
        return DetectionResult(self.instances[self.instances.scores >= score_thresh], self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``boxes`` (N, 4), ``scores`` (N,), ``classes`` (N,), ``class_names`` (N names),
        ``masks`` (N, H, W) bool or None, ``image_size`` (H, W); arrays are NumPy."""
        return {"boxes": self.boxes, "scores": self.scores, "classes": self.classes,
                "class_names": [self.class_names[c] for c in self.classes], "masks": self.masks,
                "image_size": self.image_size}


def load_det_config(config: CfgNode | str | os.PathLike) -> CfgNode:
    """A CfgNode as given (cloned), or a yaml path / bare name loaded with the project's keys."""
    from mae_transfer.det.config import load_config

    return config.clone() if isinstance(config, CfgNode) else load_config(config)


def _build_det_model(cfg: CfgNode) -> torch.nn.Module:
    """The detector of ``cfg`` (as training builds it) on ``cfg.MODEL.DEVICE``."""
    from mae_transfer.det import build_model

    return build_model(cfg, device=None)


def _class_names(cfg: CfgNode, num_classes: int) -> tuple[tuple[str, ...], list[int] | None]:
    """Names (and COCO category ids, when the metadata maps them) from the datasets' metadata
    (registered or built-in), else ``class 0``, ``class 1``, ... and None."""
    from detectron2.data import MetadataCatalog

    from mae_transfer.data import BUILTIN_DATASETS
    from mae_transfer.data.render import shape_classes

    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        meta = MetadataCatalog.get(name) if name in MetadataCatalog.list() else None
        names = meta.get("thing_classes") if meta is not None else None
        if names is None and BUILTIN_DATASETS.get(name, {}).get("kind") == "coco":
            names = [c.name for c in shape_classes(BUILTIN_DATASETS[name]["num_classes"])]
        if names is not None and len(names) == num_classes:
            to_contiguous = meta.get("thing_dataset_id_to_contiguous_id") if meta is not None else None
            ids = sorted(to_contiguous, key=to_contiguous.get) if to_contiguous else None
            return tuple(names), ids
    return tuple(f"class {i}" for i in range(num_classes)), None


class DetEngine:
    """A Detectron2 detector built from ``config`` with the trained ``weights``; see the module doc."""

    task = "det"

    def __init__(self, config: CfgNode | str | os.PathLike, weights: str | os.PathLike, device: str = "cpu", *,
                 score_thresh: float | None = None, class_names: Sequence[str] | None = None,
                 unsafe_load: bool = False):
        cfg = load_det_config(config)
        cfg.defrost()
        cfg.MODEL.DEVICE = str(device)
        cfg.MODEL.VIT.WEIGHTS = ""  # the trained weights replace the pretrained backbone's
        cfg.MODEL.WEIGHTS = str(weights)
        if score_thresh is not None:
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_thresh)
        if cfg.MODEL.ROI_HEADS.NUM_CLASSES == 0:  # "from the training set": read it off the weights
            cfg.MODEL.ROI_HEADS.NUM_CLASSES = _num_classes_in(weights, unsafe_load)
        cfg.freeze()
        self.cfg = cfg
        self.model = _build_det_model(cfg)
        source = getattr(config, "name", None) or (str(config) if not isinstance(config, CfgNode) else "the config")
        load_trained_weights(self.model, weights, unsafe=unsafe_load or cfg.MODEL.UNSAFE_LOAD, config_name=source)
        self.model.to(cfg.MODEL.DEVICE).eval()
        self.class_names, self.category_ids = _class_names(cfg, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        if class_names:
            self.class_names = checked_class_names(class_names, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT

    def model_input(self, rgb: np.ndarray) -> dict[str, Any]:
        """(H, W, 3) uint8 RGB -> Detectron2's input dict (resized CHW float image, original size)."""
        image = rgb[:, :, ::-1] if self.input_format == "BGR" else rgb
        height, width = image.shape[:2]
        resized = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray]) -> list[DetectionResult]:
        """A batch of (H, W, 3) uint8 RGB images -> one :class:`DetectionResult` each."""
        outputs = self.model([self.model_input(image) for image in images])
        return [DetectionResult(out["instances"].to("cpu"), self.class_names) for out in outputs]


def _num_classes_in(weights: str | os.PathLike, unsafe: bool) -> int:
    state = model_state_from(read_checkpoint(weights, unsafe=unsafe), weights)
    if _CLS_SCORE not in state:
        from mae_transfer.errors import UserError

        raise UserError(f"Checkpoint {Path(weights)} has no {_CLS_SCORE}, so MODEL.ROI_HEADS.NUM_CLASSES 0 (auto) "
                        "cannot be resolved; set MODEL.ROI_HEADS.NUM_CLASSES in the config.")
    return state[_CLS_SCORE].shape[0] - 1
