# UperNet on a plain ViT-B/16 with the MAE/BEiT multi-level pyramid (MAE paper, Sec. 5 / A.4;
# the layout of mmseg configs/_base_/models/upernet_mae.py): outputs of blocks 4, 6, 8, 12 are
# resampled to strides 4, 8, 16, 32 and fed to UperNet (+ an FCN auxiliary head on stride 16).
norm_cfg = dict(type="SyncBN", requires_grad=True)  # BN on CPU / single process (mae_transfer.seg.runner)
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512),
)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type="MAETransferViT",
        arch="vit_base_patch16",
        img_size=512,  # pos_embed stored/learned at this grid (pretrain_img_size defaults to it), as MMSeg
        out_indices=(3, 5, 7, 11),
        pretrained=None,
        drop_path=0.1,
        use_cls_token=True,
        rel_pos="beit",  # per-block relative position bias, zero-initialised at transfer
        layer_scale=1.0,  # as mmseg's MAE reproduction (init_values=1.0)
    ),
    neck=dict(type="MAETransferPyramid", in_channels=768, scale_factors=(4.0, 2.0, 1.0, 0.5), norm="SyncBN"),
    decode_head=dict(
        type="UPerHead",
        in_channels=[768, 768, 768, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=768,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    auxiliary_head=dict(
        type="FCNHead",
        in_channels=768,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="slide", crop_size=(512, 512), stride=(341, 341)),
)
