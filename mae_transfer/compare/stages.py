"""Stage banners for long multi-stage jobs (``make demo``): elapsed time and an estimate of what is left.

The plan lists every stage with a kind ("pretrain", "probe", "det", ...) and a prior guess of its
seconds. The estimate of what is left uses, for each stage still to run, the mean time of the
finished stages of its kind, else its prior scaled by how the finished stages compared with their
priors (a slower machine stretches every prior alike).
"""
from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def clock(seconds: float) -> str:
    """``m:ss``."""
    seconds = int(round(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


@dataclass(frozen=True)
class Stage:
    """A planned stage: its banner ``name``, a ``kind`` shared by stages of similar cost, a prior in s."""
    name: str
    kind: str
    expected_s: float


class Stages:
    """Runs the planned stages in order; records per-stage wall/CPU seconds for the summary."""

    def __init__(self, plan: list[Stage], echo: Callable[[str], None] = print):
        self.plan, self.echo = list(plan), echo
        self.start = time.perf_counter()
        self.times: dict[str, dict[str, float]] = {}
        self._measured: dict[str, float] = {}  # stage name -> seconds it took here (not reused)

    def remaining_s(self) -> float:
        """Estimated seconds of the stages not run yet."""
        done = [s for s in self.plan if s.name in self._measured]
        # Stages that took a few seconds (cached data, a finished run found) say nothing about the machine.
        timed = [s for s in done if self._measured[s.name] >= 5.0]
        expected = sum(s.expected_s for s in timed)
        scale = min(max(sum(self._measured[s.name] for s in timed) / expected, 0.5), 3.0) if expected else 1.0
        left = 0.0
        for stage in self.plan:
            if stage.name in self.times:
                continue
            same_kind = [self._measured[s.name] for s in done if s.kind == stage.kind]
            left += sum(same_kind) / len(same_kind) if same_kind else stage.expected_s * scale
        return left

    def run(self, name: str, function: Callable, *args, timing_file: Path | list[Path] | None = None,
            **kwargs):
        """Run the planned stage ``name``. ``timing_file``: a json with ``wall_s``/``cpu_s`` (or
        ``wall_time_s``/``cpu_time_s``) the stage writes when it does the work; when the stage reused
        earlier results (file older than the stage), its stored times are reported, marked ``reused``."""
        index = next(i for i, s in enumerate(self.plan) if s.name == name) + 1
        self.echo(f"\n==== [{index}/{len(self.plan)}] {name}  (demo elapsed {clock(self.elapsed)}, "
                  f"about {clock(self.remaining_s())} left) ====")
        wall, cpu, started = time.perf_counter(), cpu_seconds(), time.time()
        result = function(*args, **kwargs)
        took = time.perf_counter() - wall
        times = {"wall_s": round(took, 1), "cpu_s": round(cpu_seconds() - cpu, 1)}
        stored = _stored_times(timing_file, started)
        if stored is not None:
            times = stored
        else:
            self._measured[name] = took
        self.times[name] = times
        note = " (reused; it took " + clock(times["wall_s"]) + " when it ran)" if times.get("reused") else ""
        self.echo(f"==== {name}: done in {clock(took)}{note} ====")
        return result

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _stored_times(timing_file: Path | list[Path] | None, started: float) -> dict | None:
    """The times a reused stage took when it ran, or None when the stage did its work now.

    Several files (runs of one stage that ran side by side): the longest wall time, the summed CPU time.
    """
    files = [] if timing_file is None else [timing_file] if isinstance(timing_file, Path) else list(timing_file)
    if not files or not all(f.is_file() and f.stat().st_mtime < started for f in files):
        return None
    stored = [json.loads(f.read_text()) for f in files]
    walls = [s.get("wall_s", s.get("wall_time_s")) for s in stored]
    if any(w is None for w in walls):
        return None
    cpus = [s.get("cpu_s", s.get("cpu_time_s")) for s in stored]
    return {"wall_s": max(walls), "cpu_s": None if None in cpus else round(sum(cpus), 1), "reused": True}
