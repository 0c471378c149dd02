# ViT-B/16 supervised on ImageNet-1K -> UperNet on ADE20K: 47.4 mIoU in the MAE paper (Table 5),
# trained with the same recipe as ade20k_vitb_mae (the paper searched the lr per entry, A.4; 1e-4
# is kept here). The paper's supervised ViT-B is its own from-scratch model (82.3% IN-1K top-1);
# DeiT-B (timm deit_base_patch16_224, 81.8%) is the public stand-in:
# https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth
_base_ = ["ade20k_vitb_mae.py"]
model = dict(backbone=dict(pretrained="pretrain/deit_base_patch16_224-b5f2ef4d.pth"))
