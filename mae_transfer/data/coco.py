"""A generated instance-segmentation dataset in COCO json format.

Layout under ``root``: ``annotations/instances_{split}.json`` and ``{split}/000000000001.png`` ...
Scenes come from :func:`~.render.render_scene`: composite shapes whose class is their arrangement of
parts (house, cross, arrow, L, dumbbell, ...), drawn with random colours and textures over a
textured background among unlabelled distractors. Annotations hold the *visible* region of each
object as polygons (its disjoint convex visible pieces: several per object, more when an occluder
cuts it), its bbox ``[x, y, w, h]``, polygon area and ``iscrowd = 0``; category ids start at 1.
Distractors are not annotated.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .cache import generation_lock, is_generated, remove_stale, write_json_atomic, write_manifest
from .geometry import polygon_area
from .render import PlacedShape, Scene, ShapeClass, render_scene, shape_classes


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Per-image generator: image i is the same whatever ``num_images`` is."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def render_coco_sample(seed: int, split: str, index: int, image_size: tuple[int, int],
                       classes: tuple[ShapeClass, ...]) -> Scene:
    """Scene of image ``index`` of ``split`` (what :func:`make_coco_instances` writes for it)."""
    return render_scene(image_rng(seed, split, index), *image_size, classes)


def _annotation(shape: PlacedShape, ann_id: int, image_id: int) -> dict[str, Any]:
    """COCO annotation of one shape's visible pieces (rounded to 0.01 px)."""
    polys = [np.round(p, 2) for p in shape.pieces]
    points = np.concatenate(polys, axis=0)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": shape.class_index + 1,
        "segmentation": [[float(v) for v in p.reshape(-1)] for p in polys],
        "area": round(float(sum(polygon_area(p) for p in polys)), 2),
        "bbox": [float(x0), float(y0), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
        "iscrowd": 0,
    }


def make_coco_instances(root: str | Path, split: str = "train", num_images: int = 8,
                        image_size: tuple[int, int] = (256, 256), num_classes: int = 3,
                        seed: int = 0) -> tuple[Path, Path]:
    """Generate (or reuse) a COCO-format instance-segmentation split.

    Args:
        root: output directory (created).
        split: split name, used in file names and mixed into the seed.
        num_images: number of images.
        image_size: (height, width) in pixels.
        num_classes: number of shape categories (1..8: house, cross, arrow, L, dumbbell, T, H, U).
        seed: base seed; same arguments give byte-identical files.
    Returns:
        (path of the annotation json, directory of the PNG images).
    """
    root = Path(root)
    height, width = image_size
    classes = shape_classes(num_classes)
    json_path = root / "annotations" / f"instances_{split}.json"
    image_dir = root / split
    params = dict(kind="coco", split=split, num_images=num_images, image_size=[height, width],
                  num_classes=num_classes, seed=seed)
    manifest = root / f".manifest_{split}.json"
    if is_generated(manifest, params) and json_path.is_file():
        return json_path, image_dir
    with generation_lock(root):
        if not (is_generated(manifest, params) and json_path.is_file()):  # maybe done meanwhile
            _generate(json_path, image_dir, split, num_images, (height, width), classes, seed)
            write_manifest(manifest, params)
    return json_path, image_dir


def _generate(json_path: Path, image_dir: Path, split: str, num_images: int,
              image_size: tuple[int, int], classes: tuple[ShapeClass, ...], seed: int) -> None:
    """Render the PNG images and write the annotation json."""
    height, width = image_size
    image_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(image_dir, "*.png", {f"{i + 1:012d}.png" for i in range(num_images)})
    images, annotations = [], []
    for index in range(num_images):
        scene = render_coco_sample(seed, split, index, (height, width), classes)
        image_id = index + 1
        file_name = f"{image_id:012d}.png"
        Image.fromarray(scene.image).save(image_dir / file_name, compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for shape in scene.shapes:
            if shape.class_index >= 0:
                annotations.append(_annotation(shape, len(annotations) + 1, image_id))
    categories = [{"id": i + 1, "name": c.name, "supercategory": "shape"}
                  for i, c in enumerate(classes)]
    info = {"description": f"mae_transfer built-in shapes ({split})", "version": "1.0"}
    write_json_atomic(json_path, {"info": info, "images": images, "annotations": annotations,
                                  "categories": categories, "licenses": []})
