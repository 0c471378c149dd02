"""Deterministic built-in datasets (generated shapes) in COCO and ADE20K layouts.

    from mae_transfer.data import make_coco_instances, make_ade_semantic, builtin_root, builtin_dataset
    json_path, image_dir = make_coco_instances(root, split="train", num_images=8)
    ade_root = make_ade_semantic(root, num_train=8, num_val=4)
    ds = builtin_dataset("builtin_coco_train")   # cached under builtin_root()
"""
from .ade import ade_class_names, make_ade_semantic
from .builtin import BUILTIN_DATASETS, BuiltinDataset, builtin_dataset, builtin_image_dir
from .cache import builtin_root
from .coco import make_coco_instances
from .render import SHAPE_CLASSES, shape_classes

__all__ = [
    "make_coco_instances", "make_ade_semantic", "builtin_root", "builtin_dataset",
    "builtin_image_dir", "BuiltinDataset", "BUILTIN_DATASETS", "ade_class_names",
    "shape_classes", "SHAPE_CLASSES",
]
