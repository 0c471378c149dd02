"""Scene sampling and rendering shared by the generated COCO and ADE20K datasets.

A scene is a textured two-region background (upper / lower, split by a wavy horizon) with objects
and unlabelled distractors painted over it in a random order (later ones occlude earlier ones).
Objects are composites of convex parts whose arrangement is their class (:mod:`.shapes`); colour
and texture are drawn per object, distractor and background region from one shared distribution
(:mod:`.appearance`), so neither colour nor texture tells the class. Objects are randomly scaled
(COCO small, medium and large), rotated (up to 45 degrees) and mirrored. Every object keeps at least
``MIN_VISIBLE_FRACTION`` of its area and ``MIN_PART_VISIBLE_FRACTION`` of each part visible, so its
class stays recognisable; visible regions are exact lists of disjoint convex pieces.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .appearance import Appearance, background, finish, paint, sample_appearance
from .geometry import (
    Polygon,
    clip_to_box,
    place,
    polygon_area,
    polygon_width,
    polygon_window,
    rasterize_window,
    subtract_convex,
)
from .shapes import SHAPE_CLASSES, ShapeClass, distractor_parts, shape_classes

__all__ = ["SHAPE_CLASSES", "ShapeClass", "shape_classes", "PlacedShape", "Scene", "sample_shapes",
           "paint_shapes", "render_scene", "MIN_VISIBLE_FRACTION", "MIN_PART_VISIBLE_FRACTION"]

MIN_VISIBLE_FRACTION = 0.4  # an occluded object keeps at least this share of its area
MIN_PART_VISIBLE_FRACTION = 0.3  # ... and of each of its parts (a house keeps its roof)
SCALE_RANGE = (0.065, 0.42)  # half-size of objects and distractors, fraction of the short side
MAX_ROTATION = np.pi / 4  # objects are rotated by at most this much (distractors: any angle)
MIN_PIECE_WIDTH = 0.5  # visible slivers thinner than this (pixels) are dropped from the polygons
MIN_CONTRAST = 50.0  # mean-colour distance of a painted shape from both background regions


@dataclass
class PlacedShape:
    """An object (``class_index >= 0``) or a distractor (-1) in a scene.

    ``parts[i]`` are the disjoint convex pieces of its i-th part (clipped to the image),
    ``part_pieces[i]`` their visible convex pieces once the shapes painted later are removed
    (tracked for objects only: a distractor's stay its full parts).
    """
    class_index: int
    parts: list[list[Polygon]]
    appearance: Appearance
    part_pieces: list[list[Polygon]] = field(default_factory=list)

    @property
    def polygons(self) -> list[Polygon]:
        """All convex pieces of all parts (what is painted)."""
        return [poly for part in self.parts for poly in part]

    @property
    def pieces(self) -> list[Polygon]:
        """All visible convex pieces (the COCO polygons)."""
        return [piece for pieces in self.part_pieces for piece in pieces]

    @property
    def area(self) -> float:
        return float(sum(polygon_area(p) for p in self.polygons))

    @property
    def visible_area(self) -> float:
        return float(sum(polygon_area(p) for p in self.pieces))


@dataclass
class Scene:
    """A rendered scene: (H, W, 3) uint8 ``image``, shapes in painting order, (H, W) int32
    ``instance_map`` (k + 1 where shape k is visible, 0 = background) and (H, W) bool ``ground``."""
    image: np.ndarray
    shapes: list[PlacedShape]
    instance_map: np.ndarray
    ground: np.ndarray


def _candidate(rng: np.random.Generator, spec: ShapeClass | None, height: int,
               width: int) -> list[list[Polygon]]:
    """Parts (lists of convex pieces) of a randomly placed, scaled, rotated, mirrored object
    (``spec``) or distractor (None), clipped to the image; an object that loses more than 10% of
    its area to the image border or a part to slivers is returned empty (rejected)."""
    short = min(height, width)
    scale = float(np.exp(rng.uniform(*np.log(np.array(SCALE_RANGE) * short))))
    if spec is None:
        unit, angle = [[p] for p in distractor_parts(rng)], rng.uniform(0, 2 * np.pi)
        centre = (rng.uniform(0, width), rng.uniform(0, height))
    else:
        unit, angle = spec.build(rng), rng.uniform(-MAX_ROTATION, MAX_ROTATION)
        centre = (rng.uniform(scale, width - scale), rng.uniform(scale, height - scale))
    flip = bool(rng.uniform() < 0.5)
    parts = [place(part, centre, scale, angle, flip) for part in unit]
    clipped = [[c for c in (clip_to_box(p, width, height) for p in part)
                if len(c) >= 3 and polygon_width(c) >= MIN_PIECE_WIDTH] for part in parts]
    full_area = sum(polygon_area(p) for part in parts for p in part)
    if spec is not None and (sum(polygon_area(p) for part in clipped for p in part) < 0.9 * full_area
                             or not all(clipped)):
        return []
    return [part for part in clipped if part]


def _bounds(polys: list[Polygon]) -> tuple[np.ndarray, np.ndarray]:
    """(2,) lower and upper (x, y) corners of the bounding box of ``polys``."""
    points = np.concatenate(polys, axis=0)
    return points.min(axis=0), points.max(axis=0)


def _still_visible(shape: PlacedShape, part_pieces: list[list[Polygon]]) -> bool:
    """Whether an object with these visible pieces keeps enough of itself and of each part."""
    visible = [sum(map(polygon_area, pieces)) for pieces in part_pieces]
    full = [sum(map(polygon_area, part)) for part in shape.parts]
    return (sum(visible) >= MIN_VISIBLE_FRACTION * sum(full)
            and all(v >= MIN_PART_VISIBLE_FRACTION * f for v, f in zip(visible, full)))


def _appearance(rng: np.random.Generator, short: int, regions: list[Appearance]) -> Appearance:
    """An appearance that stands out from both background regions (the same rule for every shape)."""
    app = sample_appearance(rng, short)
    for _ in range(10):
        if all(np.linalg.norm(app.mean_colour - r.mean_colour) >= MIN_CONTRAST for r in regions):
            break
        app = sample_appearance(rng, short)
    return app


def sample_shapes(rng: np.random.Generator, height: int, width: int, classes: tuple[ShapeClass, ...],
                  regions: list[Appearance], num_objects: tuple[int, int] = (2, 5),
                  num_distractors: tuple[int, int] = (2, 5), max_tries: int = 30) -> list[PlacedShape]:
    """Objects of ``classes`` and distractors in a random painting order, with exact visible pieces.

    A shape is placed only if every object painted before it stays visible enough
    (:data:`MIN_VISIBLE_FRACTION`, :data:`MIN_PART_VISIBLE_FRACTION`); up to ``max_tries`` draws.
    """
    kinds = [True] * int(rng.integers(num_objects[0], num_objects[1] + 1)) if classes else []
    kinds = list(rng.permutation(kinds + [False] * int(rng.integers(num_distractors[0], num_distractors[1] + 1))))
    placed: list[PlacedShape] = []
    for is_object in kinds:
        for _ in range(max_tries):
            class_index = int(rng.integers(len(classes))) if is_object else -1
            parts = _candidate(rng, classes[class_index] if is_object else None, height, width)
            if not parts:
                continue
            occluders = [poly for part in parts for poly in part]
            lo, hi = _bounds(occluders)
            occluded = []
            for shape in placed:
                pieces = shape.part_pieces
                shape_lo, shape_hi = _bounds(shape.polygons)
                if shape.class_index >= 0 and np.all(shape_lo < hi) and np.all(lo < shape_hi):
                    for occluder in occluders:
                        pieces = [subtract_convex(p, occluder, min_width=MIN_PIECE_WIDTH) for p in pieces]
                occluded.append(pieces)
            if all(s.class_index < 0 or _still_visible(s, pieces) for s, pieces in zip(placed, occluded)):
                for shape, pieces in zip(placed, occluded):
                    shape.part_pieces = pieces
                app = _appearance(rng, min(height, width), regions)
                placed.append(PlacedShape(class_index, parts, app, [list(part) for part in parts]))
                break
    return placed


def paint_shapes(canvas: np.ndarray, shapes: list[PlacedShape]) -> np.ndarray:
    """Paint shapes in order onto ``canvas`` (H, W, 3) float; returns the (H, W) int32 instance map
    (0 for background, ``k + 1`` where the k-th shape is visible)."""
    height, width = canvas.shape[:2]
    instance_map = np.zeros((height, width), dtype=np.int32)
    for k, shape in enumerate(shapes):
        y0, x0, y1, x1 = window = polygon_window(shape.polygons, height, width)
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for poly in shape.polygons:
            mask |= rasterize_window(poly, window)
        paint(canvas, mask, shape.appearance, (y0, x0))
        instance_map[y0:y1, x0:x1][mask] = k + 1
    return instance_map


def render_scene(rng: np.random.Generator, height: int, width: int, classes: tuple[ShapeClass, ...],
                 num_objects: tuple[int, int] = (2, 5), num_distractors: tuple[int, int] = (2, 5)) -> Scene:
    """Sample and render one scene (background, shapes, illumination and grain) from ``rng``."""
    canvas, ground, regions = background(rng, height, width)
    shapes = sample_shapes(rng, height, width, classes, regions, num_objects, num_distractors)
    instance_map = paint_shapes(canvas, shapes)
    return Scene(finish(canvas, rng), shapes, instance_map, ground)
