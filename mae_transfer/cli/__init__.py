"""Command-line entry points, one module each: ``python -m mae_transfer.cli.NAME`` or the ``mae-*``
console scripts (``tools/NAME.py`` are shims to the same ``main``).

Every module's ``main(argv=None) -> int`` reports user errors through
:func:`mae_transfer.errors.report_errors`. Importing this package hides the known dependency
warnings a user can do nothing about (:func:`quiet_dependency_warnings`); it runs before any entry
point imports a framework, also in the worker processes Detectron2 and ``torch.distributed`` start
(they import the entry module first). Every other warning is kept.
"""
from __future__ import annotations

import warnings

# (category, start of the message): emitted by the pinned dependencies themselves, not by our code.
DEPENDENCY_WARNINGS = (
    # torch 2.14 deprecates TorchScript; fvcore (Detectron2's dependency) scripts helpers at import.
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    # Detectron2's own ViT (the benchmark's reference) imports timm's old path.
    (FutureWarning, r"Importing from timm\.models\.layers is deprecated"),
    # mmcv-lite has no compiled ops; the segmentation models here do not use this attention.
    (UserWarning, r"Fail to import ``MultiScaleDeformableAttention``"),
)


def quiet_dependency_warnings() -> None:
    """Ignore :data:`DEPENDENCY_WARNINGS` (by category and message); idempotent."""
    for category, message in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


quiet_dependency_warnings()
