"""Iteration progress lines for the small training loops (pretraining, the probe)."""

from __future__ import annotations

import time

from mae_transfer.utils.logger import get_logger

__all__ = ["Progress"]

logger = get_logger(__name__)


class Progress:
    """Logs ``iter i/N, loss, lr, ETA`` every ``every`` iterations (and the last one)."""

    def __init__(self, total: int, every: int = 10, name: str = "train", start: int = 0):
        self.total, self.every, self.name, self.first = total, max(every, 1), name, start
        self.start = time.perf_counter()

    def step(self, i: int, **values: float) -> None:
        done = i + 1
        if done % self.every and done != self.total:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(done - self.first, 1) * (self.total - done)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
        logger.info("%s iter %d/%d  %s  elapsed %s  eta %s", self.name, done, self.total, shown,
                    _clock(elapsed), _clock(eta))

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
