"""Detectron2 (yacs) config keys for plain-ViT backbones, and config loading with clear errors.

``add_vit_config(cfg)`` adds the keys; ``vit_kwargs_from_cfg`` / ``pyramid_kwargs_from_cfg`` are
the ONE place where ``MODEL.VIT.*`` / ``MODEL.PYRAMID.*`` become keyword arguments of
``mae_transfer.models``. ``None`` means "keep the preset's value" (``MODEL.VIT.NAME``).
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from mae_transfer.configs import DET_CONFIG_DIR, DET_SUFFIXES, find_config_file
from mae_transfer.errors import ConfigError, UserError

CONFIG_DIR = DET_CONFIG_DIR

# MODEL.VIT key -> create_vit keyword. Keys set to None in the config are not passed.
_VIT_KWARGS = {
    "PATCH_SIZE": "patch_size",
    "IMG_SIZE": "img_size",
    "PRETRAIN_IMG_SIZE": "pretrain_img_size",
    "EMBED_DIM": "embed_dim",
    "DEPTH": "depth",
    "NUM_HEADS": "num_heads",
    "MLP_RATIO": "mlp_ratio",
    "DROP_PATH": "drop_path",
    "WINDOW_SIZE": "window_size",
    "GLOBAL_BLOCKS": "global_blocks",
    "REL_POS": "rel_pos",
    "USE_ABS_POS": "use_abs_pos",
    "USE_CLS_TOKEN": "use_cls_token",
    "LAYER_SCALE": "layer_scale",
    "OUT_INDICES": "out_indices",
    "GRAD_CHECKPOINTING": "grad_checkpointing",
    "FEATURE_STRIDE": "feature_stride",
    "ATTN_IMPL": "attn_impl",
}


def add_vit_config(cfg: CN) -> CN:
    """Add ``MODEL.VIT``, ``MODEL.PYRAMID``, ``SOLVER.LAYER_DECAY`` etc. to a Detectron2 config.

    ``None`` keeps the value of the ``MODEL.VIT.NAME`` preset (e.g. BEiT's q/v bias, layer scale
    and no absolute position embedding); configs/det/Base-ViTDet-MaskRCNN.yaml sets the ViTDet
    layout (14x14 windows, 4 global blocks, decomposed relative positions, drop path 0.1).
    Detectron2's own keys keep their defaults except ``MODEL.ROI_HEADS.NUM_CLASSES`` (0 = auto).
    """
    cfg.MODEL.UNSAFE_LOAD = False  # allow MODEL.WEIGHTS / MODEL.VIT.WEIGHTS pickles that run code
    vit = cfg.MODEL.VIT = CN()
    vit.NAME = "vit_base_patch16"  # a mae_transfer.models preset
    vit.WEIGHTS = ""  # pretrained backbone checkpoint (MAE, DeiT/timm, BEiT, MoCo v3, ...)
    vit.FREEZE = "full"  # "full" | "last_k_blocks:K" | "frozen_backbone" | "linear_probe"
    vit.IMG_SIZE = 1024
    vit.PRETRAIN_IMG_SIZE = None
    vit.PATCH_SIZE = None
    vit.EMBED_DIM = None
    vit.DEPTH = None
    vit.NUM_HEADS = None
    vit.MLP_RATIO = None
    vit.DROP_PATH = None  # the base config sets ViTDet's 0.1
    vit.WINDOW_SIZE = None  # 0 = global attention everywhere; the base config sets 14
    vit.GLOBAL_BLOCKS = None  # 0-based ids of global-attention blocks (ViTDet: last of each quarter)
    vit.REL_POS = None  # "" | "decomposed" (ViTDet, the base config) | "beit" | "beit_shared"
    vit.USE_ABS_POS = None
    vit.USE_CLS_TOKEN = None  # None = only with global attention everywhere
    vit.LAYER_SCALE = None
    vit.OUT_INDICES = None  # blocks whose outputs feed the pyramid; None = last block
    vit.GRAD_CHECKPOINTING = False
    vit.FEATURE_STRIDE = None  # patch-14 ViTs under the stride-16 pyramid: 16 (input resized by 14/16)
    vit.ATTN_IMPL = None  # None = "sdpa" | "auto" (flex attention on CUDA) | "flex"

    pyr = cfg.MODEL.PYRAMID = CN()
    pyr.SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)  # strides 4, 8, 16, 32 from the stride-16 ViT map
    pyr.OUT_CHANNELS = 256  # simple pyramid only; the multi-level one feeds Detectron2's FPN
    pyr.NORM = "LN"  # "LN" | "BN" | "SyncBN" (SyncBN needs GPUs)
    pyr.SQUARE_PAD = 1024  # pad batches to this square size (ViTDet); 0 = off

    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 0  # 0 = from the training set (Detectron2's default is 80)

    cfg.SOLVER.OPTIMIZER = "SGD"  # "SGD" (Detectron2's) | "ADAMW"
    cfg.SOLVER.BETAS = (0.9, 0.999)
    cfg.SOLVER.LAYER_DECAY = 1.0  # lr scale decay ** (num_layers + 1 - layer_id); 1.0 = off
    # DDP gradients all-reduced in fp16 (Detectron2's create_ddp_model(fp16_compression=True), as
    # ViTDet's LazyConfigs set train.ddp.fp16_compression=True); only acts with several processes
    cfg.SOLVER.FP16_COMPRESSION = False
    # Which tensors get no weight decay (mae_transfer.optim.layer_decay): "vitdet" (Detectron2's
    # ViTDet configs: torch.nn norm layers and pos_embed), "beit" or "mae".
    cfg.SOLVER.WEIGHT_DECAY_RULE = "vitdet"

    lsj = cfg.INPUT.LSJ = CN()
    lsj.ENABLED = False  # large-scale jitter replaces ResizeShortestEdge when enabled
    lsj.IMAGE_SIZE = 1024
    lsj.MIN_SCALE = 0.1
    lsj.MAX_SCALE = 2.0
    return add_guard_config(cfg)  # DATALOADER.CHECK_DATASETS / SKIP_UNREADABLE_IMAGES


def add_guard_config(cfg: CN) -> CN:
    """Config keys of the input checks (defaults: check everything, stop on the first problem)."""
    cfg.DATALOADER.CHECK_DATASETS = True  # validate COCO json + image files before training
    cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = False  # True: skip undecodable images, logging a count
    return cfg


def vit_kwargs_from_cfg(cfg: CN) -> dict[str, Any]:
    """``MODEL.VIT.*`` -> keyword arguments of ``mae_transfer.models.create_vit``."""
    kwargs = {}
    for key, name in _VIT_KWARGS.items():
        value = cfg.MODEL.VIT[key]
        if value is None:
            continue
        if isinstance(value, list):
            value = tuple(value)
        if key == "REL_POS" and value == "":
            value = None
        kwargs[name] = value
    return kwargs


def pyramid_kwargs_from_cfg(cfg: CN) -> dict[str, Any]:
    """``MODEL.PYRAMID.*`` -> keyword arguments shared by both pyramids."""
    return {"scale_factors": tuple(cfg.MODEL.PYRAMID.SCALE_FACTORS), "norm": cfg.MODEL.PYRAMID.NORM}


def get_det_cfg() -> CN:
    """Detectron2's default config plus this project's keys."""
    return add_vit_config(get_cfg())


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A path as given, or a bare name (``coco_vitb_mae`` / ``coco_vitb_mae.yaml``) in configs/det."""
    return find_config_file(name, CONFIG_DIR, DET_SUFFIXES)


def _all_keys(node: CN, prefix: str = "") -> Iterable[str]:
    for key, value in node.items():
        full = f"{prefix}{key}"
        yield full
        if isinstance(value, CN):
            yield from _all_keys(value, f"{full}.")


def _unknown_key_error(cfg: CN, err: Exception, source: str) -> ConfigError:
    """Turn yacs' "Non-existent config key: A.B" into one sentence with the closest known key."""
    text = str(err.args[0]) if err.args else str(err)
    key = text.rsplit(":", 1)[-1].strip()
    close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "check the spelling against configs/det/."
    return ConfigError(f"Unknown config key '{key}' in {source}; {hint}")


def type_mismatch_error(err: ValueError, source: str) -> UserError:
    """yacs' "Type mismatch (<class 'int'> vs. <class 'str'>) with values (300 vs. abc) for config key: K"."""
    found = re.search(r"\(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) for config key: (\S+)",
                      str(err))
    if not found:
        return UserError(f"Bad config value in {source} ({err}); give a value of the key's type.")
    want, _, default, given, key = found.groups()
    return UserError(f"Config key {key} in {source} expects a {want} (like {default}), not '{given}'; "
                     "give a value of that type.")


def _yaml_syntax_error(err: yaml.YAMLError, path: Path) -> ConfigError:
    """PyYAML's multi-line report as one sentence with the line number."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return ConfigError(f"Config file {path} is not valid YAML ({where}: {problem}); fix the syntax there.")


def load_config(config: str | os.PathLike | None, opts: list[str] | None = None) -> CN:
    """Project defaults, then a config file (with ``_BASE_``), then ``KEY VALUE`` overrides."""
    cfg = get_det_cfg()
    if config:
        path = resolve_config_path(config)
        try:
            cfg.merge_from_file(str(path))
        except KeyError as err:
            raise _unknown_key_error(cfg, err, str(path)) from None
        except ValueError as err:
            raise type_mismatch_error(err, str(path)) from None
        except yaml.YAMLError as err:
            raise _yaml_syntax_error(err, path) from None
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"Overrides must be KEY VALUE pairs; got an odd number: {' '.join(opts)}.")
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, AssertionError) as err:
            raise _unknown_key_error(cfg, err, "the command-line overrides") from None
        except ValueError as err:
            raise type_mismatch_error(err, "the command-line overrides") from None
    return cfg
