"""Entry points: one error report for every tool, shims without path edits, quiet dependency warnings."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mae_transfer.errors import (
    CheckpointError,
    ComparisonError,
    ConfigError,
    DataError,
    MissingFileError,
    NonFiniteLossError,
    UnsafeCheckpointError,
    UserError,
    report_errors,
)

REPO = Path(__file__).resolve().parents[1]
CLI = sorted(p.stem for p in (REPO / "mae_transfer" / "cli").glob("*.py") if not p.name.startswith("_"))
# The start of each known dependency warning, as the dependencies print it.
KNOWN_WARNINGS = ("`torch.jit.script` is deprecated", "Importing from timm.models.layers is deprecated",
                  "Fail to import ``MultiScaleDeformableAttention``")


def test_every_user_error_is_a_value_error_and_keeps_its_older_base():
    for cls in (ConfigError, DataError, CheckpointError, UnsafeCheckpointError, NonFiniteLossError, ComparisonError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)
    assert issubclass(NonFiniteLossError, FloatingPointError) and issubclass(MissingFileError, FileNotFoundError)
    error = NonFiniteLossError("loss is nan", iteration=3, losses={"loss": float("nan")})
    assert str(error) == "loss is nan" and error.iteration == 3 and error.last_checkpoint is None


def test_report_errors_prints_one_sentence_and_returns_2_and_keeps_other_tracebacks(capsys):
    @report_errors("tool")
    def fails(argv=None):
        raise ConfigError(argv[0])

    assert fails(["Key X is\n unknown; fix it."]) == 2
    assert capsys.readouterr().err == "tool: error: Key X is unknown; fix it.\n"

    @report_errors("tool")
    def crashes(argv=None):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        crashes()


def test_report_errors_recognises_a_user_error_raised_in_a_worker_process(capsys):
    """torch.multiprocessing re-raises a worker's exception as its traceback text."""
    @report_errors("tool")
    def worker_failed(argv=None):
        raise RuntimeError("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
                           '  File "x.py", line 1, in f\nmae_transfer.errors.DataError: Image a.jpg is unreadable.')

    assert worker_failed() == 2
    assert capsys.readouterr().err == "tool: error: Image a.jpg is unreadable.\n"

    @report_errors("tool")
    def worker_crashed(argv=None):
        raise RuntimeError("Traceback (most recent call last):\n  File ...\nKeyError: 'x'")

    with pytest.raises(RuntimeError):
        worker_crashed()


def test_tools_are_shims_of_the_cli_modules_and_nothing_edits_sys_path():
    assert sorted(p.stem for p in (REPO / "tools").glob("*.py")) == CLI
    for name in CLI:
        assert f"from mae_transfer.cli.{name} import main" in (REPO / "tools" / f"{name}.py").read_text()
    offenders = [str(p) for folder in ("mae_transfer", "tools") for p in (REPO / folder).rglob("*.py")
                 if re.search(r"sys\.path\.(insert|append)", p.read_text())]
    assert not offenders


def test_console_scripts_name_every_cli_module():
    text = (REPO / "pyproject.toml").read_text()
    for name in CLI:
        assert f'mae-{name.replace("_", "-")} = "mae_transfer.cli.{name}:main"' in text


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.mark.slow
def test_entry_points_hide_the_known_dependency_warnings_and_keep_the_others():
    imports = "import fvcore.nn, timm.models.layers, mae_transfer.seg"
    plain = _python(imports)
    assert all(warning in plain for warning in KNOWN_WARNINGS), plain  # they do appear without the filter
    quiet = _python(f"import mae_transfer.cli; {imports}; import warnings; warnings.warn('kept', UserWarning)")
    assert not [w for w in KNOWN_WARNINGS if w in quiet], quiet
    assert "UserWarning: kept" in quiet
