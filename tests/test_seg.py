"""Segmentation glue (mae_transfer.seg, configs/seg, tools/train_seg.py) with the real MMEngine Runner.

Tiny models on generated ADE20K-layout data in tmp_path; end-to-end runs are marked slow.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import mae_transfer.seg  # noqa: F401  (shim + registrations)
from mae_transfer.data import make_ade_semantic
from mae_transfer.errors import NonFiniteLossError
from mae_transfer.seg.config import ConfigError, load_config, prepare_config, resolve_config
from mae_transfer.seg.runner import run

from seg_test_hooks import Interrupted  # tests/ is on sys.path under pytest; registers the test hooks

REPO = Path(__file__).resolve().parents[1]
DEFAULT_THREADS = torch.get_num_threads()
CLASSES = ("sky", "ground", "house")

# demo_vit_tiny shrunk further: 4 blocks of width 64 (the test of a few iterations, not a demo).
TINY = {
    "model.backbone.depth": 4, "model.backbone.embed_dim": 64, "model.backbone.num_heads": 2,
    "model.backbone.out_indices": (0, 1, 2, 3), "model.neck.in_channels": 64,
    "model.decode_head.in_channels": [64] * 4, "model.decode_head.channels": 32,
    "model.auxiliary_head.in_channels": 64, "model.auxiliary_head.channels": 16,
    "train_dataloader.batch_size": 2, "default_hooks.logger.interval": 1,
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def all_threads():
    """Full-size convolutions do use every core."""
    torch.set_num_threads(DEFAULT_THREADS)
    yield
    torch.set_num_threads(1)


def _load_tool():
    return importlib.import_module("mae_transfer.cli.train_seg")


@pytest.fixture(scope="module")
def ade_data(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-class ADE20K-layout dataset (128 px) and its class-list file."""
    root = make_ade_semantic(tmp_path_factory.mktemp("ade"), num_train=4, num_val=2,
                             image_size=(128, 128), num_classes=len(CLASSES), seed=1)
    classes = root / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    return root, classes


def _metrics(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "metrics.json").read_text().splitlines()]


# ---------------------------------------------------------------- configs and arguments (fast)

def test_bare_config_names_resolve_to_configs_seg():
    assert resolve_config("ade20k_vitb_mae") == REPO / "mae_transfer" / "configs" / "seg" / "ade20k_vitb_mae.py"
    assert (REPO / "configs").resolve() == REPO / "mae_transfer" / "configs"  # the documented paths
    with pytest.raises(ConfigError, match="did you mean 'ade20k_vitb_mae'"):
        resolve_config("ade20k_vitb_mea")


def test_vitb_mae_config_states_the_recipe():
    """The MAE paper / mmseg configs/mae ADE20K recipe, restated."""
    cfg = load_config("ade20k_vitb_mae")
    assert cfg.optim_wrapper.type == "AmpOptimWrapper"
    assert cfg.optim_wrapper.optimizer == dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.65
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, poly.type, poly.power, poly.end) == ("LinearLR", 1500, "PolyLR", 1.0, 160000)
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.model.backbone.drop_path == 0.1 and cfg.model.backbone.rel_pos == "beit"
    assert cfg.model.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
    crop = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "RandomCrop"][0]
    assert crop.crop_size == (512, 512)
    load = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "LoadAnnotations"][0]
    assert load.reduce_zero_label and cfg.model.decode_head.num_classes == 150


def test_misspelled_cfg_option_is_reported_with_the_closest_key():
    with pytest.raises(ConfigError, match=r"'drop_pth'.*did you mean 'model\.backbone\.drop_path'"):
        load_config("ade20k_vitb_mae", {"model.backbone.drop_pth": 0.2})
    with pytest.raises(ConfigError, match=r"did you mean 'train_dataloader\.batch_size'"):
        load_config("ade20k_vitb_mae", {"train_dataloader.batch_sise": 4})
    with pytest.raises(ConfigError, match=r"did you mean 'train_cfg\.max_iters'"):
        load_config("ade20k_vitb_mae", {"train_cfg.max_iter": 10})  # a Runner loop's argument
    # existing keys and arguments of the component that the config does not spell out are accepted
    cfg = load_config("ade20k_vitb_mae", {
        "model.backbone.drop_path": 0.2, "model.backbone.grad_checkpointing": True,
        "model.decode_head.dropout_ratio": 0.0, "auto_scale_lr.enable": True,
        "optim_wrapper.paramwise_cfg.freeze": "last_k_blocks:4", "train_dataloader.pin_memory": True,
        "randomness.deterministic": True})
    assert cfg.model.backbone.grad_checkpointing is True and cfg.auto_scale_lr.enable is True
    assert cfg.optim_wrapper.paramwise_cfg["freeze"] == "last_k_blocks:4"


def test_tool_reports_user_errors_in_one_line(ade_data, tmp_path, capsys):
    tool = _load_tool()
    root, classes = ade_data
    cases = [
        (["ade20k_vitb_mae", "--cfg-options", "model.backbone.drop_pth=0.2"],
         "did you mean 'model.backbone.drop_path'"),
        (["no_such_config"], "not found"),
        (["demo_vit_tiny", "--data-root", str(root)], "--data-root and --classes go together"),
        (["demo_vit_tiny", "--data-root", str(tmp_path), "--classes", str(classes)], "is missing"),
        (["demo_vit_tiny", "--data-root", str(root), "--classes", str(tmp_path / "none.txt")], "does not exist"),
        (["ade20k_vitb_mae", "--cfg-options", "train_dataloader.dataset.data_root=" + str(tmp_path / "nowhere")],
         "does not exist"),
    ]
    for argv, message in cases:
        assert tool.main(argv + ["--work-dir", str(tmp_path / "w")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err and message in err[-1] and err[-1].startswith("train_seg: error:")


def test_user_dataset_sets_classes_and_head_sizes(ade_data):
    root, classes = ade_data
    cfg = prepare_config("ade20k_vitb_mae", data_root=str(root), classes=str(classes))
    assert cfg.model.decode_head.num_classes == 3 and cfg.model.auxiliary_head.num_classes == 3
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = cfg[key].dataset
        assert dataset.metainfo["classes"] == CLASSES and dataset.data_root == str(root)
        assert dataset.reduce_zero_label and dataset.type == "BaseSegDataset"


def test_backbone_wrapper_loads_timm_weights_through_the_project_loader(tmp_path):
    """The backbone's ``pretrained`` goes through mae_transfer.checkpoints: same features as timm."""
    timm = pytest.importorskip("timm")
    from mmseg.registry import MODELS

    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    torch.save({"model": reference.state_dict()}, tmp_path / "deit_tiny.pth")
    backbone = MODELS.build(dict(type="MAETransferViT", arch="vit_tiny_patch16", img_size=224,
                                 out_indices=(11,), final_norm=True,
                                 pretrained=str(tmp_path / "deit_tiny.pth"))).eval()
    backbone.init_weights()
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(backbone.net.forward_features(image), reference.forward_features(image),
                                   rtol=1e-4, atol=1e-4)
        maps = backbone(image)
    assert len(maps) == 1 and maps[0].shape == (1, 192, 14, 14)


# ---------------------------------------------------------------- end to end (slow)

@pytest.mark.slow
def test_tiny_config_trains_validates_and_evaluates(ade_data, tmp_path, capsys):
    """tools/train_seg.py on a user dataset: metrics.json with mIoU, final line, PNGs, --eval-only."""
    tool = _load_tool()
    root, classes = ade_data
    work = tmp_path / "work"
    options = [f"{k}={v!r}".replace("'", "").replace(" ", "") for k, v in TINY.items()]
    options += ["train_cfg.max_iters=3", "train_cfg.val_interval=3", "default_hooks.checkpoint.interval=3"]
    argv = ["demo_vit_tiny", "--work-dir", str(work), "--data-root", str(root), "--classes", str(classes),
            "--cfg-options", *options]
    assert tool.main(argv + ["--show-dir", str(tmp_path / "vis")]) == 0
    records = _metrics(work)
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3]
    val = [r for r in records if r.get("split") == "val"]
    assert len(val) == 1 and 0.0 <= val[0]["mIoU"] <= 100.0 and val[0]["iteration"] == 3
    final = capsys.readouterr().out.strip().splitlines()[-1]
    assert final.startswith("mae_transfer seg result: mIoU") and f"{val[0]['mIoU']:.2f}" in final
    assert len(list((tmp_path / "vis").rglob("*.png"))) == 2  # one (gt | prediction) image per val image
    checkpoint = work / "iter_3.pth"
    assert set(torch.load(checkpoint, weights_only=True)) >= {"state_dict", "optimizer", "message_hub", "meta"}

    assert tool.main(argv + ["--eval-only", str(checkpoint)]) == 0
    test = [r for r in _metrics(work) if r.get("split") == "test"]
    assert test and test[-1]["mIoU"] == pytest.approx(val[0]["mIoU"], abs=1e-6)


def _overfit_cfg(root: Path, classes: Path, work: Path, iters: int):
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
                dict(type="PackSegInputs")]
    options = {**TINY, "train_dataloader.dataset.pipeline": pipeline, "model.data_preprocessor.size": (64, 64),
               "model.backbone.img_size": 64, "model.decode_head.dropout_ratio": 0.0,
               "model.auxiliary_head.dropout_ratio": 0.0, "train_dataloader.batch_size": 2,
               "optim_wrapper.optimizer.lr": 5e-3, "optim_wrapper.paramwise_cfg.layer_decay_rate": 1.0,
               "param_scheduler": [dict(type="ConstantLR", factor=1.0, by_epoch=False)],
               "train_cfg.max_iters": iters, "train_cfg.val_interval": 10 ** 6,
               "default_hooks.checkpoint.interval": 10 ** 6}
    return prepare_config("demo_vit_tiny", cfg_options=options, work_dir=str(work), data_root=str(root),
                          classes=str(classes))


@pytest.mark.slow
def test_overfits_one_image(tmp_path):
    """Loss on a single 64x64 image (twice per batch: BN needs 2) falls to at most half in 20 iterations."""
    root = make_ade_semantic(tmp_path / "one", num_train=1, num_val=1, image_size=(64, 64), num_classes=3, seed=3)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    cfg = _overfit_cfg(root, tmp_path / "classes.txt", tmp_path / "work", iters=20)
    run(cfg)
    records = [r for r in _metrics(tmp_path / "work") if "loss" in r]
    losses = [r["loss"] for r in records]
    assert len(losses) == 20
    assert np.mean(losses[-3:]) <= 0.5 * np.mean(losses[:3]), losses
    # TensorBoard events as Detectron2 runs write them, read back with TensorBoard's own reader.
    events = list((tmp_path / "work").rglob("events.out.tfevents.*"))
    assert len(events) == 1, events
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    logged = accumulator.Scalars("loss")
    assert [e.step for e in logged] == [r["iteration"] for r in records]
    assert logged[0].value == pytest.approx(losses[0], rel=1e-4)  # later ones: MMEngine's window mean


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    root = make_ade_semantic(tmp_path / "one", num_train=1, num_val=1, image_size=(64, 64), num_classes=3, seed=3)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    cfg = _overfit_cfg(root, tmp_path / "classes.txt", tmp_path / "work", iters=6)
    cfg.default_hooks.checkpoint.interval = 1
    cfg.custom_hooks = [dict(type="InjectNaNHook", at=3)]
    with pytest.raises(NonFiniteLossError, match=r"iteration 3 \(.*loss=nan") as error:
        run(cfg)
    assert "iter_2.pth" in str(error.value)
    assert sorted(p.name for p in (tmp_path / "work").glob("iter_*.pth")) == ["iter_1.pth", "iter_2.pth"]
    state = torch.load(tmp_path / "work" / "iter_2.pth", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
def test_resume_continues_the_same_run(tmp_path):
    """4 iterations straight == 2 iterations, a crash, --resume for the rest (same weights)."""
    root = make_ade_semantic(tmp_path / "d", num_train=4, num_val=1, image_size=(64, 64), num_classes=3, seed=4)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    def config(work: Path, crash_at: int | None = None):
        cfg = _overfit_cfg(root, tmp_path / "classes.txt", work, iters=4)
        cfg.model.backbone.drop_path = 0.1  # torch RNG in the forward pass: must be resumed too
        cfg.default_hooks.checkpoint.interval = 2
        cfg.train_dataloader.dataset.pipeline = [  # random augmentation: numpy RNG must line up too
            dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
            dict(type="RandomResize", scale=(128, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
            dict(type="RandomCrop", crop_size=(64, 64)), dict(type="RandomFlip", prob=0.5),
            dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs")]
        if crash_at:
            cfg.custom_hooks = [dict(type="InterruptHook", at=crash_at)]
        return cfg

    run(config(tmp_path / "straight"))
    with pytest.raises(Interrupted):
        run(config(tmp_path / "crashed", crash_at=3))
    resumed = config(tmp_path / "crashed")
    resumed.load_from, resumed.resume = str(tmp_path / "crashed" / "iter_2.pth"), True
    run(resumed)
    a = torch.load(tmp_path / "straight" / "iter_4.pth", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "crashed" / "iter_4.pth", weights_only=True)["state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_two_processes_gloo_end_with_identical_weights(ade_data, tmp_path):
    """torch.distributed.run --nproc_per_node 2 tools/train_seg.py (gloo on CPU): ranks in sync."""
    root, classes = ade_data
    work = tmp_path / "work"
    config = tmp_path / "tiny_dist.py"
    config.write_text(f"_base_ = [{str(REPO / 'configs' / 'seg' / 'demo_vit_tiny.py')!r}]\n"
                      "custom_imports = dict(imports=['seg_test_hooks'], allow_failed_imports=False)\n"
                      "custom_hooks = [dict(type='DumpRankWeightsHook')]\n")
    options = [f"{k}={v!r}".replace("'", "").replace(" ", "") for k, v in TINY.items()]
    options += ["train_cfg.max_iters=2", "train_cfg.val_interval=2", "default_hooks.checkpoint.interval=2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(30500 + os.getpid() % 1000), str(REPO / "tools" / "train_seg.py"), str(config),
           "--launcher", "pytorch", "--work-dir", str(work), "--data-root", str(root), "--classes", str(classes),
           "--cfg-options", *options]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Distributed training: True" in next(work.glob("*/*.log")).read_text()
    assert [r["iteration"] for r in _metrics(work) if "loss" in r] == [1, 2]
    rank0, rank1 = (torch.load(work / f"rank{r}_weights.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)


# ---------------------------------------------------------------- shipped ADE20K configs at full size

ADE20K_CONFIGS = sorted(p.stem for p in (REPO / "configs" / "seg").glob("ade20k_*.py"))
# One config per distinct architecture (the others differ only in weights / optimiser / freezing).
ARCHITECTURES = {"ade20k_vitb_mae": (12, 768), "ade20k_vitb_beit": (12, 768), "ade20k_vitl_mae": (24, 1024),
                 "ade20k_vitb_dinov2": (12, 768)}


def _architecture(name: str) -> str:
    model = load_config(name).model.to_dict()
    model["backbone"].pop("pretrained", None)
    return json.dumps(model, sort_keys=True, default=str)


def test_every_ade20k_config_has_one_of_the_tested_architectures():
    assert len(ADE20K_CONFIGS) >= 6
    tested = {_architecture(name): name for name in ARCHITECTURES}
    assert len(tested) == len(ARCHITECTURES)
    for name in ADE20K_CONFIGS:
        assert _architecture(name) in tested, f"{name}: add it to ARCHITECTURES"
        cfg = load_config(name)
        assert cfg.model.decode_head.num_classes == 150 and cfg.train_dataloader.dataset.type == "ADE20KDataset"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_ade20k_config_builds_full_size_and_runs_512_inference(name, all_threads):
    """The configured model at full size: one 512x512 image through slide inference on CPU (ViT-L: built only)."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    from mae_transfer.seg.runner import adapt_to_device

    cfg = load_config(name)
    adapt_to_device(cfg, cuda=False)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("mmseg"):
        model = MODELS.build(cfg.model).eval()
    depth, width = ARCHITECTURES[name]
    assert (model.backbone.net.depth, model.backbone.net.embed_dim) == (depth, width)
    assert sum(p.numel() for p in model.backbone.parameters()) > (85e6 if width == 768 else 300e6)
    if name == "ade20k_vitl_mae":
        return  # ViT-L runs the code ViT-B runs (37 s of the suite's 10 minutes for a deeper, wider copy)
    meta = dict(img_shape=(512, 512), ori_shape=(512, 512), pad_shape=(512, 512), padding_size=[0, 0, 0, 0])
    with torch.no_grad():
        sample, = model.predict(torch.randn(1, 3, 512, 512), [SegDataSample(metainfo=meta)])
    logits = sample.seg_logits.data
    assert logits.shape == (150, 512, 512) and torch.isfinite(logits).all()
    assert sample.pred_sem_seg.data.shape == (1, 512, 512)


@pytest.mark.slow
def test_same_vitb_weights_give_the_same_features_in_seg_and_det_wrappers(tmp_path):
    """An MAE-layout ViT-B checkpoint through MMSeg's MAETransferViT and Detectron2's multi-level
    backbone (ViT options aligned with ade20k_vitb_mae): identical block maps, equal to timm's."""
    timm = pytest.importorskip("timm")
    pytest.importorskip("detectron2")
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY
    from mmseg.registry import MODELS

    import mae_transfer.det.backbone  # noqa: F401  (registers the Detectron2 backbones)
    from mae_transfer.det.config import load_config as load_det_config

    torch.manual_seed(0)
    reference = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()
    checkpoint = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": reference.state_dict()}, checkpoint)  # the official MAE release layout

    seg_cfg = load_config("ade20k_vitb_mae").model.backbone
    seg_cfg.update(img_size=224, pretrained=str(checkpoint))
    seg = MODELS.build(seg_cfg).eval()
    seg.init_weights()
    det_cfg = load_det_config("coco_vitb_mae_fpn", [
        "MODEL.VIT.WEIGHTS", str(checkpoint), "MODEL.VIT.IMG_SIZE", "224", "MODEL.VIT.WINDOW_SIZE", "0",
        "MODEL.VIT.REL_POS", "beit", "MODEL.VIT.USE_CLS_TOKEN", "True", "MODEL.VIT.LAYER_SCALE", "1.0",
        "MODEL.VIT.OUT_INDICES", str(list(seg_cfg.out_indices)), "MODEL.PYRAMID.SQUARE_PAD", "0"])
    det = BACKBONE_REGISTRY.get(det_cfg.MODEL.BACKBONE.NAME)(det_cfg, ShapeSpec(channels=3)).eval()
    det_vit = det.bottom_up.net

    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        seg_maps, det_maps = seg(image), det_vit.forward_maps(image)
        timm_maps = reference.forward_intermediates(image, indices=list(seg_cfg.out_indices), norm=False,
                                                    output_fmt="NCHW", intermediates_only=True)
    assert len(seg_maps) == len(det_maps) == len(timm_maps) == 4
    for seg_map, det_map, timm_map in zip(seg_maps, det_maps, timm_maps):
        assert seg_map.shape == (1, 768, 14, 14)
        torch.testing.assert_close(seg_map, det_map, rtol=0, atol=0)
        torch.testing.assert_close(seg_map, timm_map, rtol=1e-4, atol=1e-4)


def test_resume_picks_the_last_complete_checkpoint(tmp_path):
    """``last_checkpoint`` when it names a file; else the largest iter_N.pth; partial writes never."""
    from mae_transfer.seg.checkpoint import find_last_checkpoint

    assert find_last_checkpoint(tmp_path) is None
    for name in ("iter_2.pth", "iter_10.pth", ".iter_12.pth.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert find_last_checkpoint(tmp_path) == tmp_path / "iter_10.pth"  # numeric, not lexicographic
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_2.pth"))
    assert find_last_checkpoint(tmp_path) == tmp_path / "iter_2.pth"
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_12.pth"))  # its write never finished
    assert find_last_checkpoint(tmp_path) == tmp_path / "iter_10.pth"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the quirk only shows without CUDA")
def test_process_group_set_up_works_where_mmengines_fails_without_cuda(monkeypatch):
    """STACK.md: MMEngine's init_dist calls torch.cuda.set_device unconditionally; ours uses gloo."""
    import torch.distributed as dist
    from mmengine.dist import init_dist

    from mae_transfer.seg.runner import destroy_distributed, init_distributed

    for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(31500 + os.getpid() % 1000)).items():
        monkeypatch.setenv(key, value)
    with pytest.raises((RuntimeError, AssertionError)):
        init_dist("pytorch", backend="gloo")
    assert not dist.is_initialized()
    try:
        assert init_distributed("pytorch") == (0, 1)
        assert dist.get_backend() == "gloo"
    finally:
        destroy_distributed()
    assert not dist.is_initialized()


def test_cpu_adaptation_of_a_gpu_config():
    """What makes GPU configs run on CPU (the fix of STACK.md): SyncBN -> BN, fp32, CPU DDP wrapper."""
    from mae_transfer.seg.runner import adapt_to_device

    gpu = load_config("ade20k_vitb_mae")
    gpu.launcher = "pytorch"
    adapt_to_device(gpu, cuda=True)
    assert gpu.model.decode_head.norm_cfg.type == "SyncBN" and gpu.optim_wrapper.type == "AmpOptimWrapper"
    assert "model_wrapper_cfg" not in gpu

    cpu = load_config("ade20k_vitb_mae")
    cpu.launcher = "pytorch"
    adapt_to_device(cpu, cuda=False)
    assert "SyncBN" not in json.dumps(cpu.model.to_dict(), default=str)
    assert cpu.model.neck.norm == "BN" and cpu.model.auxiliary_head.norm_cfg.type == "BN"
    assert cpu.optim_wrapper.type == "OptimWrapper" and "loss_scale" not in cpu.optim_wrapper
    assert cpu.optim_wrapper.constructor == "MAETransferOptimizerConstructor"
    assert cpu.model_wrapper_cfg == dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)
