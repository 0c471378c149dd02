"""MMSegmentation recipe extraction: this project's config and MMSeg's installed reference config,
each built with its own code, flattened into the framework-free form of :mod:`mae_transfer.recipe_diff`.

The reference configs are MMSeg's own (installed with the package under ``mmseg/.mim/configs``);
their models are built by ``MODELS.build`` and their optimizers by MMSeg's
``LayerDecayOptimizerConstructor`` (its ``print_log`` of every parameter is silenced).
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from mae_transfer.errors import ConfigError
from mae_transfer.recipe_diff import Recipe, init_signature, is_new_parameter

from . import backbone, neck  # noqa: F401  (register the models)
from .config import load_config
from .optimizer import MAETransferOptimizerConstructor  # noqa: F401  (registers the constructor)

# this project's config -> MMSeg config (relative to mmseg/.mim/configs)
REFERENCES = {
    "ade20k_vitb_mae": "mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py",
    "ade20k_vitb_beit": "beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py",
}
# our parameter names -> MMSeg's MAE/BEiT backbone and Feature2Pyramid names (the heads are equal)
_NAME_MAP = [
    (re.compile(r"^backbone\.net\."), "backbone."),
    (re.compile(r"^backbone\.blocks\."), "backbone.layers."),
    (re.compile(r"\.patch_embed\.proj\."), ".patch_embed.projection."),
    (re.compile(r"\.norm(\d)\."), r".ln\1."),
    (re.compile(r"\.mlp\.fc1\."), ".ffn.layers.0.0."),
    (re.compile(r"\.mlp\.fc2\."), ".ffn.layers.1."),
    (re.compile(r"^backbone\.norm\."), "backbone.ln1."),
    (re.compile(r"^neck\.pyramid\.fpn1\."), "neck.upsample_4x."),
    (re.compile(r"^neck\.pyramid\.fpn2\."), "neck.upsample_2x."),
]
SAMPLED_ITERS = (0, 1, 750, 1499, 1500, 1501, 80000, 159999)


def mmseg_config_dir() -> Path:
    import mmseg

    return Path(mmseg.__file__).resolve().parent / ".mim" / "configs"


def load_reference(name: str):
    """An MMSeg config by its path relative to ``mmseg/.mim/configs`` (or any path)."""
    from mmengine.config import Config

    path = Path(name) if Path(name).is_file() else mmseg_config_dir() / name
    if not path.is_file():
        raise ConfigError(f"MMSeg reference config '{name}' does not exist under {mmseg_config_dir()}; check the name.")
    return Config.fromfile(str(path))


def our_name_to_reference(name: str) -> str:
    for pattern, repl in _NAME_MAP:
        name = pattern.sub(repl, name)
    return name


def _build_model(model_cfg: Mapping) -> torch.nn.Module:
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    with _quiet():
        model.init_weights()
    return model


@contextlib.contextmanager
def _quiet():
    """Silence MMEngine's per-parameter logging (init and LayerDecayOptimizerConstructor)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _per_tensor(model: torch.nn.Module, optim_wrapper_cfg: Mapping, rename=lambda n: n) -> dict:
    from mmengine.optim import build_optim_wrapper

    # the wrapper type only decides AMP (recorded as train.amp); AmpOptimWrapper refuses CPUs
    cfg = {k: v for k, v in optim_wrapper_cfg.items() if k not in ("type", "loss_scale", "dtype")}
    with _quiet():
        optimizer = build_optim_wrapper(model, dict(cfg, type="OptimWrapper")).optimizer
    base_lr = optim_wrapper_cfg["optimizer"]["lr"]
    names = {id(p): n for n, p in model.named_parameters()}
    lr_wd = {names[id(p)]: (g["lr"] / base_lr, g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    tensors = {}
    for name, param in model.named_parameters():
        new = rename(name)
        init = init_signature(param) if is_new_parameter(new, "backbone.") else None
        tensors[new] = dict(shape=list(param.shape), lr_scale=lr_wd[name][0], weight_decay=lr_wd[name][1], init=init)
    return tensors


_LR_CACHE: dict[str, dict[int, float]] = {}


def lr_multipliers(param_scheduler: list, points=SAMPLED_ITERS) -> dict[int, float]:
    """The lr multiplier at sampled iterations, from MMEngine's own schedulers stepped per iteration
    (memoised per scheduler config: stepping 160k iterations takes seconds)."""
    key = repr((_plain(param_scheduler), tuple(points)))
    if key not in _LR_CACHE:
        _LR_CACHE[key] = _step_schedulers(param_scheduler, points)
    return dict(_LR_CACHE[key])


def _step_schedulers(param_scheduler: list, points) -> dict[int, float]:
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    wrapper = OptimWrapper(optimizer)
    schedulers = [PARAM_SCHEDULERS.build(dict(c), default_args=dict(optimizer=wrapper)) for c in param_scheduler]
    out = {}
    for it in range(max(points) + 1):
        if it in points:
            out[it] = round(optimizer.param_groups[0]["lr"], 10)
        for scheduler in schedulers:
            scheduler.step()
    return out


def _plain(value: Any) -> Any:
    """Config values as plain Python (ConfigDicts -> dicts, tuples -> lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _amp(cfg) -> bool:
    """Whether MMEngine trains this config in mixed precision: only an AmpOptimWrapper does it.
    A top-level ``fp16=dict(...)`` (MMSeg 0.x style) is not read by MMEngine's Runner."""
    return cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper"


def _settings(cfg, model: torch.nn.Module) -> dict[str, Any]:
    optim, head = cfg.optim_wrapper, dict(cfg.model.decode_head)
    vit = getattr(model.backbone, "net", model.backbone)
    blocks = getattr(vit, "blocks", None) or getattr(vit, "layers")
    settings = {
        "optimizer.type": optim.optimizer.type.lower(),
        "optimizer.lr": optim.optimizer.lr,
        "optimizer.weight_decay": optim.optimizer.weight_decay,
        "optimizer.betas": _plain(optim.optimizer.get("betas", (0.9, 0.999))),
        "optimizer.eps": optim.optimizer.get("eps", 1e-8),
        "optimizer.clip_grad": _plain(optim.get("clip_grad")),
        "schedule.max_iters": cfg.train_cfg.max_iters,
        "schedule.lr_multiplier": lr_multipliers(cfg.param_scheduler),
        "train.batch_per_gpu": cfg.train_dataloader.batch_size,
        "train.amp": _amp(cfg),
        "train.pipeline": _plain(cfg.train_pipeline),
        "train.sampler": _plain(cfg.train_dataloader.sampler),
        "test.pipeline": _plain(cfg.test_pipeline),
        "test.cfg": _plain(cfg.model.test_cfg),
        "input.data_preprocessor": _plain({k: v for k, v in cfg.model.data_preprocessor.items() if k != "type"}),
        "model.drop_path": [round(float(getattr(b.drop_path, "drop_prob", getattr(b.drop_path, "p", 0.0))), 6)
                            for b in blocks],
        "model.out_indices": _plain(getattr(vit, "out_indices", None) or cfg.model.backbone.get("out_indices")),
        "model.decode_head": _plain({k: v for k, v in head.items() if k != "in_channels"}),
        "model.auxiliary_head": _plain({k: v for k, v in dict(cfg.model.auxiliary_head).items() if k != "in_channels"}),
    }
    return settings


def ours(config: str, cfg_options: Mapping[str, Any] | None = None) -> Recipe:
    """This project's recipe for an MMSeg config, built with this project's code."""
    cfg = load_config(config, cfg_options)
    model_cfg = cfg.model.deepcopy()
    model_cfg.backbone.pretrained = None
    model = _build_model(model_cfg)
    tensors = _per_tensor(model, cfg.optim_wrapper, our_name_to_reference)
    settings = _settings(cfg, model)
    settings["train.init_checkpoint"] = Path(str(cfg.model.backbone.get("pretrained") or "")).name
    return Recipe(name=config, tensors=tensors, settings=settings)


def reference(name: str) -> Recipe:
    """MMSeg's recipe, built with MMSeg's own code (its MAE/BEiT backbone and layer-decay constructor)."""
    cfg = load_reference(name)
    model_cfg = cfg.model.deepcopy()
    init_checkpoint = Path(str(model_cfg.get("pretrained") or "")).name
    model_cfg.pretrained = None
    model_cfg.backbone.pop("init_cfg", None)
    model = _build_model(model_cfg)
    tensors = _per_tensor(model, cfg.optim_wrapper)
    settings = _settings(cfg, model)
    settings["train.init_checkpoint"] = init_checkpoint
    return Recipe(name=f"mmseg configs/{name}", tensors=tensors, settings=settings)
