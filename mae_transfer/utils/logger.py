"""Logging set-up shared by the package and the tools."""
from __future__ import annotations

import logging
import sys

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def get_logger(name: str = "mae_transfer") -> logging.Logger:
    """Return a package logger; messages propagate to whatever the framework configured."""
    return logging.getLogger(name if name.startswith("mae_transfer") else f"mae_transfer.{name}")


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Attach one stderr handler to the ``mae_transfer`` logger (idempotent), for the tools."""
    logger = logging.getLogger("mae_transfer")
    if not any(getattr(h, "_mae_transfer", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S"))
        handler._mae_transfer = True
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
