"""Exportable views of trained models, and their export to TorchScript / ONNX at a fixed input size.

Every exported module takes a (B, 3, H, W) float32 image batch, RGB, 0..255, at the export size,
and normalises it itself (the config's mean / std and channel order):

* detection ``backbone``: :class:`DetBackbone` -> the pyramid's maps ``p2..p6`` (a tuple);
* detection ``model``: the whole Mask R-CNN through Detectron2's ``TracingAdapter`` -> boxes,
  classes, masks (28x28, not pasted) and scores of one image, in the resized and padded frame
  (``model.inference(..., do_postprocess=False)``), batch size 1;
* segmentation ``model``: :class:`SegModel` -> (B, C, H, W) logits (``encode_decode``: the ``whole``
  forward, also what ``slide`` mode runs on each crop); ``backbone``: :class:`SegBackbone` -> the
  neck's maps.
"""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from mae_transfer.errors import UserError
from mae_transfer.utils.fileio import atomic_write

FORMATS = ("torchscript", "onnx")
PARTS = ("backbone", "model")


class DetBackbone(nn.Module):
    """A detector's backbone + pyramid: (B, 3, H, W) RGB 0..255 -> ``(p2, ..., p6)``, (B, C, H/s, W/s)."""

    def __init__(self, detector: nn.Module, input_format: str = "RGB"):
        super().__init__()
        self.backbone = detector.backbone
        self.names = list(self.backbone.output_shape())
        self.bgr = input_format == "BGR"
        self.register_buffer("mean", detector.pixel_mean.detach().clone().view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", detector.pixel_std.detach().clone().view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = image.flip(1) if self.bgr else image
        features = self.backbone((x - self.mean) / self.std)
        return tuple(features[name] for name in self.names)


class _SegPreprocess(nn.Module):
    """The segmentor's data preprocessor for an RGB 0..255 batch (channel order, mean / std)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        pre = segmentor.data_preprocessor
        self.to_bgr = not getattr(pre, "channel_conversion", False)  # the model then sees BGR, as loaded
        normalise = getattr(pre, "_enable_normalize", True)
        mean = pre.mean.detach().clone().view(1, -1, 1, 1) if normalise else torch.zeros(1, 3, 1, 1)
        std = pre.std.detach().clone().view(1, -1, 1, 1) if normalise else torch.ones(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.flip(1) if self.to_bgr else image
        return (x - self.mean) / self.std


class SegModel(nn.Module):
    """A whole segmentor: (B, 3, H, W) RGB 0..255 -> (B, C, H, W) logits (``encode_decode``)."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor, self.preprocess = segmentor, _SegPreprocess(segmentor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        metas = [dict(img_shape=(height, width), pad_shape=(height, width), ori_shape=(height, width))] * image.shape[0]
        return self.segmentor.encode_decode(self.preprocess(image), metas)


class SegBackbone(nn.Module):
    """A segmentor's backbone + neck: (B, 3, H, W) RGB 0..255 -> the neck's maps."""

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor, self.preprocess = segmentor, _SegPreprocess(segmentor)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.segmentor.extract_feat(self.preprocess(image)))


def det_model_adapter(detector: nn.Module, image: torch.Tensor, input_format: str = "RGB") -> nn.Module:
    """Mask R-CNN wrapped in Detectron2's ``TracingAdapter`` for one (3, H, W) RGB 0..255 image.

    Its forward takes the image (in the config's channel order) and returns the flattened
    ``Instances`` fields (``pred_boxes``, ``pred_classes``, ``pred_masks``, ``scores``).
    """
    from detectron2.export import TracingAdapter

    def inference(model, inputs):
        return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]

    example = image.flip(0) if input_format == "BGR" else image
    return TracingAdapter(detector, [{"image": example}], inference)


@dataclass
class Exportable:
    """A module to export, its example input(s), and what the export should say about it."""
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    note: str = ""


def default_size(predictor) -> tuple[int, int]:
    """The export size: the detector's padded square (``MODEL.PYRAMID.SQUARE_PAD``), else its
    ``INPUT.MAX_SIZE_TEST`` rounded up to the stride; the segmentor's crop (``test_cfg.crop_size``
    for slide inference, else the preprocessor's ``size``, else the backbone's ``img_size``)."""
    cfg = predictor.cfg
    if predictor.task == "det":
        square = cfg.MODEL.PYRAMID.get("SQUARE_PAD", 0) if "PYRAMID" in cfg.MODEL else 0
        if square:
            return square, square
        div = max(predictor.model.backbone.size_divisibility, 1)
        side = -(-cfg.INPUT.MAX_SIZE_TEST // div) * div
        return side, side
    test_cfg = cfg.model.get("test_cfg") or {}
    size = test_cfg.get("crop_size") or (cfg.model.get("data_preprocessor") or {}).get("size") \
        or cfg.model.backbone.get("img_size", 512)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    return int(size[0]), int(size[1])


def example_image(size: tuple[int, int], image: np.ndarray | None = None, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) float32 RGB 0..255: ``image`` resized to ``size``, or seeded noise."""
    if image is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(1, 3, *size, generator=generator) * 255
    from PIL import Image

    resized = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    return torch.as_tensor(resized.astype(np.float32).transpose(2, 0, 1)).unsqueeze(0)


def exportable(predictor, part: str, size: tuple[int, int], image: np.ndarray | None = None) -> Exportable:
    """The module of ``predictor`` named by ``part`` ("backbone" | "model") with an example input."""
    model = predictor.model.eval()
    x = example_image(size, image).to(next(model.parameters()).device)
    if predictor.task == "seg":
        module = SegModel(model) if part == "model" else SegBackbone(model)
        return Exportable(module.eval(), (x,), ["image"])
    fmt = predictor.cfg.INPUT.FORMAT
    if part == "backbone":
        return Exportable(DetBackbone(model, fmt).eval(), (x,), ["image"])
    adapter = det_model_adapter(model, x[0], fmt)
    return Exportable(adapter.eval(), tuple(adapter.flattened_inputs), ["image"],
                      note="batch size 1; boxes/masks in the resized, padded frame (no postprocessing)")


def _flatten(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for item in outputs for t in _flatten(item)]


def max_difference(expected: Any, actual: Any) -> float:
    """Largest absolute difference, relative to max(1, |expected|max), over all output tensors."""
    expected, actual = _flatten(expected), _flatten(actual)
    if len(expected) != len(actual) or any(e.shape != a.shape for e, a in zip(expected, actual)):
        return float("inf")
    worst = 0.0
    for e, a in zip(expected, actual):
        if e.numel() == 0:
            continue
        e, a = e.detach().float().cpu(), torch.as_tensor(a).float().cpu()
        worst = max(worst, float((e - a).abs().max()) / max(1.0, float(e.abs().max())))
    return worst


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without the tracer's and TorchScript's deprecation warnings (one per traced op)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_torchscript(item: Exportable, out: str | os.PathLike) -> Callable[..., Any]:
    """Trace ``item.module`` and save it atomically to ``out``; returns the loaded traced module."""
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(item.module, item.inputs, check_trace=False)
        atomic_write(out, lambda f: torch.jit.save(traced, f))
        return torch.jit.load(str(out), map_location=item.inputs[0].device)


class FixedAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two matrix products, which ONNX exports for any sizes.

    PyTorch's ONNX exporter supports adaptive pooling only when the output size divides the input
    size (UperNet's pyramid pooling pools to 1, 2, 3 and 6 bins). Bin i of n over a length L
    averages ``floor(i L / n) .. ceil((i + 1) L / n)``, as PyTorch does; the matrices are
    constants at a fixed input size.
    """

    def __init__(self, output_size: int | tuple[int | None, int | None]):
        super().__init__()
        self.output_size = output_size if isinstance(output_size, tuple) else (output_size, output_size)

    @staticmethod
    def _bins(length: int, bins: int, like: torch.Tensor) -> torch.Tensor:
        matrix = torch.zeros(bins, length, dtype=like.dtype, device=like.device)
        for i in range(bins):
            start, end = (i * length) // bins, -(-((i + 1) * length) // bins)
            matrix[i, start:end] = 1.0 / (end - start)
        return matrix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, out_h, out_w)."""
        height, width = int(x.shape[-2]), int(x.shape[-1])
        out_h, out_w = (size or full for size, full in zip(self.output_size, (height, width)))
        rows, cols = self._bins(height, out_h, x), self._bins(width, out_w, x)
        return torch.matmul(torch.matmul(rows, x), cols.t())


def onnx_friendly(module: nn.Module) -> nn.Module:
    """``module`` itself, or a copy whose adaptive average pools are :class:`FixedAdaptiveAvgPool2d`."""
    if not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(parent, name, FixedAdaptiveAvgPool2d(child.output_size))
    return module


def require_onnx() -> None:
    """Raise a one-sentence :class:`UserError` when the ``onnx`` package is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the 'onnx' package, which is not installed; pip install onnx "
                        "(or use --format torchscript).") from None


def export_onnx(item: Exportable, out: str | os.PathLike, opset: int = 17) -> Callable[..., Any] | None:
    """Export with PyTorch's TorchScript-based ONNX exporter (needs ``onnx``, not ``onnxscript``) and
    save atomically; returns an onnxruntime runner, or None when onnxruntime is not installed."""
    require_onnx()
    outputs = _flatten(item.module(*item.inputs))
    names = [f"output{i}" for i in range(len(outputs))]
    module = onnx_friendly(item.module)

    def write(f) -> None:
        torch.onnx.export(module, item.inputs, f, input_names=item.input_names, output_names=names,
                          opset_version=opset, dynamo=False)

    with _quiet(), torch.no_grad():
        atomic_write(out, write)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {name: t.detach().cpu().numpy() for name, t in zip(item.input_names, item.inputs)}
    return lambda *_: [torch.from_numpy(o) for o in session.run(None, feeds)]


def export(item: Exportable, fmt: str, out: str | os.PathLike) -> float | None:
    """Export ``item`` as ``fmt`` to ``out`` and return the largest (relative) difference between
    the exported and the eager module on the example input; None when it cannot be run here."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt} is not supported; use one of {', '.join(FORMATS)}.")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        expected = item.module(*item.inputs)
    runner = export_torchscript(item, out) if fmt == "torchscript" else export_onnx(item, out)
    if runner is None:
        return None
    with torch.no_grad():
        return max_difference(expected, runner(*item.inputs))
