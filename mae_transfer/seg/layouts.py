"""The checkpoint layout of this package's segmentors, registered with the core loader.

A segmentor built from ``MAETransferViT`` + ``MAETransferPyramid`` keeps the ViT at
``backbone.net.*`` and the pyramid at ``neck.pyramid.*``, next to MMSeg's ``decode_head.*``.
Importing :mod:`mae_transfer.seg` registers it, so :func:`mae_transfer.checkpoints.load_pretrained`
reads this package's run checkpoints, pyramid included.
"""
from mae_transfer.checkpoints import model_layout, register_layout

SEGMENTOR = register_layout(model_layout(
    "mae_transfer_seg", "mae_transfer MMSeg model (backbone.net / neck.pyramid)",
    vit="backbone.net.", pyramid="neck.pyramid.", requires=("decode_head.",),
    rest_reason="MMSeg decode/auxiliary heads and neck, used only by a whole segmentor",
))
