"""Helpers shared by the reliability tests of both tools (bad inputs, unsafe pickles, crashes)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


class FileCreatingPayload:
    """Unpickling this object creates ``marker`` (any code could run instead)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_code_running_checkpoint(path: Path, marker: Path) -> Path:
    """A torch checkpoint whose unpickling would create ``marker``."""
    torch.save({"model": {"weight": torch.zeros(2)}, "payload": FileCreatingPayload(marker)}, path)
    return path


def snapshot(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``directory``."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_left_intact(directory: Path, before: dict[str, str], logs: dict[str, bytes],
                       rewritten: tuple[str, ...] = ()) -> None:
    """Every file of a previous run is still there with the same bytes.

    Log files (``logs``: name -> old bytes) may only have grown; ``rewritten`` names files the
    framework rewrites when a run starts (Detectron2's config.yaml) and that may differ.
    """
    after = snapshot(directory)
    for name, digest in before.items():
        assert name in after, f"{name} was removed"
        if name in logs:
            assert (directory / name).read_bytes().startswith(logs[name]), f"{name} lost content"
        elif name not in rewritten:
            assert after[name] == digest, f"{name} changed"


def run_tool(main, argv: list[str]) -> tuple[int, str]:
    """Call a tool's ``main(argv)`` in this process; return its exit code and what it printed on stderr.

    Only ``sys.stderr`` is swapped (not pytest's capsys): the frameworks' loggers keep the stream
    they were created with, which must outlive the test.
    """
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        code = main(argv)
    return code, buffer.getvalue()


def last_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def start_and_kill(argv: list[str], marker: Path, env: dict, timeout: float = 240.0) -> None:
    """Start a training command, wait until it writes ``marker`` (it then waits to be killed),
    and kill it with SIGKILL: a crash without any chance to clean up."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")
                raise AssertionError(f"the run ended (rc {proc.returncode}) before the kill point:\n{out[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the run did not reach the kill point in time")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def subprocess_env() -> dict:
    """Environment of a tool run in a subprocess: repo and tests on the path, one CPU thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


PYTHON = sys.executable
