"""Image folders and the ImageNet normalisation shared by pretraining and the probe."""

from __future__ import annotations

from pathlib import Path

from mae_transfer.errors import MissingFileError

__all__ = ["IMAGE_SUFFIXES", "IMAGENET_MEAN", "IMAGENET_STD", "list_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def list_images(folder: str | Path) -> list[Path]:
    """All image files below ``folder`` (recursively), sorted; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"image folder {folder} does not exist; pass --data with a folder "
                               f"of images (e.g. the built-in one: python -m mae_transfer.data).")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingFileError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}; "
                               f"pass --data with a folder that holds images.")
    return files
