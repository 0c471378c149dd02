"""Pictures of predictions: Detectron2's Visualizer for detections, colour map + legend for segmentation."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .det import DetectionResult
from .seg import SegmentationResult

SEG_ALPHA = 0.5  # weight of the colour map over the image


def draw_detections(image: np.ndarray, result: DetectionResult) -> Image.Image:
    """(H, W, 3) uint8 RGB + detections -> the image with masks, boxes, class names and scores."""
    from detectron2.data.catalog import Metadata
    from detectron2.utils.visualizer import Visualizer

    metadata = Metadata(name="mae_transfer_predict", thing_classes=list(result.class_names))
    drawn = Visualizer(image, metadata=metadata).draw_instance_predictions(result.instances)
    return Image.fromarray(drawn.get_image())


def colour_map(result: SegmentationResult) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 colours of the result's palette."""
    palette = np.asarray(result.palette, dtype=np.uint8).reshape(-1, 3)
    return palette[np.clip(result.label_map, 0, len(palette) - 1)]


def draw_segmentation(image: np.ndarray, result: SegmentationResult) -> Image.Image:
    """The image under its colour map, and beside it a legend of the classes present (with their
    share of the pixels, largest first)."""
    blended = (image.astype(np.float32) * (1 - SEG_ALPHA) + colour_map(result) * SEG_ALPHA).astype(np.uint8)
    ids, counts = np.unique(result.label_map, return_counts=True)
    order = np.argsort(-counts)
    font = ImageFont.load_default()
    row, swatch, pad = 16, 12, 6
    entries = [(int(ids[i]), 100.0 * counts[i] / result.label_map.size) for i in order]
    labels = [f"{result.class_names[c] if c < len(result.class_names) else c} ({share:.1f}%)" for c, share in entries]
    text_width = max((int(font.getlength(label)) for label in labels), default=0)
    height, width = image.shape[:2]
    legend_width = pad * 3 + swatch + text_width
    canvas = Image.new("RGB", (width + legend_width, max(height, pad * 2 + row * len(entries))), "white")
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, ((class_id, _), label) in enumerate(zip(entries, labels)):
        top = pad + k * row
        colour = tuple(result.palette[class_id]) if class_id < len(result.palette) else (0, 0, 0)
        draw.rectangle([width + pad, top, width + pad + swatch, top + swatch], fill=colour, outline="black")
        draw.text((width + 2 * pad + swatch, top), label, fill="black", font=font)
    return canvas
