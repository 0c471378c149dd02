# Partial fine-tuning of ViT-B MAE on ADE20K: only the last 4 blocks (+ final norm), the pyramid
# and UperNet train; patch embedding, position embedding and blocks 1-8 are frozen (in eval mode).
# MAE paper Fig. 9 (ImageNet, ViT-L): fine-tuning the last 4-6 blocks gets close to full
# fine-tuning; this measures the same for segmentation. Otherwise as ade20k_vitb_mae.
_base_ = ["ade20k_vitb_mae.py"]
optim_wrapper = dict(paramwise_cfg=dict(freeze="last_k_blocks:4"))
