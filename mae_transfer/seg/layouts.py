"""The checkpoint layout of this package's segmentors, registered with the core loader.

A segmentor built from ``MAETransferViT`` + ``MAETransferPyramid`` keeps the ViT at
``backbone.net.*`` and the pyramid at ``neck.pyramid.*``, next to MMSeg's ``decode_head.*``.
Importing :mod:`mae_transfer.seg` registers it, so :func:`mae_transfer.checkpoints.load_pretrained`
reads this package's run checkpoints, pyramid included.
"""
from __future__ import annotations

from mae_transfer.checkpoints import PYRAMID, REST, VIT, Layout, register_layout

VIT_PREFIX = "backbone.net."
PYRAMID_PREFIX = "neck.pyramid."

SEGMENTOR = register_layout(Layout(
    "mae_transfer_seg",
    "mae_transfer MMSeg model (backbone.net / neck.pyramid)",
    lambda keys: any(k.startswith(VIT_PREFIX) for k in keys) and any(k.startswith("decode_head.") for k in keys),
    ((VIT_PREFIX, VIT), (PYRAMID_PREFIX, PYRAMID), ("", REST)),
    rest_reason="MMSeg decode/auxiliary heads and neck, used only by a whole segmentor",
))
