"""The checkpoint layout of this package's MAE-paper detector, registered with the core loader.

``build_vit_multilevel_fpn_backbone`` keeps the ViT at ``backbone.bottom_up.net.*`` and the
multi-level pyramid at ``backbone.bottom_up.pyramid.*``; the ViTDet-style backbone uses
Detectron2's own names (``backbone.net.*``, ``backbone.simfp_*``), a built-in layout ("vitdet").
Importing :mod:`mae_transfer.det` registers it, so :func:`mae_transfer.checkpoints.load_pretrained`
reads this package's run checkpoints, pyramid included.
"""
from __future__ import annotations

from mae_transfer.checkpoints import PYRAMID, REST, VIT, Layout, register_layout

VIT_PREFIX = "backbone.bottom_up.net."
PYRAMID_PREFIX = "backbone.bottom_up.pyramid."

MULTILEVEL_FPN = register_layout(Layout(
    "mae_transfer_det",
    "mae_transfer Detectron2 model, multi-level pyramid + FPN (backbone.bottom_up.*)",
    lambda keys: any(k.startswith(VIT_PREFIX) for k in keys),
    ((VIT_PREFIX, VIT), (PYRAMID_PREFIX, PYRAMID), ("", REST)),
    rest_reason="Detectron2 detector parts (proposal_generator, roi_heads), used only by a whole detector",
))
