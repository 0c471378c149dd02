"""Using trained runs: :class:`Predictor` (single images and batches) and export to TorchScript / ONNX.

Detection results are :class:`~mae_transfer.inference.det.DetectionResult` (Detectron2
``Instances`` + plain data), segmentation results
:class:`~mae_transfer.inference.seg.SegmentationResult` (label map, optional probabilities).
"""
from .images import collect_images, read_image
from .predictor import Predictor, task_of
from .runs import RunFiles, find_run

__all__ = ["Predictor", "task_of", "find_run", "RunFiles", "read_image", "collect_images"]
