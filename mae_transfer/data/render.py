"""Scene sampling and rendering shared by the generated COCO and ADE20K datasets.

A scene is a textured low-saturation background with a few strongly coloured, textured convex
shapes painted in order (later shapes occlude earlier ones). Each shape class has its own geometry,
colour and texture, so a model must learn shape *and* appearance; sizes span COCO's small, medium
and large ranges.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mae_transfer.errors import ConfigError
from .geometry import (Polygon, clip_to_box, polygon_area, rasterize_convex, regular_polygon,
                       subtract_convex)


@dataclass(frozen=True)
class ShapeClass:
    """One object category: geometry (``sides``, ``aspect``), RGB ``colour`` and ``texture``."""
    name: str
    sides: int
    colour: tuple[int, int, int]
    texture: str
    aspect: tuple[float, float] = (1.0, 1.0)


# Saturated, well separated hues; the background is near-grey, so colour alone separates
# objects from background and texture/geometry separate the classes.
SHAPE_CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("circle", 32, (220, 50, 50), "stripes"),
    ShapeClass("square", 4, (50, 170, 60), "checker"),
    ShapeClass("triangle", 3, (50, 90, 225), "dots"),
    ShapeClass("hexagon", 6, (230, 190, 30), "hstripes"),
    ShapeClass("ellipse", 32, (200, 60, 200), "grid", aspect=(0.45, 0.65)),
    ShapeClass("rectangle", 4, (30, 190, 200), "noise", aspect=(0.35, 0.55)),
    ShapeClass("pentagon", 5, (240, 120, 30), "rings"),
    ShapeClass("diamond", 4, (120, 60, 190), "stripes", aspect=(0.5, 0.6)),
)

MIN_VISIBLE_FRACTION = 0.4  # an occluded shape keeps at least this share of its area


@dataclass
class PlacedShape:
    """A shape in a scene: its class index, full polygon and visible convex pieces."""
    class_index: int
    polygon: Polygon
    pieces: list[Polygon] = field(default_factory=list)
    texture_seed: int = 0

    @property
    def visible_area(self) -> float:
        return float(sum(polygon_area(p) for p in self.pieces))


def shape_classes(num_classes: int) -> tuple[ShapeClass, ...]:
    """The first ``num_classes`` shape categories; raises a clear error when too many are asked."""
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ConfigError(f"num_classes={num_classes} is out of range: the built-in data has "
                          f"1..{len(SHAPE_CLASSES)} shape classes; pass a value in that range.")
    return SHAPE_CLASSES[:num_classes]


def _random_polygon(rng: np.random.Generator, spec: ShapeClass, height: int, width: int) -> Polygon:
    """A randomly placed, scaled and rotated polygon of class ``spec``, clipped to the image."""
    short = min(height, width)
    radius = float(np.exp(rng.uniform(np.log(0.05 * short), np.log(0.3 * short))))
    cx = rng.uniform(0.4 * radius, width - 0.4 * radius)
    cy = rng.uniform(0.4 * radius, height - 0.4 * radius)
    aspect = rng.uniform(*spec.aspect)
    poly = regular_polygon((cx, cy), radius, spec.sides, rng.uniform(0, 2 * np.pi), aspect)
    return clip_to_box(poly, width, height)


def sample_shapes(rng: np.random.Generator, height: int, width: int, classes: tuple[ShapeClass, ...],
                  num_objects: tuple[int, int] = (2, 6), max_tries: int = 30) -> list[PlacedShape]:
    """Sample shapes painted in order; each keeps >= ``MIN_VISIBLE_FRACTION`` of its area visible.

    Returns the shapes in painting order with their exact visible pieces (later shapes removed).
    """
    target = int(rng.integers(num_objects[0], num_objects[1] + 1))
    placed: list[PlacedShape] = []
    for _ in range(target):
        for _ in range(max_tries):
            class_index = int(rng.integers(len(classes)))
            poly = _random_polygon(rng, classes[class_index], height, width)
            full_area = polygon_area(poly)
            if len(poly) < 3 or full_area < 0.25 * (0.05 * min(height, width)) ** 2:
                continue
            occluded = [subtract_convex(s.pieces, poly) for s in placed]
            if all(sum(map(polygon_area, pieces)) >= MIN_VISIBLE_FRACTION * polygon_area(s.polygon)
                   for s, pieces in zip(placed, occluded)):
                for shape, pieces in zip(placed, occluded):
                    shape.pieces = pieces
                placed.append(PlacedShape(class_index, poly, [poly], int(rng.integers(2**31))))
                break
    return placed


def texture_modulation(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness modulation in [0.55, 1.0], shape (height, width), for a texture ``kind``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(5.0, 10.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "stripes":
        wave = np.sin((xs + ys) * (2 * np.pi / period) + phase)
    elif kind == "hstripes":
        wave = np.sin(ys * (2 * np.pi / period) + phase)
    elif kind == "checker":
        cell = max(int(period), 3)
        wave = np.where(((xs // cell) + (ys // cell)) % 2 == 0, 1.0, -1.0)
    elif kind == "dots":
        wave = np.cos(xs * (2 * np.pi / period) + phase) * np.cos(ys * (2 * np.pi / period))
        wave = np.where(wave > 0.4, -1.0, 1.0)
    elif kind == "grid":
        cell = max(int(period), 4)
        wave = np.where((xs % cell < 2) | (ys % cell < 2), -1.0, 1.0)
    elif kind == "rings":
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        wave = np.sin(np.hypot(xs - cx, ys - cy) * (2 * np.pi / period) + phase)
    elif kind == "noise":
        wave = rng.uniform(-1.0, 1.0, size=(height, width))
    else:
        raise ValueError(f"unknown texture {kind!r}")
    return (0.775 + 0.225 * wave).astype(np.float32)


def grey_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width, 3) float32 near-grey background: a gradient, blobs and grain, tint <= 12."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(80, 170)
    gx, gy = rng.uniform(-40, 40, size=2)
    level = base + gx * (xs / width - 0.5) + gy * (ys / height - 0.5)
    for _ in range(3):
        cx, cy, s = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.1, 0.3) * width
        level += rng.uniform(-25, 25) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s * s))
    level += rng.normal(0, 5, size=(height, width))
    tint = rng.uniform(-6, 6, size=3)
    return level[..., None] + tint[None, None, :]


def paint_shapes(canvas: np.ndarray, shapes: list[PlacedShape],
                 classes: tuple[ShapeClass, ...]) -> np.ndarray:
    """Paint shapes in order onto ``canvas`` (H, W, 3) float; returns the (H, W) int instance map.

    The instance map holds 0 for background and ``k + 1`` for the k-th shape's visible pixels.
    """
    height, width = canvas.shape[:2]
    instance_map = np.zeros((height, width), dtype=np.int32)
    for k, shape in enumerate(shapes):
        spec = classes[shape.class_index]
        mask = rasterize_convex(shape.polygon, height, width)
        shade_rng = np.random.default_rng(shape.texture_seed)
        modulation = texture_modulation(spec.texture, height, width, shade_rng)
        colour = np.clip(np.array(spec.colour) + shade_rng.uniform(-15, 15, size=3), 0, 255)
        canvas[mask] = modulation[mask][:, None] * colour[None, :]
        instance_map[mask] = k + 1
    return instance_map


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """Round and clip a float image to uint8."""
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
