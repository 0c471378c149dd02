"""The built-in classes are in the shapes, not in the colours.

For every annotated object of a generated labelled train split (64 images) and a held-out val split
(32 images), two features of its visible pixels (the mask decoded by pycocotools): a normalised
4x4x4 RGB colour histogram, and the binary mask in a square window around its bbox resized to 16x16.
The same simple classifier (ridge regression on one-hot targets, numpy) is fit on train and scored
on val: on colour it must stay within 0.1 of chance (the frequency of the majority val class), on
shape it must do far better, which shows that the test could catch a colour-coded generator.
"""
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from mae_transfer.data import BUILTIN_DATASETS, make_coco_instances

NUM_CLASSES = BUILTIN_DATASETS["builtin_coco_train"]["num_classes"]
SIZE = 128


def _features(root, split: str, num_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 64) colour histograms, (N, 256) mask windows and (N,) class indices of a split's objects."""
    json_path, image_dir = make_coco_instances(root, split=split, num_images=num_images,
                                               image_size=(SIZE, SIZE), num_classes=NUM_CLASSES, seed=0)
    coco = COCO(str(json_path))
    colours, shapes, labels = [], [], []
    for img in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(image_dir / img["file_name"]).convert("RGB"))
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            mask = coco.annToMask(ann).astype(bool)
            if mask.sum() < 8:
                continue
            bins = pixels[mask].astype(int) // 64
            histogram = np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64)
            colours.append(histogram / histogram.sum())
            x, y, w, h = ann["bbox"]
            side, cx, cy = max(w, h), x + w / 2, y + h / 2
            window = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
            crop = Image.fromarray(mask.astype(np.uint8) * 255).crop(window).resize((16, 16), Image.BILINEAR)
            shapes.append(np.asarray(crop, dtype=np.float64).ravel() / 255)
            labels.append(ann["category_id"] - 1)
    return np.array(colours), np.array(shapes), np.array(labels)


def _ridge_accuracy(x_train, y_train, x_val, y_val, lam: float = 1.0) -> float:
    """Val accuracy of a ridge-regression classifier (one-hot targets, bias) fit on train."""
    design = np.c_[x_train, np.ones(len(x_train))]
    weights = np.linalg.solve(design.T @ design + lam * np.eye(design.shape[1]),
                              design.T @ np.eye(NUM_CLASSES)[y_train])
    return float(((np.c_[x_val, np.ones(len(x_val))] @ weights).argmax(1) == y_val).mean())


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    return _features(root, "train", 64), _features(root, "val", 32)


def test_class_is_not_recoverable_from_colour_but_is_from_shape(features):
    (colour_tr, shape_tr, y_tr), (colour_va, shape_va, y_va) = features
    assert len(y_tr) >= 150 and len(y_va) >= 75 and set(y_tr) == set(y_va) == set(range(NUM_CLASSES))
    chance = np.bincount(y_va).max() / len(y_va)
    colour_acc = _ridge_accuracy(colour_tr, y_tr, colour_va, y_va)
    shape_acc = _ridge_accuracy(shape_tr, y_tr, shape_va, y_va)
    print(f"chance {chance:.3f}  colour {colour_acc:.3f}  shape {shape_acc:.3f}")
    assert colour_acc <= chance + 0.1
    assert shape_acc >= chance + 0.4
