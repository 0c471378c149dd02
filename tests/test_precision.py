"""Precision as the references run it, and as each shipped COCO / ADE20K config claims.

- Detection: ViTDet's own LazyConfigs (Detectron2 source, projects/ViTDet) turn on AMP and fp16
  gradient compression in DDP; our COCO configs do the same, and the trainer built from them is an
  AMPTrainer whose DDP model carries the fp16 all-reduce hook.
- Segmentation: MMSeg's MAE config, built with MMEngine, gives a plain ``OptimWrapper`` (its
  ``fp16=dict(...)`` key is an MMSeg 0.x leftover that MMEngine's Runner never reads), so AMP is off
  as shipped; the 48.1 of its model zoo came from MMSeg 0.x, where that key did turn fp16 on. Ours
  states ``AmpOptimWrapper`` (on GPUs; fp32 on CPU).
"""
from __future__ import annotations

import socket
import tarfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
D2_SOURCE = REPO.parent / "shared" / "deps" / "detectron2-02b5c4e.tar.gz"
COCO_CONFIGS = sorted(p.stem for p in (REPO / "configs" / "det").glob("coco_*.yaml")
                      if not p.name.endswith(".deviations.yaml"))
ADE20K_CONFIGS = sorted(p.stem for p in (REPO / "configs" / "seg").glob("ade20k_*.py"))


@pytest.fixture(scope="module")
def vitdet_configs(tmp_path_factory) -> Path:
    """projects/ViTDet/configs from the Detectron2 source tarball (not in the installed package)."""
    source = D2_SOURCE if D2_SOURCE.exists() else Path("/work/shared/deps") / D2_SOURCE.name
    if not source.exists():
        pytest.skip(f"Detectron2 source tarball not found at {D2_SOURCE}")
    root = tmp_path_factory.mktemp("d2src")
    with tarfile.open(source) as tar:
        members = [m for m in tar.getmembers() if "/projects/ViTDet/configs/" in m.name and m.isfile()]
        tar.extractall(root, members=members, filter="data")
    return root / "detectron2" / "projects" / "ViTDet" / "configs"


@pytest.mark.parametrize("name", ["mask_rcnn_vitdet_b_100ep", "mask_rcnn_vitdet_l_100ep"])
def test_vitdet_reference_runs_amp_and_fp16_compression(vitdet_configs, name):
    from detectron2.config import LazyConfig

    train = LazyConfig.load(str(vitdet_configs / "COCO" / f"{name}.py")).train
    assert train.amp.enabled is True and train.ddp.fp16_compression is True


@pytest.mark.parametrize("name", COCO_CONFIGS)
def test_every_coco_config_states_the_vitdet_precision(name):
    from mae_transfer.det import load_config

    cfg = load_config(name)
    assert cfg.SOLVER.AMP.ENABLED is True and cfg.SOLVER.FP16_COMPRESSION is True, name


def test_trainer_from_config_is_amp_with_fp16_allreduce_hook(tmp_path, monkeypatch):
    """The trainer built from a config with both keys on: AMPTrainer, and the DDP model has the
    fp16 compression hook (a one-process gloo group standing in for several)."""
    import torch.distributed as dist
    from detectron2.engine import AMPTrainer
    from detectron2.utils import comm
    from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks
    from torch.nn.parallel import DistributedDataParallel

    from mae_transfer.det import Trainer

    from _det_cases import make_dataset, tiny_train_cfg, unregister

    make_dataset(tmp_path / "data", "precision_train")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    comm.create_local_process_group(1)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)  # so Detectron2 wraps in DDP
    try:
        cfg = tiny_train_cfg("precision_train", tmp_path / "out", MAX_ITER=1, **{"AMP.ENABLED": True})
        assert cfg.SOLVER.FP16_COMPRESSION  # from the base config
        trainer = Trainer(cfg)  # on CPU torch's GradScaler disables itself; the class is what counts
        assert isinstance(trainer._trainer, AMPTrainer)
        model = trainer._trainer.model
        assert isinstance(model, DistributedDataParallel)
        assert [hook for hook, _ in model._comm_hooks] == [comm_hooks.fp16_compress_hook]
    finally:
        monkeypatch.undo()
        comm._LOCAL_PROCESS_GROUP = None
        dist.destroy_process_group()
        unregister("precision_train")


def test_mmseg_mae_config_leaves_amp_off_as_shipped():
    """Built with MMEngine, MMSeg's own MAE config gives a plain OptimWrapper: fp32 steps."""
    import mmseg
    from mmengine.config import Config
    from mmengine.optim import AmpOptimWrapper, OptimWrapper, build_optim_wrapper
    from mmengine.registry import init_default_scope

    import mae_transfer.seg  # noqa: F401  (mmcv.ops shim)

    path = Path(mmseg.__file__).parent / ".mim/configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py"
    cfg = Config.fromfile(path)
    assert cfg.fp16 == dict(loss_scale="dynamic")  # what the file says
    init_default_scope("mmseg")
    cfg.optim_wrapper.pop("paramwise_cfg")
    cfg.optim_wrapper.pop("constructor")  # the layer-decay constructor needs its MAE backbone
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    assert type(wrapper) is OptimWrapper and not isinstance(wrapper, AmpOptimWrapper)
    import mmengine.runner.runner as runner_module
    assert "cfg.get('fp16'" not in Path(runner_module.__file__).read_text()  # the key is never read


@pytest.mark.parametrize("name", ADE20K_CONFIGS)
def test_every_ade20k_config_states_amp_on_gpus_and_fp32_on_cpu(name):
    from mae_transfer.seg.config import load_config
    from mae_transfer.seg.runner import adapt_to_device

    cfg = load_config(name)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper", name
    assert "fp16_compression" not in str(cfg.get("model_wrapper_cfg") or {})  # MMSeg has none either
    adapt_to_device(cfg, cuda=True)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper"
    adapt_to_device(cfg, cuda=False)
    assert cfg.optim_wrapper.type == "OptimWrapper"
