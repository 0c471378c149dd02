# ViT-B/16 BEiT (self-supervised ImageNet-1K) -> UperNet on ADE20K: 47.1 mIoU in the MAE paper
# (Table 5). BEiT's architecture: q/v bias, layer scale 0.1, per-block relative position bias
# (pretraining's shared bias is copied into every block by the checkpoint loader), no absolute
# position embedding. Optimiser of BEiT's ADE20K config for self-supervised weights
# (unilm/beit semantic_segmentation upernet_beit_base_12_512_slide_160k_ade20k): lr 4e-4, layer
# decay 0.65; everything else as ade20k_vitb_mae.
# Weights: BEiT self-supervised on ImageNet-1K (the paper's setting), saved as the file below. BEiT's
# public beit_base_patch16_224_pt22k.pth loads the same way but is ImageNet-22K pretraining.
_base_ = ["ade20k_vitb_mae.py"]
model = dict(backbone=dict(arch="beit_base_patch16", layer_scale=0.1,
                           pretrained="pretrain/beit_base_patch16_224_pt1k.pth"))
optim_wrapper = dict(optimizer=dict(lr=4e-4))
