# ViT-B/16 MAE (ImageNet-1K, 1600 epochs) -> UperNet on ADE20K: 48.1 mIoU in the MAE paper
# (Table 5, single-scale); mmseg configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py
# reproduces 48.13. Recipe (the _base_ files): 512x512 crops, 160k iterations at batch 16, AdamW
# lr 1e-4, wd 0.05, layer decay 0.65, 1500 linear warmup iterations then poly, drop path 0.1,
# relative position bias zero-initialised, sliding-window inference, AMP on GPU.
# Batch 16 = 8 GPUs x 2 images: python -m torch.distributed.run --nproc_per_node 8 tools/train_seg.py
# ade20k_vitb_mae --launcher pytorch. On 2 GPUs keep the total with
# --cfg-options train_dataloader.batch_size=8 (or 4 GPUs x 4).
# Weights: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth (download it to
# pretrain/ or pass model.backbone.pretrained=URL; nothing is downloaded unless a URL is given).
_base_ = ["_base_/upernet_vit.py", "_base_/ade20k.py", "_base_/schedule_160k.py", "_base_/default_runtime.py"]
model = dict(backbone=dict(pretrained="pretrain/mae_pretrain_vit_base.pth"))
# Precision (every ade20k_* config inherits it): AMP on GPUs (fp16 autocast, dynamic loss scale),
# fp32 on CPU (mae_transfer.seg.runner); DDP all-reduces fp32 gradients (no compression), as MMSeg.
# MMSeg's MAE config as shipped for MMEngine leaves AMP off: it sets fp16=dict(loss_scale='dynamic')
# next to a plain OptimWrapper, and MMEngine never reads that key (tests/test_precision.py builds it;
# its tools/train.py --amp would turn it on). Its 48.13 comes from the MMSeg 0.x run
# upernet_mae-base_fp16_8x2_512x512_160k_ade20k (2022-04-26, v0.24 code; metafile.yaml), where that
# key did turn fp16 training on, and the config is named "amp": so we run AMP on purpose.
optim_wrapper = dict(type="AmpOptimWrapper", loss_scale="dynamic")  # fp32 on CPU (mae_transfer.seg.runner)
