"""mae_transfer: fine-tune pretrained ViTs (MAE, DeiT, BEiT) for detection and segmentation."""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', Path("mae_transfer/__init__.py").read_text()).group(1)

setup(
    name="mae_transfer",
    version=version,
    description="Transfer MAE / supervised / BEiT Vision Transformers to Mask R-CNN and UperNet",
    packages=find_packages(include=["mae_transfer", "mae_transfer.*"]),
    python_requires=">=3.10",
    # Loose bounds here; the exact pins live in requirements.txt. Detectron2 is not on the index:
    # scripts/install.sh builds it from source (see README).
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "mmengine>=0.10,<0.11",
        "mmcv-lite>=2.0,<2.2",
        "mmsegmentation>=1.2,<1.3",
        "timm>=1.0",
        "pycocotools",
        "safetensors",
        "matplotlib",
        "tensorboard",
        "tqdm",
    ],
)
