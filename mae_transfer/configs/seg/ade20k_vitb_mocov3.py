# ViT-B/16 MoCo v3 (ImageNet-1K, 300 epochs) -> UperNet on ADE20K: 47.3 mIoU in the MAE paper
# (Table 5), with the recipe of ade20k_vitb_mae. The checkpoint's module.base_encoder.* weights are
# used; the momentum encoder and the predictor are ignored by the loader (listed in its report).
# Weights: https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar
_base_ = ["ade20k_vitb_mae.py"]
model = dict(backbone=dict(pretrained="pretrain/vit-b-300ep.pth.tar"))
