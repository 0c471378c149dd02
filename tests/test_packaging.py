"""The package installed non-editable (what ``pip install .`` does) works from any directory: configs
are package data and found by bare name, every entry point answers, and no dependency warning we know
of is printed."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = sorted(p.stem for p in (REPO / "mae_transfer" / "cli").glob("*.py") if not p.name.startswith("_"))
KNOWN_WARNINGS = ("`torch.jit.script` is deprecated", "Importing from timm.models.layers is deprecated",
                  "Fail to import ``MultiScaleDeformableAttention``")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A copy of the sources installed with pip into a target folder (no index: nothing downloaded)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "mae_transfer", src / "mae_transfer", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return target


def _run(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_package_is_the_one_imported_and_ships_the_configs(installed, tmp_path):
    proc = _run(installed, tmp_path, "-c", "import mae_transfer; print(mae_transfer.__file__)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()).is_relative_to(installed)
    configs = installed / "mae_transfer" / "configs"
    shipped = {p.relative_to(configs).as_posix() for p in configs.rglob("*") if p.suffix in (".yaml", ".py")}
    in_repo = {p.relative_to(REPO / "mae_transfer" / "configs").as_posix()
               for p in (REPO / "mae_transfer" / "configs").rglob("*") if p.suffix in (".yaml", ".py")}
    assert shipped == in_repo and "seg/_base_/default_runtime.py" in shipped


@pytest.mark.parametrize("config, framework", [("coco_vitb_mae", "Detectron2"), ("ade20k_vitb_mae", "MMSegmentation")])
def test_inspect_param_groups_finds_a_bare_config_name_from_any_directory(installed, tmp_path, config, framework):
    proc = _run(installed, tmp_path, "-m", "mae_transfer.cli.inspect_param_groups", "--config", config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"{config} ({framework}): base lr")
    assert not [w for w in KNOWN_WARNINGS if w in proc.stderr], proc.stderr


# Runs every entry point as ``python -m mae_transfer.cli.NAME --help`` would, in one interpreter (one
# torch / framework import for all of them, not one per command), each answer after a marker line.
_HELP_ALL = """
import contextlib, io, runpy, sys
for name in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [name, "--help"]
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module("mae_transfer.cli." + name, run_name="__main__", alter_sys=True)
            code = "no exit"
        except SystemExit as exit:
            code = exit.code
    print("=== " + name + " exit " + str(code))
    print(out.getvalue())
"""


def test_every_entry_point_answers_help(installed, tmp_path):
    proc = _run(installed, tmp_path, "-c", _HELP_ALL, *CLI)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = dict(part.split("\n", 1) for part in proc.stdout.split("=== ")[1:])
    assert sorted(answers) == [f"{name} exit 0" for name in CLI], proc.stdout[-3000:]
    for header, text in answers.items():
        assert text.startswith("usage:"), (header, text[:500])
    assert not [w for w in KNOWN_WARNINGS if w in proc.stderr], proc.stderr
