# Tiny UperNet-ViT for CPUs on the built-in generated ADE20K-layout data (sky, ground, shapes;
# mae_transfer.data "builtin_ade", generated on first use): ViT-Ti/16 (192 wide, 12 blocks) at
# 128x128, a narrow UperNet, 300 iterations at batch 4. It shows the whole path (data -> Runner
# -> IoUMetric -> metrics.json) in minutes, not a benchmark number. Pretrained weights from
# tools/pretrain_mae.py plug in with --cfg-options model.backbone.pretrained=PATH.
_base_ = ["_base_/upernet_vit.py", "_base_/ade20k.py", "_base_/schedule_160k.py", "_base_/default_runtime.py"]
builtin_dataset = "builtin_ade"  # mae_transfer.seg.config.apply_builtin_dataset: data root + classes
crop_size = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch="vit_tiny_patch16", img_size=128, drop_path=0.0),
    neck=dict(in_channels=192),
    decode_head=dict(in_channels=[192, 192, 192, 192], channels=128),
    auxiliary_head=dict(in_channels=192, channels=64),
    test_cfg=dict(_delete_=True, mode="whole"),
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="RandomResize", scale=(256, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(256, 128), keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=5e-4), paramwise_cfg=dict(layer_decay_rate=0.75))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=30, end=300, by_epoch=False),
]
train_cfg = dict(max_iters=300, val_interval=100)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=100))
env_cfg = dict(cudnn_benchmark=False)
