"""Running the same det/seg recipe once per backbone initialisation, each into its own directory.

Initialisations are given as text (``tools/compare.py --inits``):

* ``random`` — no pretrained weights;
* ``mae`` / ``beit_style`` / ``supervised`` — the built-in tiny encoders pretrained on the generated
  pool (:mod:`mae_transfer.compare.builtin_inits`; pretrained on first use);
* ``beit`` — a real BEiT checkpoint named by ``$MAE_TRANSFER_BEIT`` (the built-in ``beit_style`` is
  BEiT's objective with a k-means tokenizer, not BEiT's weights); skipped with a message when none
  is set;
* ``NAME=PATH`` or ``PATH`` — any checkpoint the project's loader reads (MAE, DeiT/timm, BEiT, ...);
  DINOv2 and SAM checkpoints (e.g. ``dinov2=PATH sam=PATH``) also switch the run to their
  architecture (:mod:`.arch`), the recipe otherwise unchanged.

Each run is a subprocess ``python -m mae_transfer.cli.train_det`` / ``train_seg`` (the frameworks' own
progress logs and ETA stream to the console) whose wall time is stored in ``compare_run.json``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mae_transfer.errors import ComparisonError
from mae_transfer.utils.logger import get_logger
from mae_transfer.utils.run_dir import is_local

from .arch import overrides_for_checkpoint
from .jobs import RunSpec, execute
from .runs import RunRecord

logger = get_logger(__name__)

BUILTIN_INITS = ("mae", "beit_style", "supervised", "beit", "random")
BEIT_ENV = "MAE_TRANSFER_BEIT"
TASKS = ("det", "seg")


@dataclass(frozen=True)
class Init:
    """A backbone initialisation: a display name and a checkpoint (``None``: random init)."""
    name: str
    weights: str | None
    det_opts: tuple[str, ...] = ()  # architecture overrides (DINOv2 / SAM), before the user's
    seg_opts: tuple[str, ...] = ()


def parse_init(text: str) -> tuple[str, str | None]:
    """``"mae"`` -> ("mae", None: built-in); ``"x=PATH"`` -> ("x", PATH); ``"PATH"`` -> (stem, PATH)."""
    if "=" in text:
        name, path = text.split("=", 1)
        return name, path
    if text in BUILTIN_INITS:
        return text, None
    path = Path(text)
    if path.suffix in (".pth", ".pt", ".safetensors", ".pkl", ".bin") or path.exists() or "/" in text:
        stem = path.parent.name if path.stem.startswith(("checkpoint", "model_final")) else path.stem
        return stem or text, text
    raise ComparisonError(f"initialisation {text!r} is neither a built-in ({', '.join(BUILTIN_INITS)}), "
                          "NAME=PATH nor a checkpoint path; fix --inits.")


def resolve_inits(texts: Sequence[str], pretrain_dir: Path, pretrain_missing: bool = True) -> list[Init]:
    """Turn ``--inits`` entries into :class:`Init`; built-ins are pretrained into ``pretrain_dir``
    when missing (``pretrain_missing``), ``beit`` without ``$MAE_TRANSFER_BEIT`` is skipped."""
    from .builtin_inits import builtin_checkpoint

    inits: list[Init] = []
    for text in texts:
        name, path = parse_init(text)
        if path is None and name == "random":
            inits.append(Init("random", None))
            continue
        if path is None and name == "beit":
            path = os.environ.get(BEIT_ENV)
            if not path:
                logger.warning("beit: no BEiT checkpoint available (there is no built-in BEiT pretraining); "
                               "skipping it. Set %s=PATH or pass beit=PATH to include it.", BEIT_ENV)
                continue
        elif path is None:
            path = str(builtin_checkpoint(name, pretrain_dir, create=pretrain_missing))
        if is_local(path) and not Path(path).is_file():
            raise ComparisonError(f"checkpoint {path} for initialisation {name!r} does not exist; fix the path.")
        preset, det_opts, seg_opts = overrides_for_checkpoint(path) if Path(path).is_file() else (None, [], [])
        if preset:
            logger.info("%s: %s checkpoint, runs use that architecture", name, preset)
        inits.append(Init(name, path, tuple(det_opts), tuple(seg_opts)))
    return inits


def det_command(config: str, run_dir: Path, init: Init, opts: Sequence[str] = (), seed: int | None = None,
                freeze: str | None = None) -> list[str]:
    """``mae_transfer.cli.train_det`` command for one run (weights through ``MODEL.VIT.WEIGHTS``;
    ``seed`` -> ``SEED``, ``freeze`` -> ``MODEL.VIT.FREEZE``; the user's ``opts`` come last)."""
    extra = (["SEED", str(seed)] if seed is not None else []) + (["MODEL.VIT.FREEZE", freeze] if freeze else [])
    return [sys.executable, "-m", "mae_transfer.cli.train_det", "--config", config,
            "OUTPUT_DIR", str(run_dir), "MODEL.VIT.WEIGHTS", init.weights or "", *init.det_opts, *extra, *opts]


def seg_command(config: str, run_dir: Path, init: Init, opts: Sequence[str] = (), seed: int | None = None,
                freeze: str | None = None) -> list[str]:
    """``mae_transfer.cli.train_seg`` command for one run (weights through ``model.backbone.pretrained``;
    ``seed`` -> ``randomness.seed``, ``freeze`` -> ``optim_wrapper.paramwise_cfg.freeze``)."""
    options = ([f"model.backbone.pretrained={init.weights}"] if init.weights else []) + list(init.seg_opts)
    options += [f"randomness.seed={seed}"] if seed is not None else []
    options += [f"optim_wrapper.paramwise_cfg.freeze={freeze}"] if freeze else []
    options += list(opts)
    return [sys.executable, "-m", "mae_transfer.cli.train_seg", config, "--work-dir", str(run_dir),
            *(["--cfg-options", *options] if options else [])]


def run_one(task: str, command: list[str], run_dir: Path, init: Init, reuse: bool = True,
            seed: int | None = None) -> RunRecord:
    """Run one training subprocess (output streamed), record its time, read its results.

    With ``reuse`` a directory whose ``compare_run.json`` says it finished (same command) is read
    instead of trained again, so an interrupted comparison continues where it stopped.
    """
    return execute([RunSpec(task, init.name, init.weights, run_dir, command, seed)], reuse=reuse)[0]


def run_dir_name(task: str, init: Init, seed: int | None) -> str:
    """``det_mae`` (no seed given: one run, the config's seed) or ``det_mae_seed1``."""
    return f"{task}_{init.name}" + ("" if seed is None else f"_seed{seed}")


def plan_runs(inits: Sequence[Init], out_dir: Path, tasks: Sequence[str] = TASKS,
              det_config: str = "demo_vit_tiny", seg_config: str = "demo_vit_tiny",
              det_opts: Sequence[str] = (), seg_opts: Sequence[str] = (),
              seeds: Sequence[int] | None = None, freeze: str | None = None) -> list[RunSpec]:
    """One :class:`RunSpec` per (task, init, seed), task-major, into ``out_dir/<task>_<init>[_seed<k>]``.

    ``freeze`` (a :mod:`mae_transfer.optim.partial` policy) makes every run partial fine-tuning.
    """
    specs = []
    protocol = "partial" if freeze and freeze != "full" else "finetune"
    for task in tasks:
        if task not in TASKS:
            raise ComparisonError(f"unknown task {task!r}; use det and/or seg.")
        build = det_command if task == "det" else seg_command
        config, opts = (det_config, det_opts) if task == "det" else (seg_config, seg_opts)
        for init in inits:
            for seed in (seeds if seeds is not None else [None]):
                run_dir = out_dir / run_dir_name(task, init, seed)
                command = build(config, run_dir, init, opts, seed=seed, freeze=freeze)
                specs.append(RunSpec(task, init.name, init.weights, run_dir, command, seed, protocol))
    return specs


def run_comparison(inits: Sequence[Init], out_dir: Path, tasks: Sequence[str] = TASKS,
                   det_config: str = "demo_vit_tiny", seg_config: str = "demo_vit_tiny",
                   det_opts: Sequence[str] = (), seg_opts: Sequence[str] = (), reuse: bool = True,
                   on_start=None, seeds: Sequence[int] | None = None, freeze: str | None = None,
                   jobs: int = 1) -> list[RunRecord]:
    """Train ``tasks`` for every init (and seed) into ``out_dir``; returns the run records.

    ``seeds``: fine-tuning seeds (Detectron2 ``SEED``, MMEngine ``randomness.seed``), one run each;
    None runs once with the config's seed. ``jobs``: runs at once (see :mod:`.jobs`).
    ``on_start(spec, index, total)`` is called before each run that trains (progress banners).
    """
    specs = plan_runs(inits, out_dir, tasks, det_config, seg_config, det_opts, seg_opts, seeds, freeze)
    return execute(specs, reuse=reuse, jobs=jobs, on_start=on_start)
