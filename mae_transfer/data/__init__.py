"""Deterministic built-in datasets (generated scenes) in COCO and ADE20K layouts.

Objects are composite shapes whose class is the arrangement of their parts (house, cross, arrow,
L, dumbbell, ...; :mod:`.shapes`); colour and texture are drawn per object from one distribution
shared by all classes, distractors and the cluttered background (:mod:`.appearance`), so a model
must see shape to tell the classes apart. ``builtin_pretrain`` (the unlabelled pool, 16x the
labelled ``builtin_coco_train``), ``builtin_coco_train`` and ``builtin_coco_val`` are disjoint.

    from mae_transfer.data import make_coco_instances, make_ade_semantic, builtin_root, builtin_dataset
    json_path, image_dir = make_coco_instances(root, split="train", num_images=8)
    ade_root = make_ade_semantic(root, num_train=8, num_val=4)
    ds = builtin_dataset("builtin_coco_train")   # cached under builtin_root()
"""
from .ade import ade_class_names, make_ade_semantic
from .builtin import BUILTIN_DATASETS, BuiltinDataset, builtin_dataset, builtin_image_dir
from .cache import builtin_root
from .coco import make_coco_instances
from .shapes import SHAPE_CLASSES, shape_classes

__all__ = [
    "make_coco_instances", "make_ade_semantic", "builtin_root", "builtin_dataset",
    "builtin_image_dir", "BuiltinDataset", "BUILTIN_DATASETS", "ade_class_names",
    "shape_classes", "SHAPE_CLASSES",
]
