"""Reading the images a predictor is given: paths, PIL images or HxWx3 RGB uint8 arrays."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mae_transfer.errors import UserError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(image: ImageInput) -> np.ndarray:
    """Any accepted input -> (H, W, 3) uint8 RGB array (EXIF orientation applied to files).

    Raises:
        UserError: naming the file when it is missing or not a decodable image, or describing an
            array that is not HxWx3 uint8.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserError(f"An image array must be HxWx3 uint8 RGB, not {image.dtype} of shape {image.shape}; "
                            "convert it (e.g. np.asarray(pil_image.convert('RGB'))).")
        return image
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    path = Path(image)
    if not path.is_file():
        raise UserError(f"Image file {path} does not exist; check the path.")
    try:
        with Image.open(path) as opened:
            return np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        reason = "not a decodable image" if isinstance(err, UnidentifiedImageError) else " ".join(str(err).split())
        raise UserError(f"Image file {path} cannot be read ({reason}); replace it or leave it out.") from None


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given and the image files (by suffix, sorted) of the folders given.

    Raises:
        UserError: for a path that does not exist or a folder without images.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise UserError(f"Folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); give image files "
                                "or a folder with images.")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"Image file {path} does not exist; check the path.")
    return found
