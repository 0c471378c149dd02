"""The package's layers, read from its source: every import statement (module level and inside
functions) of ``mae_transfer/``, resolved to absolute module names with :mod:`ast`.

* The core (models, optim, checkpoints, data, utils, errors, pretrain, probe) never imports the framework
  glue (``mae_transfer.det`` / ``mae_transfer.seg``) nor a framework (Detectron2, MMSeg, MMEngine, MMCV).
* ``models``, ``optim`` and ``probe`` (the frozen-feature probe: plain torch) import no framework at all
  (the core as a whole may, e.g. timm in pretrain).
* ``det`` and ``seg`` never import each other.
* No module imports its own package's ``__init__`` (e.g. ``mae_transfer.seg.runner`` importing
  ``mae_transfer.seg``): registration happens by importing the submodules that register.
* The glue imports the project's modules at module level (no function-level import dodging a cycle).
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mae_transfer"

CORE = ("models", "optim", "checkpoints", "data", "utils", "errors", "pretrain", "probe")
FRAMEWORKS = ("detectron2", "mmseg", "mmengine", "mmcv")
GLUE = ("mae_transfer.det", "mae_transfer.seg")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """A module or package of this project (``from . import x`` imports the submodule x)."""
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``; ``from x import y`` counts ``x``
    and ``x.y`` (y may be a submodule)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [f"{source}.{alias.name}" for alias in node.names if alias.name != "*"]
            submodules = [n for n in names if _is_module(n)]
            if len(submodules) < len(node.names):  # names taken from ``source`` itself
                found.append((node.lineno, source))
            found += [(node.lineno, name) for name in names]
    return found


@functools.lru_cache(maxsize=None)
def _graph() -> dict[str, list[tuple[int, str]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(sources, forbidden) -> list[str]:
    return [f"{module}:{line} imports {target}"
            for module, imports in _graph().items() if _within(module, sources)
            for line, target in imports if _within(target, forbidden)]


def test_the_import_graph_is_read():
    graph = _graph()
    assert "mae_transfer.det.config" in graph and "mae_transfer.seg.runner" in graph
    targets = {t for imports in graph.values() for _, t in imports}
    assert "detectron2.config" in targets and "mae_transfer.errors" in targets


@pytest.mark.parametrize("layer", CORE)
def test_core_never_imports_glue_or_frameworks(layer):
    assert _violations([f"mae_transfer.{layer}"], GLUE + FRAMEWORKS) == []


@pytest.mark.parametrize("layer", ["models", "optim", "probe"])
def test_models_optim_and_probe_import_no_framework(layer):
    assert _violations([f"mae_transfer.{layer}"], FRAMEWORKS + ("timm", "torchvision")) == []


def test_probe_does_not_import_the_pretraining_loops():
    assert _violations(["mae_transfer.probe"], ["mae_transfer.pretrain"]) == []


def test_det_and_seg_never_import_each_other():
    assert _violations(["mae_transfer.det"], ["mae_transfer.seg"]) == []
    assert _violations(["mae_transfer.seg"], ["mae_transfer.det"]) == []


def test_no_module_imports_its_own_package():
    graph = _graph()
    packages = {name for name, _ in graph.items() if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()}
    bad = [f"{module}:{line} imports {target}"
           for module, imports in graph.items() if module not in packages
           for line, target in imports if target in packages and module.startswith(target + ".")]
    assert bad == []


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    lines = {node.lineno for fn in ast.walk(ast.parse(path.read_text()))
             if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}
    return [(line, target) for line, target in _imports(path) if line in lines]


@pytest.mark.parametrize("glue", ["det", "seg"])
def test_glue_imports_the_project_at_module_level(glue):
    """A function-level import of the project's own modules in the glue is a cycle being dodged;
    the modules are split so that every import can stand at the top."""
    bad = [f"{_module_name(path)}:{line} imports {target} inside a function"
           for path in sorted((PACKAGE / glue).rglob("*.py"))
           for line, target in _function_level_imports(path) if _within(target, ["mae_transfer"])]
    assert bad == []
