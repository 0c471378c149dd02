"""Small detection configs and datasets shared by the det tests (CPU-sized)."""
from __future__ import annotations

from detectron2.data import DatasetCatalog, MetadataCatalog

from mae_transfer.data import make_coco_instances
from mae_transfer.det import load_config, register_coco_dataset

# A 4-block ViT-Tiny on 128 px images (8x8 tokens, 4x4 windows, 2 global blocks).
TINY_VIT = ["MODEL.VIT.NAME", "vit_tiny_patch16", "MODEL.VIT.DEPTH", 4, "MODEL.VIT.GLOBAL_BLOCKS", (1, 3),
            "MODEL.VIT.IMG_SIZE", 128, "MODEL.VIT.WINDOW_SIZE", 4, "MODEL.PYRAMID.SQUARE_PAD", 128,
            "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 128, "MODEL.DEVICE", "cpu"]

# Training at 128 px with 2 ViT blocks and 32-channel pyramid/heads: ~0.2 s per step of 2 images.
TINY_TRAIN = TINY_VIT + [
    "MODEL.VIT.DEPTH", 2, "MODEL.VIT.GLOBAL_BLOCKS", (1,), "MODEL.PYRAMID.OUT_CHANNELS", 32,
    "MODEL.ROI_BOX_HEAD.CONV_DIM", 32, "MODEL.ROI_MASK_HEAD.CONV_DIM", 32,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64, "INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MAX_SIZE_TRAIN", 128,
    "INPUT.RANDOM_FLIP", "none", "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 5, "SOLVER.STEPS", (),
    "SEED", 0,
]


def make_dataset(root, name: str, num_images: int = 2, num_classes: int = 2) -> tuple[str, str]:
    """Generate 128 px COCO-format data under ``root`` and register it as ``name``."""
    json_file, image_dir = make_coco_instances(root, split="train", num_images=num_images, image_size=(128, 128),
                                               num_classes=num_classes, seed=0)
    register_coco_dataset(name, str(json_file), str(image_dir))
    return str(json_file), str(image_dir)


def unregister(name: str) -> None:
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def tiny_train_cfg(train: str, output_dir, test: str | None = None, **solver):
    """demo_vit_tiny shrunk to TINY_TRAIN; ``solver`` overrides SOLVER.<KEY>."""
    opts = TINY_TRAIN + ["DATASETS.TRAIN", (train,), "DATASETS.TEST", (test,) if test else (),
                         "OUTPUT_DIR", str(output_dir)]
    for key, value in solver.items():
        opts += [f"SOLVER.{key}", value]
    return load_config("demo_vit_tiny", opts)
