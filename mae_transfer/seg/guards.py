"""Checks that turn bad segmentation inputs into one clear sentence, before a run starts if possible.

* :func:`check_inputs` (``tools/train_seg.py``, before the Runner is built or any file written):
  the launcher's environment, every component's keys (misspellings in config files), checkpoint
  paths (read safely once), image/label pairs of ADE20K-layout folders, and an earlier run's
  checkpoints in the work dir (never overwritten by a new run); it also passes ``--unsafe-load`` on
  to the backbone's pretrained weights, adds the per-sample checks below to the pipelines and the
  checkpoint-architecture check to the hooks.
* ``CheckedLoadImageFromFile`` / ``CheckSegLabels`` (pipeline transforms): an undecodable image
  stops the run naming the file (or is skipped and counted with ``--skip-unreadable-images``); a
  label map whose size differs from its image or with classes out of range stops the run.
* ``CheckpointFitHook``: ``load_from`` / ``--eval-only`` / ``--resume`` checkpoints of another
  architecture are refused instead of being loaded key by key with warnings.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS, TRANSFORMS

from mae_transfer.checkpoints import read_checkpoint
from mae_transfer.errors import UserError
from mae_transfer.utils.logger import get_logger
from mae_transfer.utils.weights_fit import check_weights_fit

logger = get_logger(__name__)

_LAUNCHER_ENV = {"pytorch": ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"),
                 "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST")}
_LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def check_inputs(cfg: Config, *, eval_only: bool = False, resume: bool = False,
                 skip_unreadable: bool = False) -> None:
    """Check (and arm the checks of) one run's config; raises :class:`UserError`."""
    check_launcher(cfg.get("launcher", "none"))
    check_component_keys(cfg)
    _pass_unsafe_load_to_backbone(cfg)
    check_checkpoint_paths(cfg, eval_only=eval_only)
    loaders = ["test_dataloader"] if eval_only else ["train_dataloader", "val_dataloader"]
    for key in loaders:
        for dataset in _datasets((cfg.get(key) or {}).get("dataset")):
            check_image_label_pairs(dataset, key)
    add_sample_checks(cfg, skip_unreadable=skip_unreadable)
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(isinstance(h, Mapping) and h.get("type") == "CheckpointFitHook" for h in hooks):
        cfg.custom_hooks = hooks + [dict(type="CheckpointFitHook")]
    if not eval_only and not resume:
        check_work_dir(cfg.work_dir)


def check_launcher(launcher: str) -> None:
    missing = [name for name in _LAUNCHER_ENV.get(launcher, ()) if name not in os.environ]
    if missing:
        how = ("start it with python -m torch.distributed.run --nproc_per_node N tools/train_seg.py ... "
               "--launcher pytorch" if launcher == "pytorch" else "start it with srun")
        raise UserError(f"--launcher {launcher} needs the environment variable {missing[0]}, which is not set; "
                        f"{how} (or use --launcher none for one process).")


def check_work_dir(work_dir: str | os.PathLike) -> None:
    """A new training run must not overwrite the checkpoints of an earlier run in ``work_dir``."""
    pointer = Path(work_dir) / "last_checkpoint"
    if pointer.is_file():
        last = Path(pointer.read_text().strip()).name
        raise UserError(f"Work dir {work_dir} already holds a run (last checkpoint {last}); pass --resume to "
                        "continue it, or choose another --work-dir (or delete this one) to start over.")


def _backbone(cfg: Config) -> Mapping | None:
    backbone = (cfg.get("model") or {}).get("backbone")
    return backbone if isinstance(backbone, Mapping) and backbone.get("type") == "MAETransferViT" else None


def _pass_unsafe_load_to_backbone(cfg: Config) -> None:
    backbone = _backbone(cfg)
    if cfg.get("unsafe_load") and backbone is not None:
        backbone["unsafe_load"] = True


def _is_local(path: Any) -> bool:
    return isinstance(path, str) and bool(path) and "://" not in path


def check_checkpoint_paths(cfg: Config, *, eval_only: bool) -> None:
    """The backbone's pretrained checkpoint and ``load_from`` exist and read safely (once, here)."""
    backbone = _backbone(cfg) or {}
    pretrained = backbone.get("pretrained") or (backbone.get("init_cfg") or {}).get("checkpoint")
    if _is_local(pretrained) and not Path(pretrained).is_file():
        raise UserError(f"Pretrained backbone checkpoint {pretrained} (model.backbone.pretrained) does not exist; "
                        "check the path.")
    load_from = cfg.get("load_from")
    if _is_local(load_from) and not Path(load_from).is_file():
        option = "--eval-only" if eval_only else "load_from"
        raise UserError(f"Checkpoint {load_from} ({option}) does not exist; check the path.")
    for path in (pretrained, load_from):  # truncated or code-running files: refused before the run starts
        if _is_local(path):
            read_checkpoint(path, unsafe=bool(cfg.get("unsafe_load")))


# ----------------------------------------------------------------------------- component keys

# Keys MMEngine reads from a component dict itself, before the class is built.
_CONSUMED_BEFORE_BUILD = {"optim_wrapper": {"paramwise_cfg", "constructor"}}


def _components(node: Any, path: str) -> Iterator[tuple[str, Mapping]]:
    """(dotted path, dict) of every dict with a ``type`` in a config tree."""
    if isinstance(node, Mapping):
        if "type" in node:
            yield path, node
        for key, value in node.items():
            yield from _components(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _components(value, f"{path}.{index}")


def check_component_keys(cfg: Config) -> None:
    """Every key of a component in the config is an argument of its class (misspellings in config
    files would otherwise surface as a TypeError deep inside the Runner, or be silently ignored)."""
    from .config import _constructor_args, _registered_class  # the same rule --cfg-options uses

    for path, node in _components(cfg._cfg_dict.to_dict(), ""):
        cls = _registered_class(node.get("type"))
        if cls is None or path.rsplit(".", 1)[-1].endswith("_cfg"):
            continue  # norm_cfg/act_cfg/init_cfg... are read by mmcv's builders, which take extra keys
        accepted, open_ended = _constructor_args(cls)
        if open_ended:
            continue
        accepted |= {"type", "_scope_"} | _CONSUMED_BEFORE_BUILD.get(path, set())
        for key in node:
            if key not in accepted:
                close = difflib.get_close_matches(key, sorted(accepted), n=1)
                hint = (f"did you mean '{close[0]}'?" if close
                        else f"{cls.__name__} accepts {', '.join(sorted(accepted))}.")
                raise UserError(f"Unknown key '{key}' in {path} ({cls.__name__}) of config {cfg.filename}; {hint}")


# ----------------------------------------------------------------------------- ADE20K-layout folders

def _datasets(dataset: Any) -> Iterator[Mapping]:
    """A dataloader's dataset config and the ones it wraps (RepeatDataset, ConcatDataset)."""
    if not isinstance(dataset, Mapping):
        return
    yield dataset
    yield from _datasets(dataset.get("dataset"))
    for inner in dataset.get("datasets") or []:
        yield from _datasets(inner)


def check_image_label_pairs(dataset: Mapping, loader: str) -> None:
    """Every image of a folder-based dataset has its label map (same relative name, label suffix)."""
    prefix = dataset.get("data_prefix") or {}
    if not prefix.get("img_path") or not prefix.get("seg_map_path") or dataset.get("ann_file"):
        return
    root = Path(dataset.get("data_root") or "")
    image_dir, label_dir = root / prefix["img_path"], root / prefix["seg_map_path"]
    if not image_dir.is_dir() or not label_dir.is_dir():
        return  # reported by mae_transfer.seg.config.check_dataset_paths
    img_suffix, seg_suffix = dataset.get("img_suffix", ".jpg"), dataset.get("seg_map_suffix", ".png")
    images = sorted(p for p in image_dir.rglob(f"*{img_suffix}") if p.is_file())
    if not images:
        raise UserError(f"No *{img_suffix} images in {image_dir} ({loader}); put the images there or set the "
                        "dataset's img_suffix.")
    def label_of(image: Path) -> Path:
        return (label_dir / image.relative_to(image_dir)).with_name(image.name[: -len(img_suffix)] + seg_suffix)

    unlabelled = [p for p in images if not label_of(p).is_file()]
    if unlabelled:
        first = unlabelled[0]
        expected = label_of(first)
        raise UserError(f"{len(unlabelled)} of {len(images)} images in {image_dir} ({loader}) have no label map "
                        f"(first: {first.name}, expected {expected}); add the label maps or remove those images.")


# ----------------------------------------------------------------------------- per-sample checks

def add_sample_checks(cfg: Config, *, skip_unreadable: bool) -> None:
    """Swap in ``CheckedLoadImageFromFile`` and add ``CheckSegLabels`` after ``LoadAnnotations``."""
    heads = (cfg.get("model") or {}).get("decode_head")
    head = heads[0] if isinstance(heads, list) else heads
    num_classes = (head or {}).get("num_classes")
    for key in _LOADERS:
        for dataset in _datasets((cfg.get(key) or {}).get("dataset")):
            pipeline = dataset.get("pipeline")
            if not isinstance(pipeline, list) or any(t.get("type") == "CheckSegLabels" for t in pipeline):
                continue  # not a list, or already checked (the same dict reached through two loaders)
            checked = []
            for transform in pipeline:
                if transform.get("type") == "LoadImageFromFile":
                    transform = dict(transform, type="CheckedLoadImageFromFile",
                                     skip=skip_unreadable and key == "train_dataloader")
                checked.append(transform)
                if transform.get("type") == "LoadAnnotations" and num_classes:
                    checked.append(dict(type="CheckSegLabels", num_classes=num_classes))
            dataset["pipeline"] = checked


@TRANSFORMS.register_module()
class CheckedLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that names an undecodable file in one sentence, or skips it (``skip``).

    A skipped training image makes MMEngine's dataset draw another one; the count is logged.
    """

    skipped = 0  # per process

    def __init__(self, skip: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.skip = skip

    def transform(self, results: dict) -> dict | None:
        try:
            return super().transform(results)
        except Exception as err:  # noqa: BLE001  (mmcv raises what the decoder raises, or AssertionError)
            reason = " ".join(str(err).split()) or type(err).__name__
            if not self.skip:
                raise UserError(f"Image file {results.get('img_path')} cannot be read ({reason}); replace it, or "
                                "pass --skip-unreadable-images to skip such training images.") from None
            CheckedLoadImageFromFile.skipped += 1
            logger.warning("Skipped unreadable image %s (%s); %d skipped so far in this process.",
                           results.get("img_path"), reason, CheckedLoadImageFromFile.skipped)
            return None


@TRANSFORMS.register_module()
class CheckSegLabels(BaseTransform):
    """Stop on a label map whose size differs from its image or whose values are out of range.

    Valid values after loading: ``0 .. num_classes - 1`` and ``ignore_index`` (255; label 0 becomes
    255 with ``reduce_zero_label``).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def transform(self, results: dict) -> dict:
        label, path = results["gt_seg_map"], results.get("seg_map_path")
        image_hw = tuple(results.get("ori_shape") or label.shape[:2])
        if tuple(label.shape[:2]) != image_hw:
            raise UserError(f"Label map {path} is {label.shape[1]}x{label.shape[0]} pixels but its image "
                            f"{results.get('img_path')} is {image_hw[1]}x{image_hw[0]}; a label map must have "
                            "its image's size.")
        valid = (label < self.num_classes) | (label == self.ignore_index)
        if not valid.all():
            values = np.unique(label[~valid])
            shift = 1 if results.get("reduce_zero_label") else 0
            raw = ", ".join(str(int(v) + shift) for v in values[:5])
            allowed = f"1..{self.num_classes}, 0 = unlabelled" if shift else f"0..{self.num_classes - 1}"
            raise UserError(f"Label map {path} contains class id {raw} but the dataset has {self.num_classes} "
                            f"classes (ids {allowed}); fix the file or the class list (--classes).")
        return results


# ----------------------------------------------------------------------------- checkpoint architecture

@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Refuse ``load_from`` / ``--eval-only`` / ``--resume`` checkpoints of another architecture."""

    priority = "VERY_HIGH"

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = checkpoint.get("state_dict", checkpoint)
        check_weights_fit(model.state_dict(), state, filename=str(runner._load_from), option="load_from",
                          backbone_option="model.backbone.pretrained",
                          config_hint="use the config the checkpoint was trained with")
