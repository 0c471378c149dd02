"""Loading and adjusting MMSeg configs: bare names, checked ``--cfg-options``, a user's dataset, AMP."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from mmengine.config import Config, ConfigDict

from mae_transfer.configs import SEG_CONFIG_DIR, SEG_SUFFIXES, find_config_file
from mae_transfer.data import builtin_dataset
from mae_transfer.errors import ConfigError

from .checkpoint import find_last_checkpoint
from .config_check import check_overrides

CONFIG_DIR = SEG_CONFIG_DIR
ADE_SPLITS = ("training", "validation")


def resolve_config(name_or_path: str) -> Path:
    """A config file path, or a bare name (``ade20k_vitb_mae``) resolved in ``configs/seg/``."""
    return find_config_file(name_or_path, CONFIG_DIR, SEG_SUFFIXES)


def load_config(name_or_path: str, cfg_options: Mapping[str, Any] | None = None) -> Config:
    """Read a config (path or bare name) and apply checked ``--cfg-options`` overrides."""
    path = resolve_config(name_or_path)
    try:
        cfg = Config.fromfile(str(path))
    except SyntaxError as err:  # MMEngine: "There are syntax errors in config file ...: <error>"
        cause = err.__cause__ if isinstance(err.__cause__, SyntaxError) else err
        line = f"line {cause.lineno}: " if cause.lineno else ""
        raise ConfigError(f"Config file {path} is not valid Python ({line}{cause.msg}); "
                          "fix the syntax there.") from None
    if cfg_options:
        check_overrides(cfg, cfg_options)
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """One class name per non-empty line (label 1 = first line; label 0 is 'unlabelled')."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Class list {path} does not exist; give a text file with one class name per line.")
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise ConfigError(f"Class list {path} is empty; write one class name per line (label 1 first).")
    if len(set(names)) != len(names):
        raise ConfigError(f"Class list {path} repeats a name; class names must be unique.")
    return names


def _image_suffix(image_dir: Path) -> str:
    suffixes = {p.suffix.lower() for p in image_dir.iterdir() if p.is_file()}
    for suffix in (".jpg", ".png", ".jpeg"):
        if suffix in suffixes:
            return suffix
    raise ConfigError(f"No .jpg/.png images in {image_dir}; put the images there (ADE20K layout).")


def use_ade_layout_dataset(cfg: Config, data_root: str | Path, class_names: Sequence[str]) -> None:
    """Point every dataloader at an ADE20K-layout folder with ``class_names`` and size the heads.

    Layout: ``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png``,
    label 0 = unlabelled (ignored, ``reduce_zero_label``), labels 1..N = ``class_names``.
    """
    root = Path(data_root)
    for kind in ("images", "annotations"):
        for split in ADE_SPLITS:
            if not (root / kind / split).is_dir():
                raise ConfigError(f"Dataset folder {root / kind / split} is missing; --data-root must "
                                  "hold images/ and annotations/ with training/ and validation/ (ADE20K layout).")
    suffix = _image_suffix(root / "images" / "training")
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if loader is None:
            continue
        dataset = loader.dataset
        dataset.type = "BaseSegDataset"
        dataset.data_root = str(root)
        dataset.metainfo = dict(classes=tuple(class_names))
        dataset.reduce_zero_label = True
        dataset.img_suffix = suffix
        dataset.seg_map_suffix = ".png"
    for head_key in ("decode_head", "auxiliary_head"):
        heads = cfg.model.get(head_key)
        for head in heads if isinstance(heads, list) else [heads] if heads else []:
            head.num_classes = len(class_names)


def apply_builtin_dataset(cfg: Config) -> None:
    """For configs with ``builtin_dataset = 'builtin_ade'``: generate it if needed and use it."""
    name = cfg.get("builtin_dataset")
    if not name:
        return
    dataset = builtin_dataset(name, **dict(cfg.get("builtin_dataset_args") or {}))
    use_ade_layout_dataset(cfg, dataset.root, dataset.class_names)


def enable_amp(cfg: Config) -> None:
    """``--amp``: switch the optimizer wrapper to AmpOptimWrapper with a dynamic loss scale."""
    if cfg.optim_wrapper.get("type", "OptimWrapper") == "AmpOptimWrapper":
        return
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.loss_scale = "dynamic"


def enable_visualization(cfg: Config, show_dir: str | Path, interval: int = 1) -> None:
    """Draw predictions beside ground truth (MMSeg's SegLocalVisualizer) as PNGs under ``show_dir``."""
    cfg.default_hooks.visualization = ConfigDict(type="SegVisualizationHook", draw=True, interval=interval)
    cfg.visualizer = ConfigDict(type="SegLocalVisualizer", name="visualizer", save_dir=str(show_dir),
                                vis_backends=[dict(type="LocalVisBackend")])


def check_dataset_paths(cfg: Config, loader_keys: Sequence[str]) -> None:
    """Fail early, naming the folder, when a dataloader's image or annotation folder is missing."""
    for key in loader_keys:
        dataset = (cfg.get(key) or {}).get("dataset") or {}
        root = Path(dataset.get("data_root") or "")
        for prefix in (dataset.get("data_prefix") or {}).values():
            folder = root / prefix
            if not folder.is_dir():
                raise ConfigError(f"Dataset folder {folder} ({key}) does not exist; put ADE20K in "
                                  "data/ade/ADEChallengeData2016 (see README) or pass --data-root DIR "
                                  "--classes FILE for your own data.")


def prepare_config(config: str, *, cfg_options: Mapping[str, Any] | None = None, launcher: str = "none",
                   work_dir: str | None = None, data_root: str | None = None, classes: str | None = None,
                   amp: bool = False, resume: bool = False, eval_only: str | None = None,
                   show_dir: str | None = None, unsafe_load: bool = False) -> Config:
    """The config of one run, from ``tools/train_seg.py``'s arguments (see its ``--help``)."""
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    if (data_root is None) != (classes is None):
        raise ConfigError("--data-root and --classes go together: the folder (ADE20K layout) and a "
                          "text file with one class name per line.")
    if data_root is not None:
        use_ade_layout_dataset(cfg, data_root, read_class_names(classes))
    else:
        apply_builtin_dataset(cfg)
    cfg.work_dir = work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(cfg.filename).stem)
    if amp:
        enable_amp(cfg)
    if unsafe_load:
        cfg.unsafe_load = True
    if show_dir:
        enable_visualization(cfg, show_dir)
    if eval_only:
        cfg.load_from, cfg.resume = eval_only, False
        check_dataset_paths(cfg, ["test_dataloader"])
        return cfg
    check_dataset_paths(cfg, ["train_dataloader", "val_dataloader"])
    if resume:
        last = find_last_checkpoint(cfg.work_dir)
        cfg.load_from, cfg.resume = (str(last), True) if last else (cfg.get("load_from"), False)
    return cfg
