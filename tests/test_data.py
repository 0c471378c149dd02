"""Built-in datasets: determinism, valid COCO json (checked by pycocotools against the pixels),
ADE20K layout and label range, idempotent caching."""
import hashlib

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from mae_transfer.data import builtin_dataset, builtin_root, make_ade_semantic, make_coco_instances, shape_classes
from mae_transfer.data.geometry import rasterize_convex, regular_polygon, subtract_convex


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
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["circle", "square", "triangle"]
    colours = {i + 1: np.array(c.colour, float) for i, c in enumerate(shape_classes(3))}
    areas, multi_polygon = [], 0
    for img in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(image_dir / img["file_name"]).convert("RGB")).astype(float)
        assert pixels.shape == (img["height"], img["width"], 3) == (192, 256, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        masks = np.stack([coco.annToMask(a).astype(bool) for a in anns])
        # Objects are saturated colours on a near-grey background: the union of the masks decoded
        # by pycocotools must be the saturated pixels of the image.
        saturated = pixels.max(-1) - pixels.min(-1) > 40
        assert _iou(masks.any(0), saturated) > 0.97
        # Occlusion is resolved: visible regions of different objects do not overlap.
        assert (masks.sum(0) > 1).sum() <= 0.002 * masks.any(0).sum() + 5
        for ann, mask in zip(anns, masks):
            assert ann["iscrowd"] == 0 and all(len(p) >= 6 and len(p) % 2 == 0
                                               for p in ann["segmentation"])
            mean = pixels[mask].mean(0)
            nearest = min(colours, key=lambda k: np.linalg.norm(
                mean / np.linalg.norm(mean) - colours[k] / np.linalg.norm(colours[k])))
            assert nearest == ann["category_id"]
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
            assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
            assert abs(mask.sum() - ann["area"]) <= 0.03 * ann["area"] + 2 * (w + h) ** 0.5 + 4
            areas.append(ann["area"])
            multi_polygon += len(ann["segmentation"]) > 1
    assert min(areas) < 32 ** 2 and max(areas) > 64 ** 2  # varied scales
    assert multi_polygon > 0  # some objects are cut by an occluder


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
            sky = values == 1  # label 1 (sky) is the blue region of the image
            if sky.any():
                rgb = np.asarray(image).astype(float)[sky].mean(0)
                assert rgb[2] > rgb[0] + 40
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
    assert ade.class_names == ("sky", "ground", "circle", "square")
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
