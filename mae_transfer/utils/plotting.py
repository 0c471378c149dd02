"""Headless plotting: matplotlib with the Agg backend (PNG files, no display needed)."""
from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` drawing to files only (Agg), for runs on machines without a display.

    Imported on first use: matplotlib is needed only by the commands that write plots.

    Raises:
        ImportError: when matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
