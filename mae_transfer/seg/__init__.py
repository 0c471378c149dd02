"""MMSegmentation glue: the project's ViT, pyramid, optimizer constructor and hooks, registered.

Importing this package installs the ``mmcv.ops`` stand-in first (mmseg.models needs it with
mmcv-lite), then registers ``MAETransferViT`` and ``MAETransferPyramid`` (mmseg ``MODELS``),
``MAETransferOptimizerConstructor`` and the hooks of :mod:`mae_transfer.seg.hooks`.
"""
import mae_transfer.compat.mmcv_ops  # noqa: F401  (must precede any mmseg.models import)

# isort: split

import mmseg.models  # noqa: F401,E402  (fills mmseg's registries)

from . import guards  # noqa: E402,F401  (input-check transforms and hooks)
from .backbone import MAETransferViT  # noqa: E402
from .hooks import MetricsJsonHook, NonFiniteLossError, NonFiniteLossHook, ResumableCheckpointHook  # noqa: E402
from .neck import MAETransferPyramid  # noqa: E402
from .optimizer import MAETransferOptimizerConstructor  # noqa: E402

__all__ = [
    "MAETransferViT", "MAETransferPyramid", "MAETransferOptimizerConstructor",
    "MetricsJsonHook", "NonFiniteLossHook", "NonFiniteLossError", "ResumableCheckpointHook",
]
