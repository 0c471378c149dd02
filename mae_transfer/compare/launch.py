"""Running the same det/seg recipe once per backbone initialisation, each into its own directory.

Initialisations are given as text (``tools/compare.py --inits``):

* ``random`` — no pretrained weights;
* ``mae`` / ``supervised`` — the built-in tiny encoders pretrained on the generated images
  (:mod:`mae_transfer.compare.builtin_inits`; pretrained on first use);
* ``beit`` — a BEiT checkpoint named by ``$MAE_TRANSFER_BEIT`` (there is no built-in BEiT
  pretraining); skipped with a message when none is set;
* ``NAME=PATH`` or ``PATH`` — any checkpoint the project's loader reads (MAE, DeiT/timm, BEiT, ...);
  DINOv2 and SAM checkpoints (e.g. ``dinov2=PATH sam=PATH``) also switch the run to their
  architecture (:mod:`.arch`), the recipe otherwise unchanged.

Each run is a subprocess ``python -m mae_transfer.cli.train_det`` / ``train_seg`` (the frameworks' own
progress logs and ETA stream to the console) whose wall time is stored in ``compare_run.json``.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mae_transfer.errors import ComparisonError
from mae_transfer.utils.logger import get_logger
from mae_transfer.utils.run_dir import is_local

from .arch import overrides_for_checkpoint
from .runs import RUN_INFO, RunRecord, read_run

logger = get_logger(__name__)

# The folder that holds the mae_transfer package: the runs import the same package as this process.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds the mae_transfer package
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


def det_command(config: str, run_dir: Path, init: Init, opts: Sequence[str] = ()) -> list[str]:
    """``mae_transfer.cli.train_det`` command for one run (weights through ``MODEL.VIT.WEIGHTS``)."""
    return [sys.executable, "-m", "mae_transfer.cli.train_det", "--config", config,
            "OUTPUT_DIR", str(run_dir), "MODEL.VIT.WEIGHTS", init.weights or "", *init.det_opts, *opts]


def seg_command(config: str, run_dir: Path, init: Init, opts: Sequence[str] = ()) -> list[str]:
    """``mae_transfer.cli.train_seg`` command for one run (weights through ``model.backbone.pretrained``)."""
    options = ([f"model.backbone.pretrained={init.weights}"] if init.weights else []) + list(init.seg_opts) + list(opts)
    return [sys.executable, "-m", "mae_transfer.cli.train_seg", config, "--work-dir", str(run_dir),
            *(["--cfg-options", *options] if options else [])]


def child_cpu_seconds() -> float:
    """User + system CPU time of finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(task: str, command: list[str], run_dir: Path, init: Init, reuse: bool = True) -> RunRecord:
    """Run one training subprocess (output streamed), record its time, read its results.

    With ``reuse`` a directory whose ``compare_run.json`` says it finished (same command) is read
    instead of trained again, so an interrupted comparison continues where it stopped.
    """
    info_path = run_dir / RUN_INFO
    if reuse and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("returncode") == 0 and info.get("command") == command[1:]:
            logger.info("%s %s: finished run found in %s, not training again", task, init.name, run_dir)
            return read_run(run_dir)
    _fresh_run_dir(run_dir)
    info = {"init": init.name, "task": task, "weights": init.weights, "command": command[1:], "returncode": None}
    info_path.write_text(json.dumps(info, indent=1) + "\n")  # marks the directory as ours
    logger.info("%s %s: %s", task, init.name, " ".join(command[1:]))
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))}
    start, cpu = time.perf_counter(), child_cpu_seconds()
    returncode = subprocess.call(command, env=env)
    info.update(returncode=returncode, wall_time_s=round(time.perf_counter() - start, 1),
                cpu_time_s=round(child_cpu_seconds() - cpu, 1))
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    if returncode != 0:
        raise ComparisonError(f"{task} run for {init.name!r} failed (exit {returncode}); its log is in {run_dir}.")
    return read_run(run_dir)


def _fresh_run_dir(run_dir: Path) -> None:
    """Empty ``run_dir`` for a new run: only directories an earlier comparison created are removed."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not (run_dir / RUN_INFO).is_file():
            raise ComparisonError(f"{run_dir} holds files that tools/compare.py did not write; choose another "
                                  "--output (or move that directory away).")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def run_comparison(inits: Sequence[Init], out_dir: Path, tasks: Sequence[str] = TASKS,
                   det_config: str = "demo_vit_tiny", seg_config: str = "demo_vit_tiny",
                   det_opts: Sequence[str] = (), seg_opts: Sequence[str] = (), reuse: bool = True,
                   on_start=None) -> list[RunRecord]:
    """Train ``tasks`` for every init into ``out_dir/<task>_<init>``; returns the run records.

    ``on_start(task, init, index, total)`` is called before each run (progress banners).
    """
    jobs = [(task, init) for task in tasks for init in inits]
    records = []
    for index, (task, init) in enumerate(jobs):
        run_dir = out_dir / f"{task}_{init.name}"
        if on_start:
            on_start(task, init, index, len(jobs))
        if task == "det":
            command = det_command(det_config, run_dir, init, det_opts)
        elif task == "seg":
            command = seg_command(seg_config, run_dir, init, seg_opts)
        else:
            raise ComparisonError(f"unknown task {task!r}; use det and/or seg.")
        records.append(run_one(task, command, run_dir, init, reuse=reuse))
    return records
