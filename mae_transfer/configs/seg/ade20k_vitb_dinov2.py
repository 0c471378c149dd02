# ViT-B/14 DINOv2 (LVD-142M, no labels) -> UperNet on ADE20K.
# Recipe: none published for UperNet full fine-tuning of DINOv2 ViT-B (the DINOv2 paper reports
# frozen-backbone linear / multi-scale heads, and Mask2Former + ViT-Adapter for ViT-g only); we use
# the MAE/BEiT UperNet recipe of ade20k_vitb_mae.py (512x512 crops, 160k iterations at batch 16,
# AdamW lr 1e-4, wd 0.05, layer decay 0.65, drop path 0.1, blocks 4/6/8/12 through the multi-level
# pyramid) because it is the recipe every other ADE20K config here uses, so a comparison changes only
# the initialisation. DINOv2's own architecture is kept: cls token, layer scale (loaded), absolute
# positions only (no relative position bias, unlike the MAE config).
# Patch 14 under the stride-16 pyramid: feature_stride=16 resizes each 512 crop to 448 = 32 x 14
# inside the backbone, so the maps are 32x32 = stride 16 and the pyramid gives strides 4/8/16/32
# (512 / 14 is not an integer, so the crop could not be tiled by patches anyway). This keeps the
# patch embedding as pretrained; the image is seen at 14/16 of its resolution. The 37x37 position
# table of 518 is resized once at load to the 32x32 training grid (bicubic, antialiased, as timm)
# and learned there, as the other ADE20K configs do. No expected mIoU is published.
# Weights: https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth (layout
# "dinov2"; timm's vit_base_patch14_dinov2 weights load too).
_base_ = ["_base_/upernet_vit.py", "_base_/ade20k.py", "_base_/schedule_160k.py", "_base_/default_runtime.py"]
model = dict(
    backbone=dict(
        arch="vit_base_patch14_dinov2",
        pretrained="pretrain/dinov2_vitb14_pretrain.pth",
        feature_stride=16,
        rel_pos=None,  # DINOv2 has absolute positions only
        layer_scale=1e-5,  # DINOv2's (the values come from the checkpoint)
    )
)
optim_wrapper = dict(type="AmpOptimWrapper", loss_scale="dynamic")  # fp32 on CPU (mae_transfer.seg.runner)
