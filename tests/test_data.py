"""Built-in datasets: determinism, valid COCO json (checked by pycocotools against the rendered
instance map), ADE20K layout and label range, idempotent caching, the shape catalogue's geometry
(checked with shapely), split sizes and disjointness."""
import hashlib

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from shapely.geometry import MultiPoint
from shapely.geometry import Polygon as ShapelyPolygon
from shapely.ops import unary_union

from mae_transfer.data import (
    BUILTIN_DATASETS,
    SHAPE_CLASSES,
    ade_class_names,
    builtin_dataset,
    builtin_root,
    make_ade_semantic,
    make_coco_instances,
    shape_classes,
)
from mae_transfer.data.coco import render_coco_sample
from mae_transfer.data.geometry import convex_hull, rasterize_convex, regular_polygon, subtract_convex
from mae_transfer.data.shapes import distractor_parts


def _digest_tree(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def coco_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    json_path, image_dir = make_coco_instances(root, split="train", num_images=12,
                                               image_size=(192, 256), num_classes=3, seed=0)
    return root, json_path, image_dir


def test_same_seed_gives_identical_bytes(tmp_path):
    for name in ("a", "b", "c"):
        make_coco_instances(tmp_path / name, num_images=3, seed=0 if name != "c" else 1)
        make_ade_semantic(tmp_path / name, num_train=2, num_val=1, seed=0 if name != "c" else 1)
    a, b, c = (_digest_tree(tmp_path / n) for n in ("a", "b", "c"))
    assert a == b and len(a) == 3 + 1 + 3 + 1 + 1 + 1 + 2  # images, json, manifests, ade files
    changed = [k for k in a if not k.startswith(".") and a[k] != c.get(k)]
    assert len(changed) == len([k for k in a if not k.startswith(".")])  # another seed changes all


def test_coco_json_loads_and_masks_match_pixels(coco_split):
    _, json_path, image_dir = coco_split
    coco = COCO(str(json_path))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["house", "cross", "arrow"]
    areas, occluded = [], 0
    for index, img in enumerate(coco.loadImgs(sorted(coco.getImgIds()))):
        pixels = np.asarray(Image.open(image_dir / img["file_name"]).convert("RGB"))
        assert pixels.shape == (img["height"], img["width"], 3) == (192, 256, 3)
        # The scene behind the file, re-rendered: its instance map comes from painting the shapes'
        # full parts in order, the polygons from exact convex subtraction; they must agree.
        scene = render_coco_sample(0, "train", index, (192, 256), shape_classes(3))
        assert np.array_equal(scene.image, pixels)
        objects = [k for k, s in enumerate(scene.shapes) if s.class_index >= 0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert [a["category_id"] for a in anns] == [scene.shapes[k].class_index + 1 for k in objects]
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns])
        painted = np.stack([scene.instance_map == k + 1 for k in objects])
        assert _iou(masks.any(0), painted.any(0)) > 0.97
        # Occlusion is resolved: visible regions of different objects do not overlap.
        assert (masks.sum(0) > 1).sum() <= 0.002 * masks.any(0).sum() + 5
        for ann, mask, truth, k in zip(anns, masks, painted, objects):
            assert _iou(mask, truth) > 0.85
            assert ann["iscrowd"] == 0 and all(len(p) >= 6 and len(p) % 2 == 0
                                               for p in ann["segmentation"])
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            # (the sharp tip of a roof or an arrow may reach a little beyond the last pixel centre)
            assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2
            assert abs(xs.max() + 1 - (x + w)) <= 2 and abs(ys.max() + 1 - (y + h)) <= 2
            assert abs(mask.sum() - ann["area"]) <= 0.03 * ann["area"] + 2 * (w + h) ** 0.5 + 4
            areas.append(ann["area"])
            occluded += scene.shapes[k].visible_area < 0.98 * scene.shapes[k].area
    assert min(areas) < 32 ** 2 and max(areas) > 64 ** 2  # varied scales
    assert occluded > 0  # some objects are cut by an occluder


def test_shape_classes_are_connected_unions_of_disjoint_convex_parts():
    """Checked with shapely: parts convex and disjoint, the object in one piece; distractors convex."""
    rng = np.random.default_rng(0)
    for spec in SHAPE_CLASSES:
        for _ in range(5):
            built = spec.build(rng)
            assert len(built) >= 2 and all(sum(ShapelyPolygon(p).area for p in part) > 0.02 for part in built)
            parts = [ShapelyPolygon(p) for part in built for p in part]
            assert all(p.is_valid for p in parts)
            assert all(p.convex_hull.area == pytest.approx(p.area, rel=1e-9) for p in parts)
            union = unary_union([p.buffer(1e-7) for p in parts])
            assert union.area == pytest.approx(sum(p.area for p in parts), rel=1e-5)  # disjoint
            assert union.geom_type == "Polygon", spec.name  # connected
            assert max(map(abs, union.bounds)) <= 1.0 + 1e-6
    for _ in range(30):
        for part in distractor_parts(rng):
            shape = ShapelyPolygon(part)
            assert shape.is_valid and shape.convex_hull.area == pytest.approx(shape.area, rel=1e-9)


def test_convex_hull_matches_shapely():
    rng = np.random.default_rng(1)
    for count in (3, 5, 20):
        points = rng.uniform(-1, 1, size=(count, 2))
        hull = convex_hull(points)
        assert ShapelyPolygon(hull).area == pytest.approx(MultiPoint(points).convex_hull.area, rel=1e-12)
        assert {tuple(p) for p in hull} <= {tuple(p) for p in points}


def test_subtract_convex_matches_pixel_difference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = regular_polygon(rng.uniform(20, 44, 2), rng.uniform(8, 20), int(rng.integers(3, 33)),
                            rng.uniform(0, 6.3), rng.uniform(0.5, 1))
        b = regular_polygon(rng.uniform(20, 44, 2), rng.uniform(8, 20), int(rng.integers(3, 33)),
                            rng.uniform(0, 6.3))
        expected = rasterize_convex(a, 64, 64) & ~rasterize_convex(b, 64, 64)
        pieces = subtract_convex([a], b)
        got = np.zeros((64, 64), int)
        for piece in pieces:
            got += rasterize_convex(piece, 64, 64)
        assert got.max() <= 1  # disjoint pieces
        assert np.abs(got.astype(bool) ^ expected).sum() <= 2  # only boundary ties may differ


def test_ade_layout_and_labels(tmp_path):
    root = make_ade_semantic(tmp_path / "ade", num_train=6, num_val=3, image_size=(128, 160),
                             num_classes=5, seed=0)
    seen = set()
    for folder, count in (("training", 6), ("validation", 3)):
        images = sorted((root / "images" / folder).glob("*.jpg"))
        labels = sorted((root / "annotations" / folder).glob("*.png"))
        assert len(images) == len(labels) == count
        assert [p.stem for p in images] == [p.stem for p in labels]
        for image_path, label_path in zip(images, labels):
            image, label = Image.open(image_path), Image.open(label_path)
            assert image.mode == "RGB" and image.size == (160, 128)
            assert label.mode == "L" and label.size == (160, 128)
            values = np.asarray(label)
            assert values.max() <= 5
            seen |= set(np.unique(values).tolist())
            # Sky (1) and ground (2) are the regions above and below a horizon, not colours:
            # in every column, visible sky lies above visible ground.
            for column in values.T:
                sky_rows, ground_rows = np.nonzero(column == 1)[0], np.nonzero(column == 2)[0]
                if len(sky_rows) and len(ground_rows):
                    assert sky_rows.max() < ground_rows.min()
    assert seen == {0, 1, 2, 3, 4, 5}  # every class and the unlabelled value occur


def test_generation_is_idempotent_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MAE_TRANSFER_DATA", str(tmp_path / "cache"))
    assert builtin_root() == tmp_path / "cache"
    ds = builtin_dataset("builtin_coco_val", num_images=2)
    assert ds.json_path.is_file() and len(list(ds.image_dir.glob("*.png"))) == 2
    first = ds.json_path.stat().st_mtime_ns
    again = builtin_dataset("builtin_coco_val", num_images=2)
    assert again == ds and ds.json_path.stat().st_mtime_ns == first  # not regenerated
    other = builtin_dataset("builtin_coco_val", num_images=3)
    assert other.root != ds.root and len(list(other.image_dir.glob("*.png"))) == 3
    ade = builtin_dataset("builtin_ade", num_train=2, num_val=1)
    assert ade.class_names == ("sky", "ground", "house", "cross", "arrow", "L", "dumbbell")
    assert ade.class_names == ade_class_names(7) and ade.class_names[2:] == builtin_dataset(
        "builtin_coco_val", num_images=2).class_names  # the same objects in both layouts
    # Regenerating a directory with fewer images removes the stale ones.
    make_coco_instances(ds.root, split="val", num_images=1)
    assert len(list(ds.image_dir.glob("*.png"))) == 1
    with pytest.raises(ValueError, match="num_classes"):
        make_coco_instances(tmp_path / "bad", num_classes=99)
    with pytest.raises(KeyError, match="builtin_coco_train"):
        builtin_dataset("no_such_dataset")


def test_concurrent_generation_yields_one_complete_copy(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    make = lambda _: make_coco_instances(tmp_path / "shared", num_images=4, image_size=(64, 64))  # noqa: E731
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(make, range(3)))
    assert len(set(results)) == 1
    make_coco_instances(tmp_path / "alone", num_images=4, image_size=(64, 64))
    assert _digest_tree(tmp_path / "shared") == _digest_tree(tmp_path / "alone")


def test_builtin_splits_pool_size_and_disjointness(tmp_path):
    """The pretraining pool is >= 10x the labelled train split; pool, train and val images differ."""
    specs = {name: BUILTIN_DATASETS[name] for name in ("builtin_pretrain", "builtin_coco_train", "builtin_coco_val")}
    assert specs["builtin_pretrain"]["num_images"] >= 10 * specs["builtin_coco_train"]["num_images"]
    assert len({s["split"] for s in specs.values()}) == 3
    assert len({s["num_classes"] for s in specs.values()}) == 1
    digests = {}
    for name, count in (("builtin_pretrain", 32), ("builtin_coco_train", 8), ("builtin_coco_val", 8)):
        ds = builtin_dataset(name, root=tmp_path, num_images=count, image_size=(48, 64))
        digests[name] = {hashlib.sha256(p.read_bytes()).hexdigest() for p in ds.image_dir.glob("*.png")}
        assert len(digests[name]) == count
    assert len(set.union(*digests.values())) == sum(map(len, digests.values()))
