"""Convex-polygon helpers for the generated datasets (pure numpy).

Every shape is a convex polygon in continuous pixel coordinates: pixel ``(row i, col j)`` covers
``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``, the COCO convention. Occlusion is
exact: the visible part of a shape is the shape minus every later shape, computed as a list of
disjoint convex pieces, so the COCO polygons and the rendered pixels describe the same region.
"""
from __future__ import annotations

import numpy as np

Polygon = np.ndarray  # (K, 2) float64 array of (x, y) vertices, counter-clockwise in image coords

_EPS = 1e-9


def regular_polygon(center: tuple[float, float], radius: float, sides: int, angle: float,
                    aspect: float = 1.0) -> Polygon:
    """Vertices of a regular ``sides``-gon (an ellipse when ``sides`` is large).

    Args:
        center: (x, y) centre.
        radius: circumradius along the first axis.
        sides: number of vertices (>= 3).
        angle: rotation in radians.
        aspect: second axis = ``radius * aspect`` (1.0 = regular).
    Returns:
        (sides, 2) vertices in a consistent orientation.
    """
    theta = np.arange(sides) * (2 * np.pi / sides)
    local = np.stack([radius * np.cos(theta), radius * aspect * np.sin(theta)], axis=1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return local @ rot.T + np.asarray(center, dtype=np.float64)


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    """(4, 2) vertices of the axis-aligned rectangle ``[x0, x1] x [y0, y1]``."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def convex_hull(points: np.ndarray) -> Polygon:
    """Convex hull (Andrew's monotone chain) of (N, 2) points, as a (K, 2) polygon."""
    pts = sorted(set(map(tuple, np.asarray(points, dtype=np.float64))))
    if len(pts) < 3:
        return np.array(pts, dtype=np.float64).reshape(-1, 2)

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    chains = []
    for seq in (pts, pts[::-1]):
        chain: list[tuple] = []
        for p in seq:
            while len(chain) >= 2 and cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        chains.append(chain[:-1])
    return np.array(chains[0] + chains[1], dtype=np.float64)


def place(parts: list[Polygon], center: tuple[float, float], scale: float, angle: float,
          flip: bool = False) -> list[Polygon]:
    """Map polygons from a unit frame to the image: mirror x (``flip``), scale, rotate, translate."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mirror = np.array([-1.0 if flip else 1.0, 1.0])
    return [(p * mirror * scale) @ rot.T + np.asarray(center, dtype=np.float64) for p in parts]


def _signed_area2(poly: Polygon) -> float:
    """Twice the signed shoelace area of a (K, 2) polygon."""
    x, y = poly[:, 0], poly[:, 1]
    return float(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0])


def polygon_area(poly: Polygon) -> float:
    """Unsigned shoelace area of a simple polygon (K, 2)."""
    if len(poly) < 3:
        return 0.0
    return 0.5 * abs(_signed_area2(poly))


def _edge_halfplanes(poly: Polygon) -> list[tuple[np.ndarray, float]]:
    """Inward half-planes ``n . p + c >= 0`` of a convex polygon, one per edge."""
    sign = 1.0 if _signed_area2(poly) >= 0 else -1.0
    d = np.concatenate([poly[1:], poly[:1]]) - poly
    normals = sign * np.stack([-d[:, 1], d[:, 0]], axis=1)
    offsets = -(normals * poly).sum(axis=1)
    return list(zip(normals, offsets.tolist()))


def clip_halfplane(poly: Polygon, normal: np.ndarray, offset: float) -> Polygon:
    """Sutherland-Hodgman: the part of ``poly`` where ``normal . p + offset >= 0``."""
    if len(poly) == 0:
        return poly
    values = poly @ normal + offset
    inside = values >= 0
    if inside.all():
        return poly
    if not inside.any():
        return np.zeros((0, 2), dtype=np.float64)
    following = np.concatenate([poly[1:], poly[:1]])
    next_values = np.concatenate([values[1:], values[:1]])
    crossing = inside != np.concatenate([inside[1:], inside[:1]])
    t = np.where(crossing, values / np.where(crossing, values - next_values, 1.0), 0.0)
    candidates = np.stack([poly, poly + t[:, None] * (following - poly)], axis=1).reshape(-1, 2)
    return candidates[np.stack([inside, crossing], axis=1).reshape(-1)]


def clip_to_box(poly: Polygon, width: float, height: float) -> Polygon:
    """The part of ``poly`` inside ``[0, width] x [0, height]``."""
    for normal, offset in (((1, 0), 0.0), ((-1, 0), width), ((0, 1), 0.0), ((0, -1), height)):
        poly = clip_halfplane(poly, np.array(normal, dtype=np.float64), offset)
    return poly


def polygon_width(poly: Polygon) -> float:
    """Mean width 2 * area / perimeter of a convex polygon (about w for a long w-wide sliver)."""
    if len(poly) < 3:
        return 0.0
    perimeter = float(np.linalg.norm(np.concatenate([poly[1:], poly[:1]]) - poly, axis=1).sum())
    return 2 * polygon_area(poly) / max(perimeter, _EPS)


def subtract_convex(pieces: list[Polygon], occluder: Polygon, min_area: float = 0.25,
                    min_width: float = 0.0) -> list[Polygon]:
    """Convex pieces minus a convex occluder, as disjoint convex pieces.

    Piece minus occluder = union over the occluder's edges e_i of
    (piece, outside e_i, inside e_0..e_{i-1}); those parts are convex and disjoint.
    New pieces smaller than ``min_area`` square pixels or thinner than ``min_width`` pixels
    (:func:`polygon_width`, slivers that cover next to no pixel centre) are dropped.
    """
    lo, hi = occluder.min(axis=0), occluder.max(axis=0)
    result, planes = [], None
    for piece in pieces:
        if np.any(piece.max(axis=0) <= lo) or np.any(piece.min(axis=0) >= hi):
            result.append(piece)  # bounding boxes do not overlap
            continue
        planes = planes or _edge_halfplanes(occluder)
        inside = piece
        for normal, offset in planes:
            outside_part = clip_halfplane(inside, -normal, -offset)
            if (len(outside_part) >= 3 and polygon_area(outside_part) >= min_area
                    and (min_width <= 0 or polygon_width(outside_part) >= min_width)):
                result.append(outside_part)
            inside = clip_halfplane(inside, normal, offset)
            if len(inside) < 3:
                break
    return result


def rasterize_convex(poly: Polygon, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of the pixels whose centre lies inside a convex polygon."""
    return rasterize_window(poly, (0, 0, height, width))


def polygon_window(polys: list[Polygon], height: int, width: int) -> tuple[int, int, int, int]:
    """Pixel window ``(y0, x0, y1, x1)`` covering ``polys`` inside a (height, width) image."""
    points = np.concatenate(polys, axis=0)
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    return max(y0, 0), max(x0, 0), min(max(y1, 0), height), min(max(x1, 0), width)


def rasterize_window(poly: Polygon, window: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean mask, shape (y1 - y0, x1 - x0), of the pixels of ``window = (y0, x0, y1, x1)`` whose
    centre lies inside a convex polygon."""
    wy0, wx0, wy1, wx1 = window
    mask = np.zeros((wy1 - wy0, wx1 - wx0), dtype=bool)
    if len(poly) < 3 or polygon_area(poly) < _EPS:
        return mask
    y0, x0, y1, x1 = polygon_window([poly], wy1, wx1)
    y0, x0 = max(y0, wy0), max(x0, wx0)
    if x0 >= x1 or y0 >= y1:
        return mask
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    inside = np.ones((y1 - y0, x1 - x0), dtype=bool)
    for normal, offset in _edge_halfplanes(poly):
        inside &= normal[0] * xs + normal[1] * ys + offset >= 0
    mask[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0] = inside
    return mask
