# 160k iterations at batch 16 (MAE paper A.4 / BEiT): AdamW with layer-wise lr decay through
# mae_transfer.optim, 1500 linear warmup iterations, then linear ("poly", power 1) decay to 0.
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="MAETransferOptimizerConstructor",
    # weight_decay_rule "beit": no decay for 1-d tensors and '.bias' only, as MMSeg's
    # LayerDecayOptimizerConstructor and BEiT's segmentation code run (pos_embed, cls_token and
    # the relative position tables are decayed; see mae_transfer/optim/layer_decay.py).
    paramwise_cfg=dict(layer_decay_rate=0.65, weight_decay_rule="beit"),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=160000, val_interval=16000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
# The recipe's total batch; `--cfg-options auto_scale_lr.enable=True` scales the lr linearly
# when GPUs x batch_size differs from it.
auto_scale_lr = dict(enable=False, base_batch_size=16)
