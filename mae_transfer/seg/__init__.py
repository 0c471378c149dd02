"""MMSegmentation glue: the project's ViT, pyramid, optimizer constructor, transforms and hooks, registered.

Importing this package installs the ``mmcv.ops`` stand-in first (mmseg.models needs it with
mmcv-lite), then registers ``MAETransferViT`` and ``MAETransferPyramid`` (mmseg ``MODELS``),
``MAETransferOptimizerConstructor``, the checking transforms of :mod:`mae_transfer.seg.transforms`
and the hooks of :mod:`mae_transfer.seg.hooks` and :mod:`mae_transfer.seg.checkpoint`.
``build_segmentor(config, options)`` builds a segmentor from a config name or path.
"""
import mae_transfer.compat.mmcv_ops  # noqa: F401  (must precede any mmseg.models import)

# isort: split

import mmseg.models  # noqa: F401,E402  (fills mmseg's registries)

from . import layouts  # noqa: E402,F401  (registers this package's checkpoint layout)
from .backbone import MAETransferViT  # noqa: E402
from .build import build_segmentor  # noqa: E402
from .checkpoint import CheckpointFitHook, ResumableCheckpointHook  # noqa: E402
from .hooks import MetricsJsonHook, NonFiniteLossError, NonFiniteLossHook  # noqa: E402
from .neck import MAETransferPyramid  # noqa: E402
from .optimizer import MAETransferOptimizerConstructor  # noqa: E402
from .transforms import CheckedLoadImageFromFile, CheckSegLabels  # noqa: E402

__all__ = [
    "build_segmentor", "MAETransferViT", "MAETransferPyramid", "MAETransferOptimizerConstructor",
    "MetricsJsonHook", "NonFiniteLossHook", "NonFiniteLossError", "ResumableCheckpointHook",
    "CheckpointFitHook", "CheckedLoadImageFromFile", "CheckSegLabels",
]
