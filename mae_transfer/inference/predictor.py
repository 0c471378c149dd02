"""``Predictor``: a trained detection or segmentation run, applied to images.

    from mae_transfer.inference import Predictor
    predictor = Predictor.from_run("output/demo_det")            # or a segmentation work dir
    result = predictor("street.jpg")                             # DetectionResult | SegmentationResult
    results = predictor([image_a, image_b])                      # paths, PIL images, HxWx3 RGB uint8
    result.instances, result.to_dict()                           # detection
    predictor("street.jpg", probabilities=True).probabilities    # segmentation, (C, H, W)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

from mae_transfer.errors import UserError

from .images import ImageInput, read_image
from .runs import find_run

Result = Union["DetectionResult", "SegmentationResult"]  # noqa: F821  (det.py / seg.py)


def task_of(config: Any) -> str:
    """"det" for a Detectron2 CfgNode or .yaml, "seg" for an MMEngine Config or .py; bare names are
    looked up in configs/det first, then configs/seg."""
    if type(config).__name__ == "CfgNode":
        return "det"
    if type(config).__name__ == "Config":
        return "seg"
    suffix = Path(str(config)).suffix
    if suffix in (".yaml", ".yml"):
        return "det"
    if suffix == ".py":
        return "seg"
    from mae_transfer.det.config import CONFIG_DIR as DET_DIR
    from mae_transfer.seg.config import CONFIG_DIR as SEG_DIR

    if any((DET_DIR / f"{config}{s}").is_file() for s in (".yaml", ".yml")):
        return "det"
    if (SEG_DIR / f"{config}.py").is_file():
        return "seg"
    raise UserError(f"Config '{config}' is neither a file nor a name in configs/det or configs/seg; pass the "
                    "run's config.yaml (detection) or dumped .py (segmentation).")


def check_device(device: str) -> None:
    """Raise a one-sentence :class:`UserError` for a CUDA device this machine does not have."""
    import torch

    kind, _, index = str(device).partition(":")
    if kind == "cuda" and (not torch.cuda.is_available() or int(index or 0) >= torch.cuda.device_count()):
        raise UserError(f"Device '{device}' is not available here ({torch.cuda.device_count()} CUDA devices); "
                        "use --device cpu or another device.")


class Predictor:
    """Applies a trained model to images with the config's own test-time preprocessing.

    Args:
        config: detection: a Detectron2 ``CfgNode`` or yaml (the run's ``config.yaml``, or a name in
            configs/det); segmentation: an MMEngine ``Config`` or ``.py`` (the run's dumped config).
        weights: the trained model's checkpoint (every tensor must fit the config).
        device: "cpu", "cuda", "cuda:1", ...
        score_thresh: detection only: drop detections scoring lower (default: the config's
            ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``).
        class_names: names to report instead of those found in the config / dataset metadata.
        unsafe_load: allow checkpoints that run code when unpickled (trusted files only).
    """

    def __init__(self, config: Any, weights: str | os.PathLike, device: str = "cpu", *,
                 score_thresh: float | None = None, class_names: Sequence[str] | None = None,
                 unsafe_load: bool = False):
        if not Path(weights).is_file():
            raise UserError(f"Weights file {weights} does not exist; check the path.")
        check_device(device)
        self.task = task_of(config)
        if self.task == "det":
            from .det import DetEngine as Engine
        else:
            from .seg import SegEngine as Engine
        self.engine = Engine(config, weights, device, score_thresh=score_thresh, class_names=class_names,
                             unsafe_load=unsafe_load)
        self.weights = Path(weights)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str = "cpu", **kwargs: Any) -> "Predictor":
        """The config and final (or last) weights of a training run's output folder.

        Raises:
            UserError: for a missing folder, a folder no run wrote, or a run without a checkpoint yet.
        """
        run = find_run(run_dir)
        return cls(run.config, run.weights, device, **kwargs)

    @property
    def model(self):
        """The underlying ``torch.nn.Module`` (Detectron2 ``GeneralizedRCNN`` or MMSeg segmentor)."""
        return self.engine.model

    @property
    def cfg(self):
        """The config the model was built from (``CfgNode`` or MMEngine ``Config``)."""
        return self.engine.cfg

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.engine.class_names

    def __call__(self, images: ImageInput | Sequence[ImageInput], *, probabilities: bool = False
                 ) -> Result | list[Result]:
        """One image (path, PIL image, HxWx3 RGB uint8 array) -> one result; a list -> a list.

        Args:
            probabilities: segmentation only: also return (C, H, W) class probabilities.
        """
        single = not isinstance(images, (list, tuple))
        arrays = [read_image(image) for image in ([images] if single else images)]
        if not arrays:
            return []
        if self.task == "seg":
            results = self.engine.predict(arrays, probabilities=probabilities)
        else:
            results = self.engine.predict(arrays)
        return results[0] if single else results
