# ViT-B MAE with the whole backbone frozen: the pyramid and UperNet train on fixed MAE features
# (the dense-prediction analogue of linear probing; MAE's features are known to be far less
# linearly separable than their fine-tuned accuracy suggests, Table 1 / Fig. 9).
_base_ = ["ade20k_vitb_mae.py"]
optim_wrapper = dict(paramwise_cfg=dict(freeze="frozen_backbone"))
