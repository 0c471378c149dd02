"""Import hook: serve :mod:`mae_transfer.compat.mmcv_ops` when ``mmcv.ops`` is imported.

Registered at interpreter start by the ``mae_transfer_mmcv_ops.pth`` line that ``scripts/install.sh``
writes into the venv, so that plain ``import mmseg.models`` works with mmcv-lite. Only the standard
library is imported here; torch and mmcv load when (and if) ``mmcv.ops`` is imported.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys


class _MmcvOpsLoader(importlib.abc.Loader):
    def create_module(self, spec):
        from mae_transfer.compat import mmcv_ops  # noqa: F401  (registers the stand-in in sys.modules)

        return sys.modules.get("mmcv.ops")

    def exec_module(self, module) -> None:
        pass


class MmcvOpsFinder(importlib.abc.MetaPathFinder):
    """Answers only for ``mmcv.ops``, and only when mmcv's compiled ``_ext`` is absent."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mmcv.ops" or importlib.util.find_spec("mmcv._ext") is not None:
            return None
        return importlib.util.spec_from_loader(fullname, _MmcvOpsLoader())


def register() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, MmcvOpsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MmcvOpsFinder())


register()
