"""The checkpoint layout of this package's MAE-paper detector, registered with the core loader.

``build_vit_multilevel_fpn_backbone`` keeps the ViT at ``backbone.bottom_up.net.*`` and the
multi-level pyramid at ``backbone.bottom_up.pyramid.*``; the ViTDet-style backbone uses
Detectron2's own names (``backbone.net.*``, ``backbone.simfp_*``), a built-in layout ("vitdet").
Importing :mod:`mae_transfer.det` registers it, so :func:`mae_transfer.checkpoints.load_pretrained`
reads this package's run checkpoints, pyramid included.
"""
from mae_transfer.checkpoints import model_layout, register_layout

MULTILEVEL_FPN = register_layout(model_layout(
    "mae_transfer_det", "mae_transfer Detectron2 model, multi-level pyramid + FPN (backbone.bottom_up.*)",
    vit="backbone.bottom_up.net.", pyramid="backbone.bottom_up.pyramid.",
    rest_reason="Detectron2 detector parts (proposal_generator, roi_heads), used only by a whole detector",
))
