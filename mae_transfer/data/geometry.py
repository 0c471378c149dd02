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


def polygon_area(poly: Polygon) -> float:
    """Unsigned shoelace area of a simple polygon (K, 2)."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _orientation(poly: Polygon) -> float:
    """+1 when the signed area is positive, -1 otherwise."""
    x, y = poly[:, 0], poly[:, 1]
    return 1.0 if float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) >= 0 else -1.0


def _edge_halfplanes(poly: Polygon) -> list[tuple[np.ndarray, float]]:
    """Inward half-planes ``n . p + c >= 0`` of a convex polygon, one per edge."""
    sign = _orientation(poly)
    planes = []
    for a, b in zip(poly, np.roll(poly, -1, axis=0)):
        d = b - a
        normal = sign * np.array([-d[1], d[0]])
        planes.append((normal, -float(normal @ a)))
    return planes


def clip_halfplane(poly: Polygon, normal: np.ndarray, offset: float) -> Polygon:
    """Sutherland-Hodgman: the part of ``poly`` where ``normal . p + offset >= 0``."""
    if len(poly) == 0:
        return poly
    values = poly @ normal + offset
    out = []
    for i in range(len(poly)):
        p, q = poly[i], poly[(i + 1) % len(poly)]
        vp, vq = values[i], values[(i + 1) % len(poly)]
        if vp >= 0:
            out.append(p)
        if (vp >= 0) != (vq >= 0):
            t = vp / (vp - vq)
            out.append(p + t * (q - p))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def clip_to_box(poly: Polygon, width: float, height: float) -> Polygon:
    """The part of ``poly`` inside ``[0, width] x [0, height]``."""
    for normal, offset in (((1, 0), 0.0), ((-1, 0), width), ((0, 1), 0.0), ((0, -1), height)):
        poly = clip_halfplane(poly, np.array(normal, dtype=np.float64), offset)
    return poly


def subtract_convex(pieces: list[Polygon], occluder: Polygon,
                    min_area: float = 0.25) -> list[Polygon]:
    """Convex pieces minus a convex occluder, as disjoint convex pieces.

    Piece minus occluder = union over the occluder's edges e_i of
    (piece, outside e_i, inside e_0..e_{i-1}); those parts are convex and disjoint.
    Pieces smaller than ``min_area`` square pixels are dropped.
    """
    planes = _edge_halfplanes(occluder)
    lo, hi = occluder.min(axis=0), occluder.max(axis=0)
    result = []
    for piece in pieces:
        if np.any(piece.max(axis=0) <= lo) or np.any(piece.min(axis=0) >= hi):
            result.append(piece)  # bounding boxes do not overlap
            continue
        inside = piece
        for normal, offset in planes:
            outside_part = clip_halfplane(inside, -normal, -offset)
            if len(outside_part) >= 3 and polygon_area(outside_part) >= min_area:
                result.append(outside_part)
            inside = clip_halfplane(inside, normal, offset)
            if len(inside) < 3:
                break
    return result


def rasterize_convex(poly: Polygon, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of the pixels whose centre lies inside a convex polygon."""
    mask = np.zeros((height, width), dtype=bool)
    if len(poly) < 3 or polygon_area(poly) < _EPS:
        return mask
    x0, y0 = np.floor(poly.min(axis=0)).astype(int)
    x1, y1 = np.ceil(poly.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x0 >= x1 or y0 >= y1:
        return mask
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    inside = np.ones(ys.shape, dtype=bool)
    for normal, offset in _edge_halfplanes(poly):
        inside &= normal[0] * xs + normal[1] * ys + offset >= 0
    mask[y0:y1, x0:x1] = inside
    return mask
