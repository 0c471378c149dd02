"""A generated semantic-segmentation dataset in the ADE20K (ADEChallengeData2016) layout.

Layout under ``root``: ``images/{training,validation}/ADE_{split}_00000001.jpg`` and
``annotations/{training,validation}/ADE_{split}_00000001.png`` (uint8). As in ADE20K, label 0 means
"unlabelled" (ignored with ``reduce_zero_label=True``) and classes are 1..num_classes: 1 = sky,
2 = ground, 3.. = shape categories (circle, square, ...). Grey clutter blobs are left unlabelled.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .cache import is_generated, remove_stale, write_manifest
from .geometry import rasterize_convex, regular_polygon
from .render import (SHAPE_CLASSES, grey_background, paint_shapes, sample_shapes, to_uint8)

STUFF_CLASSES = ("sky", "ground")
SPLITS = {"training": "train", "validation": "val"}


def ade_class_names(num_classes: int) -> tuple[str, ...]:
    """Names of labels 1..num_classes (label 0 is 'unlabelled')."""
    names = STUFF_CLASSES + tuple(c.name for c in SHAPE_CLASSES)
    if not 1 <= num_classes <= len(names):
        raise ValueError(f"num_classes={num_classes} is out of range: the built-in ADE-style data "
                         f"has 1..{len(names)} classes; pass a value in that range.")
    return names[:num_classes]


def _sky_and_ground(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) sky-over-ground canvas and (H, W) bool ground mask below a wavy horizon."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    horizon = height * rng.uniform(0.35, 0.6) + height * rng.uniform(0.02, 0.08) * np.sin(
        xs[0] * (2 * np.pi / (width * rng.uniform(0.4, 1.0))) + rng.uniform(0, 2 * np.pi))
    ground = ys >= horizon[None, :]
    t = (ys / height)[..., None]
    sky = (1 - t) * np.array([90, 150, 230]) + t * np.array([170, 210, 245])
    soil = np.array([105, 80, 55]) * (0.8 + 0.2 * rng.uniform(-1, 1, size=(height, width, 1)))
    canvas = np.where(ground[..., None], soil, sky) + rng.normal(0, 3, size=(height, width, 1))
    return canvas.astype(np.float32), ground


def _clutter(rng: np.random.Generator, canvas: np.ndarray, label: np.ndarray) -> None:
    """Paint 0-2 grey blobs in place and mark them unlabelled (0)."""
    height, width = label.shape
    grey = grey_background(rng, height, width)
    for _ in range(int(rng.integers(0, 3))):
        radius = rng.uniform(0.04, 0.1) * min(height, width)
        centre = (rng.uniform(0, width), rng.uniform(0, height))
        mask = rasterize_convex(regular_polygon(centre, radius, 12, rng.uniform(0, np.pi), 0.7),
                                height, width)
        canvas[mask] = grey[mask]
        label[mask] = 0


def render_ade_sample(rng: np.random.Generator, height: int, width: int,
                      num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) uint8 image and its (H, W) uint8 label map (0 = unlabelled)."""
    names = ade_class_names(num_classes)
    canvas, ground = _sky_and_ground(rng, height, width)
    label = np.where(ground, 2 if num_classes >= 2 else 0, 1).astype(np.uint8)
    _clutter(rng, canvas, label)
    shapes_used = SHAPE_CLASSES[:max(len(names) - len(STUFF_CLASSES), 0)]
    if shapes_used:
        shapes = sample_shapes(rng, height, width, shapes_used, num_objects=(1, 5))
        instance_map = paint_shapes(canvas, shapes, shapes_used)
        for k, shape in enumerate(shapes):
            label[instance_map == k + 1] = len(STUFF_CLASSES) + shape.class_index + 1
    return to_uint8(canvas), label


def make_ade_semantic(root: str | Path, num_train: int = 8, num_val: int = 4,
                      image_size: tuple[int, int] = (256, 256), num_classes: int = 4,
                      seed: int = 0) -> Path:
    """Generate (or reuse) an ADE20K-layout semantic segmentation dataset.

    Args:
        root: output directory, laid out like ``ADEChallengeData2016``.
        num_train / num_val: number of training / validation images.
        image_size: (height, width) in pixels.
        num_classes: labels 1..num_classes (sky, ground, circle, square, ...).
        seed: base seed; same arguments give byte-identical files.
    Returns:
        ``root``.
    """
    root = Path(root)
    height, width = image_size
    ade_class_names(num_classes)  # validate before writing anything
    params = dict(kind="ade", num_train=num_train, num_val=num_val, image_size=[height, width],
                  num_classes=num_classes, seed=seed)
    manifest = root / ".manifest.json"
    if is_generated(manifest, params):
        return root
    for folder, count in (("training", num_train), ("validation", num_val)):
        image_dir, ann_dir = root / "images" / folder, root / "annotations" / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        stems = [f"ADE_{SPLITS[folder]}_{i + 1:08d}" for i in range(count)]
        remove_stale(image_dir, "*.jpg", {s + ".jpg" for s in stems})
        remove_stale(ann_dir, "*.png", {s + ".png" for s in stems})
        for index, stem in enumerate(stems):
            rng = np.random.default_rng([seed, zlib.crc32(folder.encode()), index])
            image, label = render_ade_sample(rng, height, width, num_classes)
            Image.fromarray(image).save(image_dir / f"{stem}.jpg", quality=95)
            Image.fromarray(label).save(ann_dir / f"{stem}.png")
    write_manifest(manifest, params)
    return root
