"""Executing fine-tuning runs as subprocesses: one at a time (output streamed) or several at once.

A :class:`RunSpec` is one training command with its run directory. :func:`execute` runs a list of
them and returns their :class:`~mae_transfer.compare.runs.RunRecord` in the same order:

* a directory whose ``compare_run.json`` says it finished with the same command is read, not
  trained again (an interrupted comparison continues where it stopped);
* ``jobs=1`` streams each run's console output (the frameworks' own iteration / loss / ETA lines);
* ``jobs=N`` keeps N runs going, each with ``cores // N`` OpenMP threads and its console output in
  ``<run_dir>/console.log``; a progress line per running job (iteration, ETA) is printed every
  ``report_every`` seconds. Meant for small models whose layers do not keep several threads busy
  (not benchmarked against one run at a time).
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mae_transfer.errors import ComparisonError
from mae_transfer.utils.logger import get_logger

from .runs import RUN_INFO, RunRecord, read_run
from .stages import clock

logger = get_logger(__name__)

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds the mae_transfer package
CONSOLE_LOG = "console.log"
_ETA = re.compile(r"eta: (\S+)")
_ITER = re.compile(r"iter: (\d+)|Iter\(train\) \[\s*(\d+)/(\d+)\]")


@dataclass(frozen=True)
class RunSpec:
    """One training run: ``task`` ("det"/"seg"), the init's name and weights, its directory and
    command (``[python, -m, module, ...]``), the fine-tuning ``seed`` and the ``protocol``."""
    task: str
    init: str
    weights: str | None
    run_dir: Path
    command: list[str]
    seed: int | None = None
    protocol: str = "finetune"

    @property
    def label(self) -> str:
        return f"{self.task} {self.init}" + (f" seed {self.seed}" if self.seed is not None else "")


@dataclass
class _Running:
    spec: RunSpec
    process: subprocess.Popen
    info: dict
    start: float
    log: object = field(default=None)


def _finished_record(spec: RunSpec, reuse: bool) -> RunRecord | None:
    """The record of an earlier finished run of exactly this command, if ``reuse``."""
    info_path = spec.run_dir / RUN_INFO
    if not (reuse and info_path.is_file()):
        return None
    info = json.loads(info_path.read_text())
    if info.get("returncode") == 0 and info.get("command") == spec.command[1:]:
        logger.info("%s: finished run found in %s, not training again", spec.label, spec.run_dir)
        return read_run(spec.run_dir)
    return None


def _fresh_run_dir(run_dir: Path) -> None:
    """Empty ``run_dir`` for a new run: only directories an earlier comparison created are removed."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not (run_dir / RUN_INFO).is_file():
            raise ComparisonError(f"{run_dir} holds files that tools/compare.py did not write; choose another "
                                  "--output (or move that directory away).")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _child_env(threads: int | None) -> dict[str, str]:
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _start(spec: RunSpec, threads: int | None, to_log: bool) -> _Running:
    _fresh_run_dir(spec.run_dir)
    info = {"init": spec.init, "task": spec.task, "seed": spec.seed, "protocol": spec.protocol,
            "weights": spec.weights, "command": spec.command[1:], "returncode": None}
    (spec.run_dir / RUN_INFO).write_text(json.dumps(info, indent=1) + "\n")  # marks the directory as ours
    logger.info("%s: %s", spec.label, " ".join(spec.command[1:]))
    log = open(spec.run_dir / CONSOLE_LOG, "w") if to_log else None
    process = subprocess.Popen(spec.command, env=_child_env(threads), stdout=log,
                               stderr=subprocess.STDOUT if log else None)
    return _Running(spec, process, info, time.perf_counter(), log)


def _finish(run: _Running, returncode: int, cpu_s: float | None) -> RunRecord:
    if run.log is not None:
        run.log.close()
    run.info.update(returncode=returncode, wall_time_s=round(time.perf_counter() - run.start, 1), cpu_time_s=cpu_s)
    (run.spec.run_dir / RUN_INFO).write_text(json.dumps(run.info, indent=1) + "\n")
    if returncode != 0:
        where = run.spec.run_dir / CONSOLE_LOG if run.log is not None else run.spec.run_dir
        raise ComparisonError(f"{run.spec.task} run for {run.spec.init!r} failed (exit {returncode}); "
                              f"its log is in {where}.")
    return read_run(run.spec.run_dir)


def progress_of(log_file: Path) -> str:
    """``"iter 80/150, eta 0:00:31"`` from the last framework log line with an ETA ("" if none)."""
    try:
        with open(log_file, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 8192, 0))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        eta = _ETA.search(line)
        if eta:
            match = _ITER.search(line)
            step = "" if not match else (f"iter {match.group(1)}" if match.group(1)
                                         else f"iter {match.group(2)}/{match.group(3)}")
            return ", ".join(filter(None, [step, f"eta {eta.group(1)}"]))
    return ""


def _cpu_seconds_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(specs: Sequence[RunSpec], reuse: bool = True, jobs: int = 1,
            on_start: Callable[[RunSpec, int, int], None] | None = None,
            echo: Callable[[str], None] = print, report_every: float = 30.0) -> list[RunRecord]:
    """Run ``specs`` (at most ``jobs`` at once) and return their records in the order given.

    ``on_start(spec, index, total)`` is called before each run that actually trains.
    Raises:
        ComparisonError: a run exited non-zero (the others already started are waited for).
    """
    records: dict[int, RunRecord] = {}
    pending = []
    for index, spec in enumerate(specs):
        record = _finished_record(spec, reuse)
        if record is None:
            pending.append(index)
        else:
            records[index] = record
    threads = max((os.cpu_count() or 1) // jobs, 1) if jobs > 1 and "OMP_NUM_THREADS" not in os.environ else None
    running: dict[int, _Running] = {}
    failure: ComparisonError | None = None
    last_report = time.perf_counter()
    while pending or running:
        while pending and len(running) < max(jobs, 1) and failure is None:
            index = pending.pop(0)
            if on_start:
                on_start(specs[index], index, len(specs))
            running[index] = _start(specs[index], threads, to_log=jobs > 1)
        if failure is not None:
            pending.clear()
        if jobs <= 1:  # sequential: wait, with the child's output on the console
            (index, run), = running.items()
            cpu = _cpu_seconds_of_children()
            returncode = run.process.wait()
            failure = _collect(records, running, index, returncode, round(_cpu_seconds_of_children() - cpu, 1),
                               echo, failure, quiet=True)
            continue
        time.sleep(0.5)
        for index, run in list(running.items()):
            returncode = run.process.poll()
            if returncode is not None:
                failure = _collect(records, running, index, returncode, None, echo, failure)
        if running and time.perf_counter() - last_report >= report_every:
            last_report = time.perf_counter()
            for run in running.values():
                state = progress_of(run.spec.run_dir / CONSOLE_LOG) or "starting"
                echo(f"  {run.spec.label}: {state} ({clock(time.perf_counter() - run.start)} so far)")
    if failure is not None:
        raise failure
    return [records[i] for i in range(len(specs))]


def _collect(records, running, index, returncode, cpu_s, echo, failure, quiet: bool = False):
    run = running.pop(index)
    try:
        records[index] = _finish(run, returncode, cpu_s)
    except ComparisonError as err:
        return failure or err
    if not quiet:
        metrics = ", ".join(f"{k} {v:.1f}" for k, v in records[index].metrics.items())
        echo(f"  {run.spec.label}: done in {clock(time.perf_counter() - run.start)}"
             + (f" ({metrics})" if metrics else ""))
    return failure
