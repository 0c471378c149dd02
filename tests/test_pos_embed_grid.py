"""Where the absolute position table lives, per framework, against the reference backbones.

- Segmentation (MMSeg / BEiT): the table is resized ONCE at load to the crop grid (197 -> 1025
  tokens at 512, patch 16) and learned there; sliding windows (= crop) use it as is. Checked against
  MMSeg's own ``MAE`` backbone built from its ADE20K config, loading the same MAE checkpoint
  converted with MMSeg's own ``beit2mmseg`` converter.
- Detection (Detectron2 ViTDet): the table stays at the pretraining grid (197 tokens) and is resized
  in every forward; the forward itself is compared with ``detectron2.modeling.ViT`` in
  ``test_vit_parity.py``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

DEPTH = 2  # the table handling does not depend on depth; keeps both ViT-B builds fast


@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory) -> Path:
    """An official-MAE-layout ViT-B/16 checkpoint (``{'model': timm names}``, 197-token table)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, depth=DEPTH)
    with torch.no_grad():  # a non-smooth table, so any difference in the resize shows
        vit.pos_embed.copy_(torch.randn_like(vit.pos_embed))
    path = tmp_path_factory.mktemp("ckpt") / "mae_pretrain_vit_base.pth"
    torch.save({"model": vit.state_dict()}, path)
    return path


def _mmseg_mae_from_its_config(checkpoint: Path, tmp_path: Path):
    """MMSeg's ``MAE`` backbone from ``configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512``,
    initialised from ``checkpoint`` after MMSeg's ``beit2mmseg`` conversion (as its README says)."""
    import mmseg
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mae_transfer.seg  # noqa: F401  (mmcv.ops shim before mmseg.models)

    root = Path(mmseg.__file__).parent / ".mim"
    spec = importlib.util.spec_from_file_location("beit2mmseg", root / "tools/model_converters/beit2mmseg.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    converted = tmp_path / "mae_pretrain_vit_base_mmcls.pth"
    torch.save(converter.convert_beit(torch.load(checkpoint)["model"]), converted)

    cfg = Config.fromfile(root / "configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py")
    backbone = cfg.model.backbone
    assert tuple(backbone.img_size) == (512, 512)
    backbone.update(num_layers=DEPTH, out_indices=[0, DEPTH - 1],
                    init_cfg=dict(type="Pretrained", checkpoint=str(converted)))
    init_default_scope("mmseg")
    model = MODELS.build(backbone)
    model.init_weights()
    model.eval()  # MMSeg's BEiT.train() returns None
    return model


def _ours_from_ade20k_config(checkpoint: Path):
    from mmseg.registry import MODELS

    import mae_transfer.seg  # noqa: F401  (registers MAETransferViT)
    from mae_transfer.seg.config import load_config

    cfg = load_config("ade20k_vitb_mae").model.backbone
    cfg.update(depth=DEPTH, out_indices=(0, DEPTH - 1), pretrained=str(checkpoint))
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def test_seg_table_is_resized_once_at_load_to_the_crop_grid_as_mmseg(mae_checkpoint, tmp_path):
    pytest.importorskip("mmseg")
    ref = _mmseg_mae_from_its_config(mae_checkpoint, tmp_path)
    ours = _ours_from_ade20k_config(mae_checkpoint)
    net = ours.net
    assert net.pretrain_grid == (32, 32)
    assert ref.pos_embed.shape == net.pos_embed.shape == (1, 1025, 768)  # a parameter at 512
    # the same interpolation (bicubic, align_corners=False, no antialias, cls entry kept)
    torch.testing.assert_close(net.pos_embed, ref.pos_embed, rtol=0, atol=0)
    # a 512 window uses the learned table as is: no resize on the forward path
    assert net.abs_pos_embed((32, 32)) is net.pos_embed
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        got, expected = ours(x), ref(x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_seg_table_learns_at_the_crop_grid_and_whole_image_inference_still_resizes(mae_checkpoint):
    pytest.importorskip("mmseg")
    ours = _ours_from_ade20k_config(mae_checkpoint)
    ours.train()
    sum(m.sum() for m in ours(torch.randn(1, 3, 512, 512))).backward()
    assert ours.net.pos_embed.grad.shape == (1, 1025, 768)
    assert ours.net.pos_embed.grad[:, 1:].abs().sum(-1).gt(0).all()  # every crop-grid entry is learned
    ours.eval()
    with torch.no_grad():  # larger than the crop: resized on the fly from the learned 32x32 grid
        maps = ours(torch.randn(1, 3, 640, 768))
    assert maps[0].shape == (1, 768, 40, 48)


def test_seg_crop_grid_follows_a_non_square_crop():
    pytest.importorskip("mmseg")
    from mmseg.registry import MODELS

    import mae_transfer.seg  # noqa: F401

    ours = MODELS.build(dict(type="MAETransferViT", arch="vit_tiny_patch16", img_size=(512, 1024), depth=1,
                             out_indices=(0,)))
    assert ours.net.pretrain_grid == (32, 64) and ours.net.pos_embed.shape == (1, 1 + 32 * 64, 192)


def test_det_table_stays_at_the_pretraining_grid_as_detectron2(mae_checkpoint):
    """ViTDet keeps the 224 grid (Detectron2 ``ViT(pretrain_img_size=224)``) and resizes per forward."""
    pytest.importorskip("detectron2")
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY

    import mae_transfer.det.backbone  # noqa: F401
    from mae_transfer.det.config import load_config

    cfg = load_config("coco_vitb_mae", ["MODEL.VIT.WEIGHTS", str(mae_checkpoint), "MODEL.VIT.DEPTH", str(DEPTH),
                                        "MODEL.VIT.GLOBAL_BLOCKS", "[1]"])
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, ShapeSpec(channels=3))
    net = backbone.bottom_up.net if hasattr(backbone, "bottom_up") else backbone.net
    assert net.pretrain_grid == (14, 14) and net.pos_embed.shape == (1, 197, 768)
    saved = torch.load(mae_checkpoint)["model"]["pos_embed"]
    torch.testing.assert_close(net.pos_embed.detach(), saved, rtol=0, atol=0)  # loaded as is
    assert net.abs_pos_embed((64, 64)).shape == (1, 64 * 64, 768)  # resized on the forward path
