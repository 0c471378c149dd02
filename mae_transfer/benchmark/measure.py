"""Timing, peak memory and FLOP counting that work unchanged on CPU and CUDA.

Peak memory:

- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the
  allocated bytes before the call (so model weights and inputs are excluded; gradients and
  activations are included).
- CPU: the process's resident-set high-water mark ``VmHWM`` (reset before the call by writing
  ``5`` to ``/proc/self/clear_refs``), minus the resident set ``VmRSS`` just before the call.
  That is real memory touched by the call (allocator slack included); large tensors are
  ``mmap``-ed by glibc and returned on free (its mmap threshold is pinned at 128 KiB, and
  ``malloc_trim`` runs before each measurement, so memory freed by an earlier case is not
  reused silently), so it tracks live tensors closely. Where ``clear_refs`` cannot be written,
  ``None`` is reported rather than a wrong number.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

__all__ = [
    "AMP_DTYPES",
    "synchronize",
    "Timer",
    "PeakMemory",
    "count_flops",
    "matmul_peak_flops",
    "autocast",
    "median",
]


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the --amp choices


def autocast(device: torch.device, amp: Optional[str]):
    """``torch.autocast`` for ``amp`` in {None, "bf16", "fp16"}."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


class Timer:
    """Wall-clock seconds of ``fn()`` with the device synchronised before and after."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, fn: Callable[[], object]) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        fn()
        synchronize(self.device)
        return time.perf_counter() - start


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


_GLIBC = None


def _glibc():
    """glibc with a fixed mmap threshold (no dynamic raise after large frees), or None."""
    global _GLIBC
    if _GLIBC is None:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD; also disables the dynamic threshold
            _GLIBC = libc
        except (OSError, AttributeError):
            _GLIBC = False
    return _GLIBC or None


def _reset_cpu_peak() -> bool:
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak extra bytes used inside it; read ``.bytes`` after.

    ``.method`` names how (see module docstring).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: Optional[int] = None
        self.method = (
            "cuda max_memory_allocated - allocated before"
            if device.type == "cuda"
            else "VmHWM (reset via /proc/self/clear_refs) - VmRSS before"
        )
        self._base = None

    def __enter__(self) -> "PeakMemory":
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif _reset_cpu_peak():
            self._base = _proc_status_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        if self._base is None:
            return
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            peak = _proc_status_kib("VmHWM")
            self.bytes = None if peak is None else max(0, peak - self._base) * 1024


def count_flops(fn: Callable[[], object]) -> Optional[int]:
    """Floating-point operations of ``fn()`` as ``torch.utils.flop_counter`` counts them
    (matmuls, convolutions and attention kernels; 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_flops(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096, repeats: int = 5
) -> Dict[str, float]:
    """Measured ``n x n @ n x n`` GEMM rate: the practical arithmetic limit of this machine.

    Returns ``{"n": n, "dtype": ..., "seconds": median, "flops_per_s": 2 n^3 / median}``.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timer = Timer(device)
    timer(lambda: a @ b)  # warm-up (library handles, page faults)
    seconds = median([timer(lambda: a @ b) for _ in range(repeats)])
    return {
        "n": n,
        "dtype": str(dtype).replace("torch.", ""),
        "seconds": seconds,
        "flops_per_s": 2 * n**3 / seconds,
    }
