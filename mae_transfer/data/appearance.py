"""Colours and textures of the generated images: ONE distribution for every object, distractor and
background region, so that appearance says nothing about the class.

An :class:`Appearance` is two colours (random hue, saturation and brightness; the second either
another random colour or a darker shade of the first) mixed by a texture pattern of a random kind,
scale, orientation and phase. Patterns are evaluated in image coordinates, so the parts of one
object continue each other's texture.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

TEXTURES = ("flat", "stripes", "checker", "dots", "grid", "rings", "noise", "blotches")
PERIOD_RANGE = (0.012, 0.07)  # texture period, as a fraction of the image's short side


@dataclass(frozen=True)
class Appearance:
    """How to paint a region: ``colour`` / ``colour2`` (RGB floats 0..255) mixed by ``texture``."""
    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]
    texture: str
    period: float
    angle: float
    phase: float
    hard: bool
    seed: int

    @property
    def mean_colour(self) -> np.ndarray:
        """(3,) rough mean colour (the average of the two colours, or the colour when flat)."""
        if self.texture == "flat":
            return np.asarray(self.colour)
        return 0.5 * (np.asarray(self.colour) + np.asarray(self.colour2))


def random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    """RGB (0..255) from a uniform hue, saturation in [0, 1] (skewed high) and value in [0.15, 1]."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 1) ** 0.7, rng.uniform(0.15, 1.0))
    return tuple(255.0 * c for c in rgb)


def sample_appearance(rng: np.random.Generator, short_side: int) -> Appearance:
    """A random appearance; textures scale with ``short_side`` (pixels)."""
    colour = random_colour(rng)
    colour2 = random_colour(rng) if rng.uniform() < 0.5 else tuple(c * rng.uniform(0.35, 0.75) for c in colour)
    period = short_side * float(np.exp(rng.uniform(*np.log(PERIOD_RANGE))))
    return Appearance(colour, colour2, TEXTURES[int(rng.integers(len(TEXTURES)))], max(period, 2.5),
                      rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi), bool(rng.uniform() < 0.5),
                      int(rng.integers(2**31)))


def _blotches(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [0, 1]: a random lattice with spacing ``cell`` px, bilinearly interpolated."""
    height, width = shape
    lattice = rng.uniform(0, 1, size=(int(height / cell) + 2, int(width / cell) + 2))
    y, x = np.arange(height) / cell, np.arange(width) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = lattice[y0][:, x0] * (1 - fx) + lattice[y0][:, x0 + 1] * fx
    bottom = lattice[y0 + 1][:, x0] * (1 - fx) + lattice[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def texture_weight(app: Appearance, y0: int, x0: int, height: int, width: int) -> np.ndarray:
    """(height, width) weight in [0, 1] of ``colour2`` over the window at row ``y0``, column ``x0``."""
    if app.texture == "flat":
        return np.zeros((height, width), np.float32)
    rng = np.random.default_rng(app.seed)
    if app.texture == "noise":
        return rng.uniform(0, 1, size=(height, width)).astype(np.float32)
    if app.texture == "blotches":
        return _blotches((height, width), 2 * app.period, rng).astype(np.float32)
    ys = np.arange(y0, y0 + height, dtype=np.float32)[:, None] + np.float32(0.5)
    xs = np.arange(x0, x0 + width, dtype=np.float32)[None, :] + np.float32(0.5)
    c, s = np.float32(np.cos(app.angle) / app.period), np.float32(np.sin(app.angle) / app.period)
    u, v = c * xs + s * ys, c * ys - s * xs
    if app.texture == "stripes":
        wave = np.sin(2 * np.pi * u + app.phase)
    elif app.texture == "checker":
        wave = np.where((np.floor(u) + np.floor(v)) % 2 == 0, 1.0, -1.0)
    elif app.texture == "dots":
        wave = np.where(np.cos(2 * np.pi * u) * np.cos(2 * np.pi * v) > 0.4, 1.0, -1.0)
    elif app.texture == "grid":
        wave = np.where((u % 1.0 < 0.25) | (v % 1.0 < 0.25), 1.0, -1.0)
    elif app.texture == "rings":
        centre = rng.uniform(-4, 4, size=2)
        wave = np.sin(2 * np.pi * np.hypot(u - u.mean() - centre[0], v - v.mean() - centre[1]) + app.phase)
    else:
        raise ValueError(f"unknown texture {app.texture!r}")
    wave = np.sign(wave) if app.hard else wave
    return (0.5 + 0.5 * wave).astype(np.float32)


def paint(canvas: np.ndarray, mask: np.ndarray, app: Appearance, origin: tuple[int, int] = (0, 0)) -> None:
    """Paint ``app`` in place on ``canvas`` (H, W, 3) float where ``mask`` (h, w) is set; the mask
    covers the window of ``canvas`` whose top-left pixel is ``origin`` = (row, column)."""
    y0, x0 = origin
    height, width = mask.shape
    if not mask.any():
        return
    weight = texture_weight(app, y0, x0, height, width)[..., None]
    c1, c2 = np.asarray(app.colour, np.float32), np.asarray(app.colour2, np.float32)
    np.copyto(canvas[y0:y0 + height, x0:x0 + width], c1 + weight * (c2 - c1), where=mask[..., None])


def horizon_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of the lower region ("ground") under a random wavy horizon."""
    xs = np.arange(width, dtype=np.float32) + 0.5
    horizon = height * rng.uniform(0.3, 0.65) + height * rng.uniform(0.0, 0.08) * np.sin(
        xs * (2 * np.pi / (width * rng.uniform(0.3, 1.2))) + rng.uniform(0, 2 * np.pi))
    return (np.arange(height, dtype=np.float32)[:, None] + 0.5) >= horizon[None, :]


def background(rng: np.random.Generator, height: int, width: int,
               min_distance: float = 60.0) -> tuple[np.ndarray, np.ndarray, list[Appearance]]:
    """A textured two-region background: (H, W, 3) float canvas, (H, W) bool lower-region mask and
    the two regions' appearances (the two differ in mean colour by at least ``min_distance``)."""
    ground = horizon_mask(rng, height, width)
    upper = sample_appearance(rng, min(height, width))
    lower = sample_appearance(rng, min(height, width))
    for _ in range(10):
        if np.linalg.norm(upper.mean_colour - lower.mean_colour) >= min_distance:
            break
        lower = sample_appearance(rng, min(height, width))
    canvas = np.zeros((height, width, 3), np.float32)
    sky_end = int(np.nonzero(~ground.all(axis=1))[0].max(initial=-1)) + 1  # rows [0, sky_end) hold sky
    ground_start = int(np.argmax(ground.any(axis=1))) if ground.any() else height
    paint(canvas, ~ground[:sky_end], upper)
    paint(canvas, ground[ground_start:], lower, (ground_start, 0))
    return canvas, ground, [upper, lower]


def finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random linear illumination gradient and sensor grain, rounded to (H, W, 3) uint8."""
    height, width = canvas.shape[:2]
    gy, gx = rng.uniform(-0.15, 0.15, size=2)
    light = 1.0 + gx * (np.arange(width) / width - 0.5)[None, :] + gy * (np.arange(height) / height - 0.5)[:, None]
    grain = rng.standard_normal(size=(height, width, 1), dtype=np.float32) * np.float32(rng.uniform(1, 4))
    noisy = canvas * light[..., None].astype(np.float32) + (grain + np.float32(0.5))
    return np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)  # + 0.5 then truncation: rounding
