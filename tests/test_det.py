"""Detection glue: configs, backbone parity with Detectron2's ViTDet, checkpoint loading, LSJ,
non-finite loss handling, CLI errors. End-to-end training runs: tests/test_det_train.py."""
from __future__ import annotations

import logging
from pathlib import Path

import detectron2.data.transforms as T
import pytest
import timm
import torch
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone.utils import get_abs_pos
from detectron2.utils.events import get_event_storage

from mae_transfer.cli.train_det import main as run
from mae_transfer.det import ConfigError, NonFiniteLossError, Trainer, build_train_augmentation, load_config
from mae_transfer.det.checkpoint import AtomicCheckpointer
from mae_transfer.det.config import CONFIG_DIR

from _det_cases import TINY_VIT, make_dataset, tiny_train_cfg, unregister

COCO_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("coco_*.yaml") if not p.name.endswith(".deviations.yaml"))
NO_WEIGHTS = ["MODEL.VIT.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", 80]


# -- configs ------------------------------------------------------------------------------------


def test_shipped_configs_are_listed():
    expected = {"coco_vitb_mae.yaml", "coco_vitb_supervised.yaml", "coco_vitb_beit.yaml",
                "coco_vitl_mae.yaml", "coco_vitb_mae_fpn.yaml", "coco_vitb_mae_last4.yaml",
                "coco_vitb_mocov3.yaml", "coco_vitb_random.yaml"}
    assert expected <= set(COCO_CONFIGS)
    assert (CONFIG_DIR / "demo_vit_tiny.yaml").is_file()


def test_vitb_mae_config_is_the_vitdet_recipe():
    cfg = load_config("coco_vitb_mae")  # bare name, no .yaml
    s = cfg.SOLVER
    assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.LAYER_DECAY, s.IMS_PER_BATCH) == ("ADAMW", 1e-4, 0.1, 0.7, 64)
    assert s.MAX_ITER == 184375 and s.WARMUP_ITERS == 250
    assert [round(step / s.MAX_ITER, 3) for step in s.STEPS] == [0.889, 0.963]
    assert cfg.MODEL.VIT.DROP_PATH == 0.1 and cfg.INPUT.LSJ.ENABLED and cfg.INPUT.LSJ.IMAGE_SIZE == 1024
    assert cfg.MODEL.VIT.WEIGHTS.endswith("mae_pretrain_vit_base.pth")
    large = load_config("coco_vitl_mae.yaml")
    expected = (0.8, 0.4, "vit_large_patch16")
    assert (large.SOLVER.LAYER_DECAY, large.MODEL.VIT.DROP_PATH, large.MODEL.VIT.NAME) == expected


def test_random_init_config_trains_4x_longer_without_layer_decay():
    base, cfg = load_config("coco_vitb_mae").SOLVER, load_config("coco_vitb_random")
    assert cfg.MODEL.VIT.WEIGHTS == "" and cfg.SOLVER.LAYER_DECAY == 1.0
    assert cfg.SOLVER.MAX_ITER == 4 * base.MAX_ITER  # Detectron2's 400ep LSJ arithmetic
    assert list(cfg.SOLVER.STEPS) == [4 * step for step in base.STEPS]



pytestmark = pytest.mark.usefixtures("one_thread")


def meta_build(cfg):
    """Build a model on the meta device: full-size shapes without memory or init time."""
    cfg.MODEL.DEVICE = "meta"
    with torch.device("meta"):
        return build_model(cfg)


@pytest.mark.parametrize("name", COCO_CONFIGS)
def test_every_coco_config_builds_at_full_size(name):
    cfg = load_config(name, NO_WEIGHTS)
    model = meta_build(cfg)
    vit = model.backbone.net if hasattr(model.backbone, "net") else model.backbone.bottom_up.net
    large = "vitl" in name
    assert (vit.embed_dim, vit.depth) == ((1024, 24) if large else (768, 12))
    assert vit.img_size == (1024, 1024) and vit.window_size == 14
    assert vit.global_blocks == ((5, 11, 17, 23) if large else (2, 5, 8, 11))
    assert model.roi_heads.box_predictor.cls_score.out_features == 81
    assert model.backbone.output_shape()["p2"].stride == 4 and model.backbone.output_shape()["p6"].stride == 64
    # ViT-B encoder ~86M, ViT-L ~304M parameters (timm: 85.8M / 303.3M incl. cls token and norm)
    vit_params = sum(p.numel() for p in vit.parameters()) / 1e6
    assert (300 < vit_params < 310) if large else (84 < vit_params < 90)


@pytest.mark.slow
def test_vitb_mae_config_runs_inference_on_a_1024_image():
    torch.manual_seed(0)
    cfg = load_config("coco_vitb_mae", NO_WEIGHTS + ["MODEL.DEVICE", "cpu", "MODEL.RPN.POST_NMS_TOPK_TEST", 100,
                                                      "TEST.DETECTIONS_PER_IMAGE", 10])
    model = build_model(cfg).eval()
    shapes = {}
    model.backbone.register_forward_hook(
        lambda m, i, out: shapes.update({k: tuple(v.shape[-2:]) for k, v in out.items()}))
    image = torch.randint(0, 256, (3, 1024, 1024), dtype=torch.uint8).float()
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 1024, "width": 1024}])
    assert shapes == {"p2": (256, 256), "p3": (128, 128), "p4": (64, 64), "p5": (32, 32), "p6": (16, 16)}
    inst = out["instances"]
    assert inst.image_size == (1024, 1024) and len(inst) <= cfg.TEST.DETECTIONS_PER_IMAGE
    assert inst.pred_masks.shape[1:] == (1024, 1024) and torch.isfinite(inst.pred_boxes.tensor).all()


def test_misspelled_config_key_names_the_closest_key(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown config key 'MODEL\.VIT\.DROPPATH'.*'MODEL\.VIT\.DROP_PATH'"):
        load_config("demo_vit_tiny", ["MODEL.VIT.DROPPATH", "0.2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{CONFIG_DIR / "demo_vit_tiny.yaml"}"\nSOLVER:\n  LAYER_DECAYS: 0.7\n')
    with pytest.raises(ConfigError, match=r"'SOLVER\.LAYER_DECAYS' in .*bad\.yaml.*'SOLVER\.LAYER_DECAY'"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="coco_vitb_mae"):
        load_config("coco_vitb_mea")


def test_cli_reports_user_errors_in_one_sentence(capsys):
    assert run(["--config", "demo_vit_tiny", "MODEL.VIT.DROPPATH", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'MODEL.VIT.DROP_PATH'?" in err
    assert run(["--config", "demo_vit_tiny", "--num-gpus", "3"]) == 2  # batch 4 over 3 processes
    assert "SOLVER.IMS_PER_BATCH 4 is not divisible" in capsys.readouterr().err
    assert run(["--config", "demo_vit_tiny", "DATASETS.TRAIN", "('nope_train',)"]) == 2
    assert "Dataset 'nope_train' is not registered" in capsys.readouterr().err


# -- model: parity with Detectron2's own ViTDet ---------------------------------------------------

def _detectron2_vitdet(num_classes: int):
    """Detectron2's ViTDet Mask R-CNN (projects/ViTDet, LazyConfig) at the TINY_VIT geometry."""
    model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
    net = model.backbone.net
    net.img_size, net.embed_dim, net.depth, net.num_heads, net.window_size = 128, 192, 4, 3, 4
    net.window_block_indexes = [0, 2]
    model.backbone.square_pad = 128
    model.proposal_generator.post_nms_topk = (1000, 50)
    model.roi_heads.num_classes = num_classes
    return instantiate(model)


def test_vitdet_base_config_matches_detectron2_vitdet_model():
    """Our yacs base config builds ViTDet's Mask R-CNN: same parameter names and shapes, and with
    the same weights the same detections (Detectron2's LazyConfig model as the reference)."""
    torch.manual_seed(0)
    theirs = _detectron2_vitdet(num_classes=3).eval()
    ours = build_model(load_config("Base-ViTDet-MaskRCNN", TINY_VIT + ["MODEL.ROI_HEADS.NUM_CLASSES", 3,
                                                                      "MODEL.RPN.POST_NMS_TOPK_TEST", 50])).eval()
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    with torch.no_grad():  # random non-zero relative position tables and heads
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    image = torch.randint(0, 256, (3, 112, 128), dtype=torch.uint8).float()
    with torch.no_grad():
        (a,), (b,) = ours([{"image": image}]), theirs([{"image": image}])
    a, b = a["instances"], b["instances"]
    assert len(a) == len(b) > 0
    # float noise only (our attention uses F.scaled_dot_product_attention, Detectron2's does not)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-5)
    assert torch.equal(a.pred_classes, b.pred_classes)
    assert (a.pred_masks == b.pred_masks).float().mean() > 0.999


def test_multilevel_fpn_backbone_outputs():
    cfg = load_config("coco_vitb_mae_fpn", NO_WEIGHTS + TINY_VIT + ["MODEL.VIT.OUT_INDICES", (0, 1, 2, 3)])
    backbone = build_backbone(cfg).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 128))
    assert {k: (v.shape[1], v.shape[-1]) for k, v in out.items()} == {
        "p2": (256, 32), "p3": (256, 16), "p4": (256, 8), "p5": (256, 4), "p6": (256, 2)}
    cfg.MODEL.VIT.OUT_INDICES = (3,)
    with pytest.raises(ValueError, match="MODEL.VIT.OUT_INDICES"):
        build_backbone(cfg)


# -- pretrained weights ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint in the official MAE layout ({'model': encoder state dict}) made with timm."""
    torch.manual_seed(0)
    encoder = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    path = tmp_path_factory.mktemp("mae") / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": encoder.state_dict()}, path)
    return path


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("pretrain_size", [224, 1024])
def test_mae_checkpoint_loads_with_report_and_pos_embed_on_the_1024_grid(mae_checkpoint, pretrain_size):
    """MODEL.VIT.WEIGHTS: the loader's report is logged, weights arrive, and the position embedding
    used on a 1024 input equals Detectron2's bicubic resize (get_abs_pos) of the checkpoint's."""
    records, logger = _Records(), logging.getLogger("mae_transfer")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        cfg = load_config("demo_vit_tiny", ["MODEL.VIT.WEIGHTS", str(mae_checkpoint), "MODEL.VIT.IMG_SIZE", 1024,
                                            "MODEL.VIT.PRETRAIN_IMG_SIZE", pretrain_size])
        backbone = build_backbone(cfg)
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    report = "\n".join(records.messages)
    assert str(mae_checkpoint) in report and "mae" in report.lower()
    if pretrain_size == 1024:
        assert "pos_embed" in report  # resized at load time
    state = torch.load(mae_checkpoint)["model"]
    torch.testing.assert_close(backbone.net.patch_embed.proj.weight, state["patch_embed.proj.weight"], rtol=0, atol=0)
    torch.testing.assert_close(backbone.net.blocks[3].mlp.fc2.bias, state["blocks.3.mlp.fc2.bias"], rtol=0, atol=0)
    expected = get_abs_pos(state["pos_embed"], True, (64, 64)).reshape(1, 64 * 64, -1)
    with torch.no_grad():
        used = backbone.net.abs_pos_embed((64, 64))
    torch.testing.assert_close(used[:, -64 * 64:], expected, rtol=1e-5, atol=1e-5)


def test_beit_config_loads_a_beit_checkpoint_into_windowed_blocks(tmp_path):
    """coco_vitb_beit keeps BEiT's architecture (q/v bias, layer scale, per-block relative bias
    tables, no absolute position) inside ViTDet's windows; a timm BEiT checkpoint fills it."""
    torch.manual_seed(0)
    beit = timm.create_model("beit_base_patch16_224", embed_dim=192, depth=4, num_heads=3, num_classes=0)
    with torch.no_grad():  # timm zero-initialises the bias tables
        for p in beit.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / "beit.pth"
    torch.save(beit.state_dict(), path)
    tiny_geometry = TINY_VIT[2:]  # all but MODEL.VIT.NAME
    cfg = load_config("coco_vitb_beit", tiny_geometry + ["MODEL.VIT.WEIGHTS", str(path), "MODEL.VIT.EMBED_DIM", 192,
                                                         "MODEL.VIT.NUM_HEADS", 3])
    net = build_backbone(cfg).net
    assert net.pos_embed is None
    state = beit.state_dict()
    for key in ("blocks.2.attn.q_bias", "blocks.2.attn.v_bias", "blocks.2.gamma_1", "blocks.3.mlp.fc1.weight"):
        torch.testing.assert_close(net.state_dict()[key], state[key], rtol=0, atol=0, msg=key)
    window_table = net.blocks[0].attn.relative_position_bias_table  # 4x4 window: 7*7 offsets + 3
    assert window_table.shape == ((2 * 4 - 1) ** 2 + 3, 3)
    assert not torch.equal(window_table, torch.zeros_like(window_table))  # resized from the 14x14 table


# -- data ---------------------------------------------------------------------------------------


def test_lsj_augmentation_is_resize_scale_and_fixed_crop():
    cfg = load_config("coco_vitb_mae")
    flip, resize, crop = build_train_augmentation(cfg) if _has_shapely() else pytest.skip("needs shapely")
    assert isinstance(flip, T.RandomFlip) and isinstance(resize, T.ResizeScale) and isinstance(crop, T.FixedSizeCrop)
    assert (resize.min_scale, resize.max_scale, resize.target_height) == (0.1, 2.0, 1024)
    assert tuple(crop.crop_size) == (1024, 1024)
    image = torch.zeros(480, 640, 3, dtype=torch.uint8).numpy()
    for _ in range(5):
        out = T.AugmentationList([resize, crop])(T.AugInput(image))
        h, w = out.apply_image(image).shape[:2]
        assert h <= 1024 and w <= 1024


def test_lsj_without_shapely_is_a_clear_error(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "shapely" else find_spec(name, *a))
    with pytest.raises(ConfigError, match="shapely.*INPUT.LSJ.ENABLED False"):
        build_train_augmentation(load_config("coco_vitb_mae"))


def _has_shapely() -> bool:
    import importlib.util

    return importlib.util.find_spec("shapely") is not None


# -- non-finite loss -------------------------------------------------------------------------------


@pytest.fixture
def tiny_dataset(tmp_path):
    name = f"det_tiny_{tmp_path.name}"
    make_dataset(tmp_path / "coco", name)
    yield name
    unregister(name)


def test_nan_loss_stops_with_iteration_and_terms_and_keeps_last_checkpoint(tiny_dataset, tmp_path):
    cfg = tiny_train_cfg(tiny_dataset, tmp_path / "out", MAX_ITER=4, CHECKPOINT_PERIOD=1)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model
    forward = model.forward

    def poisoned_forward(batched_inputs):
        losses = forward(batched_inputs)
        if get_event_storage().iter == 2:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses

    model.forward = poisoned_forward
    with pytest.raises(NonFiniteLossError, match=r"iteration 2 \(loss_mask=nan;") as info:
        trainer.train()
    assert "loss_cls=" in str(info.value)  # all terms are listed
    last = (tmp_path / "out" / "last_checkpoint").read_text()
    assert last == "model_0000001.pth"
    assert f"last good checkpoint: {tmp_path / 'out' / last}" in str(info.value)
    state = torch.load(tmp_path / "out" / last)["model"]
    for key, value in model.state_dict().items():  # the bad step never reached the weights
        assert torch.isfinite(value).all() if value.is_floating_point() else True
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporary files left behind


def test_checkpointer_refuses_code_running_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"model": {}, "evil": Evil()}, tmp_path / "evil.pth")
    checkpointer = AtomicCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    with pytest.raises(Exception, match="unsafe"):
        checkpointer.load(str(tmp_path / "evil.pth"))
    assert not (tmp_path / "pwned").exists()
