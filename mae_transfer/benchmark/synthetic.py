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

import glob
import os
import tarfile
from pathlib import Path
from typing import Tuple

from mae_transfer.data.cache import builtin_root, generation_lock

__all__ = [
    "coco_dataset",
    "ade_dataset",
    "vitdet_config",
    "mmseg_mae_config",
    "SourceMissing",
    "D2_SOURCE_ENV",
]

D2_SOURCE_ENV = "MAE_TRANSFER_D2_SOURCE"
_VITDET_CONFIG = "projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py"
_REPO = Path(__file__).resolve().parents[2]


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


def _d2_source() -> Path:
    """The Detectron2 source: ``$MAE_TRANSFER_D2_SOURCE`` (archive or checkout), else the archive
    next to this repository (``../shared/deps/detectron2-*.tar.gz``)."""
    env = os.environ.get(D2_SOURCE_ENV)
    if env:
        return Path(env)
    found = sorted(glob.glob(str(_REPO.parent / "shared" / "deps" / "detectron2-*.tar.gz")))
    if not found:
        raise SourceMissing(
            "Detectron2's ViTDet LazyConfigs are not installed with the package; set "
            f"{D2_SOURCE_ENV} to a Detectron2 source archive or checkout."
        )
    return Path(found[-1])


def vitdet_config() -> Path:
    """Path of Detectron2's ``mask_rcnn_vitdet_b_100ep.py`` (extracted to a cache once)."""
    source = _d2_source()
    if source.is_dir():
        path = source / _VITDET_CONFIG
        if not path.is_file():
            raise SourceMissing(f"{path} does not exist; {D2_SOURCE_ENV} must be a Detectron2 checkout.")
        return path
    target = _bench_root() / ("d2_" + source.name.split(".")[0])
    path = target / _VITDET_CONFIG
    with generation_lock(_bench_root()):
        if not path.is_file():
            with tarfile.open(source) as archive:
                members = [m for m in archive.getmembers() if "/projects/ViTDet/configs/" in m.name
                           and m.isfile()]  # fmt: skip
                for member in members:  # strip the archive's top folder
                    member.name = member.name.split("/", 1)[1]
                archive.extractall(target, members=members, filter="data")
    if not path.is_file():
        raise SourceMissing(f"{source} holds no {_VITDET_CONFIG}; point {D2_SOURCE_ENV} at Detectron2's source.")
    return path


def mmseg_mae_config() -> Path:
    """MMSeg's MAE-B UperNet config, as installed with mmseg (``mmseg/.mim/configs``)."""
    import mmseg

    path = Path(mmseg.__file__).parent / ".mim" / "configs" / "mae" / "mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"
    if not path.is_file():
        raise SourceMissing(f"{path} is missing; install mmsegmentation with its configs (pip, not a trimmed copy).")
    return path
