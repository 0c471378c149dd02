"""UperNet (MMSeg) inference with a trained run's config, with ``mmseg.apis.inference_model`` semantics.

Test-time preprocessing is the config's own ``test_pipeline`` (its resize, without the annotation
loading and label checks), fed the image as an array; normalisation, padding and ``test_cfg``
(``mode='whole'`` or ``'slide'`` with its crop and stride) are the segmentor's, and logits are
resized back to each original image, as ``inference_model`` does. Images whose preprocessed sizes
are equal go through the model as one batch.
"""
from __future__ import annotations

import colorsys
import copy
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.config import Config

from .weights import checked_class_names, load_trained_weights

# Pipeline steps that read or check annotations: there are none at inference.
_LABEL_STEPS = {"LoadAnnotations", "CheckSegLabels"}
_LOAD_STEPS = {"LoadImageFromFile", "CheckedLoadImageFromFile", "LoadImageFromNDArray"}


@dataclass
class SegmentationResult:
    """One image's semantic segmentation at its original size.

    Attributes:
        label_map: (H, W) int64 class ids (indices into ``class_names``).
        class_names: name of each class id.
        palette: an (R, G, B) colour per class id.
        probabilities: (C, H, W) float32 class probabilities (softmax of the logits), when asked for.
    """
    label_map: np.ndarray
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    probabilities: np.ndarray | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.label_map.shape)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``label_map``, ``probabilities`` (or None), ``class_names``, ``image_size``."""
        return {"label_map": self.label_map, "probabilities": self.probabilities,
                "class_names": list(self.class_names), "image_size": self.image_size}


def load_seg_config(config: Config | str | os.PathLike) -> Config:
    """A Config as given (copied), or a ``.py`` path / bare name (``configs/seg``)."""
    from mae_transfer.seg.config import load_config

    return copy.deepcopy(config) if isinstance(config, Config) else load_config(str(config))


def _build_segmentor(cfg: Config, device: str) -> torch.nn.Module:
    """The segmentor of ``cfg`` (:func:`mae_transfer.seg.build_segmentor`) without pretrained
    backbone weights (the trained weights replace them); SyncBN as BN off the GPU."""
    from mae_transfer.seg import build_segmentor
    from mae_transfer.seg.runner import replace_syncbn

    cfg = copy.deepcopy(cfg)
    cfg.model.pop("pretrained", None)
    cfg.model.train_cfg = None
    if isinstance(cfg.model.get("backbone"), dict) and "pretrained" in cfg.model.backbone:
        cfg.model.backbone.pretrained = None
    if not str(device).startswith("cuda"):
        replace_syncbn(cfg.model)  # SyncBN needs GPUs; same parameters and buffers as BN
    return build_segmentor(cfg)


def _test_pipeline(cfg: Config) -> list[dict]:
    """The config's test pipeline reading an array, without annotation steps."""
    pipeline = cfg.get("test_pipeline") or cfg.test_dataloader.dataset.pipeline
    steps = [dict(step) for step in pipeline if step.get("type") not in _LABEL_STEPS]
    for step in steps:
        if step.get("type") in _LOAD_STEPS:
            step.clear()
            step["type"] = "LoadImageFromNDArray"
    return steps


def _generated_palette(count: int) -> list[tuple[int, int, int]]:
    """Distinct colours (golden-ratio hues) for datasets without a palette."""
    colours = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95 if i % 2 else 0.75)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def _classes_and_palette(cfg: Config, num_classes: int) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """Class names and colours from the test dataset's metainfo or its class, else generated."""
    from mmseg.registry import DATASETS

    dataset = (cfg.get("test_dataloader") or {}).get("dataset") or {}
    meta = dict(dataset.get("metainfo") or {})
    cls = DATASETS.get(dataset.get("type")) if isinstance(dataset.get("type"), str) else None
    own = dict(getattr(cls, "METAINFO", {}) or {})
    names = meta.get("classes") or own.get("classes")
    palette = meta.get("palette") or (own.get("palette") if names == own.get("classes") else None)
    if not names or len(names) != num_classes:
        names = [f"class {i}" for i in range(num_classes)]
    if not palette or len(palette) < num_classes:
        palette = _generated_palette(num_classes)
    return tuple(names), tuple(tuple(int(v) for v in colour) for colour in palette[:num_classes])


class SegEngine:
    """An MMSeg segmentor built from ``config`` with the trained ``weights``; see the module doc."""

    task = "seg"

    def __init__(self, config: Config | str | os.PathLike, weights: str | os.PathLike, device: str = "cpu", *,
                 class_names: Sequence[str] | None = None, unsafe_load: bool = False, **_: Any):
        from mmengine.dataset import Compose

        cfg = load_seg_config(config)
        self.cfg, self.device = cfg, torch.device(device)
        self.model = _build_segmentor(cfg, str(device))
        source = cfg.filename or "the config"
        load_trained_weights(self.model, weights, unsafe=unsafe_load or bool(cfg.get("unsafe_load")),
                             config_name=source)
        self.model.cfg = cfg
        self.model.to(self.device).eval()
        self.pipeline = Compose(_test_pipeline(cfg))
        num_classes = self.model.decode_head.num_classes
        self.class_names, self.palette = _classes_and_palette(cfg, num_classes)
        if class_names:
            self.class_names = checked_class_names(class_names, num_classes)

    def model_input(self, rgb: np.ndarray) -> dict[str, Any]:
        """(H, W, 3) uint8 RGB -> the packed ``inputs`` / ``data_samples`` of one image.

        MMSeg's loaders give BGR (OpenCV) arrays; its preprocessor turns them into RGB
        (``bgr_to_rgb``), so the array goes in as BGR.
        """
        return self.pipeline(dict(img=np.ascontiguousarray(rgb[:, :, ::-1])))

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], probabilities: bool = False) -> list[SegmentationResult]:
        """A batch of (H, W, 3) uint8 RGB images -> one :class:`SegmentationResult` each."""
        packed = [self.model_input(image) for image in images]
        results: list[SegmentationResult | None] = [None] * len(packed)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, item in enumerate(packed):
            by_shape.setdefault(tuple(item["inputs"].shape), []).append(index)
        for indices in by_shape.values():  # the preprocessor stacks only equal sizes
            samples = self.model.test_step({"inputs": [packed[i]["inputs"] for i in indices],
                                            "data_samples": [packed[i]["data_samples"] for i in indices]})
            for i, sample in zip(indices, samples):
                results[i] = self._result(sample, probabilities)
        return results

    def _result(self, sample: Any, probabilities: bool) -> SegmentationResult:
        label_map = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
        probs = None
        if probabilities:
            logits = sample.seg_logits.data.float()
            if logits.shape[0] == 1:  # a binary head: MMSeg already applied the sigmoid
                probs = torch.cat([1 - logits, logits]).cpu().numpy()
            else:
                probs = logits.softmax(dim=0).cpu().numpy()
        return SegmentationResult(label_map, self.class_names, self.palette, probs)
