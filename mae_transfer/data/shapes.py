"""Object classes and unlabelled distractors of the generated datasets, defined by geometry only.

Every object class is a composite of a few convex parts in a class-specific arrangement (a house is
a box under a triangular roof, a cross two crossing bars, ...), built in a unit frame (extent about
``[-1, 1]^2``, y pointing down) with per-instance jitter of the proportions. The parts of one object
are disjoint and touch along edges; each part is a list of convex pieces (one when built, more once
an occluder cuts it), so the visible region of an object is a union of disjoint convex pieces.
No class has its own colour or texture: appearance is drawn per instance from one distribution
shared by all classes, distractors and backgrounds (:mod:`.appearance`).

Distractors are shapes that are no class (irregular convex blobs, ellipses, single bars and
triangles, pairs of overlapping blobs): they look like single object parts and share the objects'
appearance distribution, so telling an object from clutter takes its arrangement of parts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mae_transfer.errors import ConfigError

from .geometry import Polygon, box_polygon, convex_hull, polygon_area, regular_polygon, subtract_convex

Part = list[Polygon]  # one part of an object: disjoint convex pieces (one when built, more once occluded)
PartsBuilder = Callable[[np.random.Generator], list[Part]]


@dataclass(frozen=True)
class ShapeClass:
    """One object category: a ``name`` and ``build(rng)``, its parts in the unit frame (each part a
    list of convex pieces; all pieces of all parts disjoint)."""
    name: str
    build: PartsBuilder


def _house(rng: np.random.Generator) -> list[Part]:
    """A box with a triangular roof on top (the roof may overhang the walls)."""
    half, eaves, wall_top = rng.uniform(0.5, 0.75), rng.uniform(0.0, 0.2), rng.uniform(-0.3, -0.05)
    roof = np.array([[-half - eaves, wall_top], [half + eaves, wall_top], [0.0, -1.0]])
    return [[box_polygon(-half, wall_top, half, 1.0)], [roof]]


def _cross(rng: np.random.Generator) -> list[Part]:
    """Two bars crossing at right angles (the crossbar may sit above the middle)."""
    thick, arm, level = rng.uniform(0.14, 0.24), rng.uniform(0.7, 1.0), rng.uniform(-0.25, 0.0)
    crossbar = box_polygon(-arm, level - thick, arm, level + thick)
    top, bottom = box_polygon(-thick, -1.0, thick, level - thick), box_polygon(-thick, level + thick, thick, 1.0)
    return [[crossbar], [top], [bottom]]


def _arrow(rng: np.random.Generator) -> list[Part]:
    """A shaft ending in a triangular head."""
    thick, neck, head = rng.uniform(0.1, 0.2), rng.uniform(0.0, 0.35), rng.uniform(0.45, 0.7)
    return [[box_polygon(-1.0, -thick, neck, thick)], [np.array([[neck, -head], [1.0, 0.0], [neck, head]])]]


def _ell(rng: np.random.Generator) -> list[Part]:
    """An upright bar with a foot to one side at the bottom."""
    thick, half = rng.uniform(0.16, 0.28), rng.uniform(0.55, 0.8)
    upright = box_polygon(-half, -1.0, -half + 2 * thick, 1.0)
    return [[upright], [box_polygon(-half + 2 * thick, 1.0 - 2 * thick, half, 1.0)]]


def _dumbbell(rng: np.random.Generator) -> list[Part]:
    """Two discs (decagons) joined by a bar that meets a flat edge of each."""
    radius = rng.uniform(0.3, 0.4)
    thick, reach = radius * rng.uniform(0.22, 0.3), radius * (1 + np.cos(np.pi / 10))  # bar end: the edge
    left = regular_polygon((-1.0 + radius, 0.0), radius, 10, np.pi / 10)
    right = regular_polygon((1.0 - radius, 0.0), radius, 10, np.pi / 10)
    return [[left], [right], [box_polygon(-1.0 + reach, -thick, 1.0 - reach, thick)]]


def _tee(rng: np.random.Generator) -> list[Part]:
    """A bar across the top with a stem down from its middle."""
    thick, arm = rng.uniform(0.15, 0.26), rng.uniform(0.7, 1.0)
    return [[box_polygon(-arm, -1.0, arm, -1.0 + 2 * thick)], [box_polygon(-thick, -1.0 + 2 * thick, thick, 1.0)]]


def _aitch(rng: np.random.Generator) -> list[Part]:
    """Two upright bars joined by a crossbar near the middle."""
    thick, half, level = rng.uniform(0.14, 0.24), rng.uniform(0.6, 0.85), rng.uniform(-0.15, 0.15)
    return [[box_polygon(-half, -1.0, -half + 2 * thick, 1.0)], [box_polygon(half - 2 * thick, -1.0, half, 1.0)],
            [box_polygon(-half + 2 * thick, level - thick, half - 2 * thick, level + thick)]]


def _you(rng: np.random.Generator) -> list[Part]:
    """Two upright bars joined at the bottom."""
    thick, half = rng.uniform(0.14, 0.24), rng.uniform(0.6, 0.85)
    return [[box_polygon(-half, -1.0, -half + 2 * thick, 1.0)], [box_polygon(half - 2 * thick, -1.0, half, 1.0)],
            [box_polygon(-half + 2 * thick, 1.0 - 2 * thick, half - 2 * thick, 1.0)]]


# Built-in datasets use the first five; benchmarks may ask for up to all eight.
SHAPE_CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("house", _house),
    ShapeClass("cross", _cross),
    ShapeClass("arrow", _arrow),
    ShapeClass("L", _ell),
    ShapeClass("dumbbell", _dumbbell),
    ShapeClass("T", _tee),
    ShapeClass("H", _aitch),
    ShapeClass("U", _you),
)


def shape_classes(num_classes: int) -> tuple[ShapeClass, ...]:
    """The first ``num_classes`` object categories; raises a clear error when too many are asked."""
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ConfigError(f"num_classes={num_classes} is out of range: the built-in data has "
                          f"1..{len(SHAPE_CLASSES)} shape classes; pass a value in that range.")
    return SHAPE_CLASSES[:num_classes]


def _blob(rng: np.random.Generator, center: tuple[float, float] = (0.0, 0.0), size: float = 1.0) -> Polygon:
    """Convex hull of 5-10 points on a jittered ellipse: an irregular convex polygon."""
    for _ in range(10):
        count = int(rng.integers(5, 11))
        theta = np.sort(rng.uniform(0, 2 * np.pi, count))
        radius = size * rng.uniform(0.6, 1.0, count)
        aspect = rng.uniform(0.4, 1.0)
        points = np.stack([radius * np.cos(theta), aspect * radius * np.sin(theta)], axis=1) + center
        hull = convex_hull(points)
        if len(hull) >= 3 and polygon_area(hull) > 0.4 * size * size:
            return hull
    return regular_polygon(center, size, 6, 0.0)


def distractor_parts(rng: np.random.Generator) -> list[Polygon]:
    """The convex parts of one random distractor in the unit frame (not any :data:`SHAPE_CLASSES`)."""
    kind = int(rng.integers(5))
    if kind == 0:
        return [_blob(rng)]
    if kind == 1:
        return [regular_polygon((0.0, 0.0), 1.0, 20, 0.0, rng.uniform(0.3, 1.0))]
    if kind == 2:
        thick = rng.uniform(0.1, 0.35)
        return [box_polygon(-1.0, -thick, 1.0, thick)]
    if kind == 3:
        for _ in range(10):
            triangle = convex_hull(rng.uniform(-1.0, 1.0, size=(3, 2)))
            if len(triangle) == 3 and polygon_area(triangle) > 0.4:
                return [triangle]
        return [regular_polygon((0.0, 0.0), 1.0, 3, 0.0)]
    first = _blob(rng, (-0.4, 0.0), 0.55)  # two blobs, the second cut where they overlap
    return [first, *subtract_convex([_blob(rng, (0.45, rng.uniform(-0.4, 0.4)), 0.5)], first, min_area=1e-9)]
