# ViT-L/16 MAE (ImageNet-1K, 1600 epochs) -> UperNet on ADE20K: 53.6 mIoU in the MAE paper
# (Table 5). Differences from ade20k_vitb_mae: 24 blocks of width 1024, pyramid from blocks 8, 12,
# 16, 24 (as mmseg's BEiT-L), drop path 0.2 and layer decay 0.75 (MAE's ImageNet fine-tuning
# values for ViT-L; the paper searched the ADE20K lr per entry, A.4).
# Weights: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth
_base_ = ["ade20k_vitb_mae.py"]
model = dict(
    backbone=dict(arch="vit_large_patch16", out_indices=(7, 11, 15, 23), drop_path=0.2,
                  pretrained="pretrain/mae_pretrain_vit_large.pth"),
    neck=dict(in_channels=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024),
)
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.75))
