"""Inputs shared by ours and the reference pipelines in the ``det_e2e`` / ``seg_e2e`` / ``loader``
cases: generated datasets on disk at the recipe sizes, and the reference configs.

- a COCO-format instance dataset with polygon masks (``mae_transfer.data.make_coco_instances``),
  registered in Detectron2's catalog, read by both detection loaders;
- an ADE20K-layout dataset (``mae_transfer.data.make_ade_semantic``), read by both MMSeg loaders;
- Detectron2's ViTDet LazyConfigs (``projects/ViTDet/configs``, not part of the installed
  package), extracted once from a Detectron2 source archive or checkout;
- MMSeg's own ``mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py`` from the installed package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

from mae_transfer.data.cache import builtin_root
from mae_transfer.errors import ConfigError

__all__ = [
    "coco_dataset",
    "ade_dataset",
    "vitdet_config",
    "mmseg_mae_config",
    "SourceMissing",
]




class SourceMissing(RuntimeError):
    """A reference config that is not installed here."""


def _bench_root() -> Path:
    return builtin_root().parent / "bench"


def coco_dataset(size: int, num_images: int = 4) -> Tuple[str, Path]:
    """Register (once) a generated COCO-format train set of ``size x size`` images with polygon
    masks; returns its Detectron2 dataset name and the image folder."""
    from mae_transfer.data.coco import make_coco_instances
    from mae_transfer.det.data import register_coco_dataset

    root = _bench_root() / f"coco_{size}_{num_images}"
    json_path, image_dir = make_coco_instances(root, "train", num_images, (size, size), num_classes=8)
    name = f"bench_coco_{size}_{num_images}"
    register_coco_dataset(name, str(json_path), str(image_dir))
    return name, image_dir


def ade_dataset(size: Tuple[int, int], num_images: int = 4) -> Path:
    """A generated ADE20K-layout dataset (``images/`` + ``annotations/``, training and validation)
    of ``size = (height, width)`` images; returns its root."""
    from mae_transfer.data.ade import make_ade_semantic

    root = _bench_root() / f"ade_{size[0]}x{size[1]}_{num_images}"
    return make_ade_semantic(root, num_images, 2, size, num_classes=4)


def vitdet_config() -> Path:
    """Path of Detectron2's ``mask_rcnn_vitdet_b_100ep.py``, extracted once from the Detectron2
    source by :func:`mae_transfer.det.recipe.vitdet_config_dir` (the recipe diff's reference too)."""
    from mae_transfer.det.recipe import REFERENCES, vitdet_config_dir

    try:
        return vitdet_config_dir() / REFERENCES["coco_vitb_mae"]
    except ConfigError as error:
        raise SourceMissing(str(error)) from None


def mmseg_mae_config() -> Path:
    """MMSeg's MAE-B UperNet config, as installed with mmseg (``mmseg/.mim/configs``)."""
    import mmseg

    path = Path(mmseg.__file__).parent / ".mim" / "configs" / "mae" / "mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"
    if not path.is_file():
        raise SourceMissing(f"{path} is missing; install mmsegmentation with its configs (pip, not a trimmed copy).")
    return path
