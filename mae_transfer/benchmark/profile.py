"""Where a step's time goes: one call under ``torch.profiler`` and ``torch.utils.flop_counter``.

The e2e cases run this once per step after their timings: the model FLOPs of the call (for the
share of the GEMM rate) and its most expensive operators by self time, with their input shapes,
so a row's time can be traced to, e.g., the one convolution that dominates a head.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

__all__ = ["analyse"]


def _shapes(shapes) -> str:
    """The tensor input shapes of an op (non-tensor arguments dropped), e.g. ``[2, 768, 128, 128]``."""
    return ", ".join(str(list(s)) for s in shapes if s)


def analyse(fn: Callable[[], object], device: torch.device, top: int = 6) -> Tuple[Optional[int], List[Dict]]:
    """Run ``fn()`` once; returns its model FLOPs (matmuls, convolutions, attention; 2 per
    multiply-add) and its ``top`` operators by self time: ``{"op", "shapes", "calls", "seconds",
    "share"}`` (share of the call's total self time; on CUDA, device time)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    counter = FlopCounterMode(display=False)
    with profile(activities=activities, record_shapes=True) as prof, counter:
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.key_averages(group_by_input_shape=True)

    def self_us(e) -> float:
        return e.self_device_time_total if cuda else e.self_cpu_time_total

    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:top]
    ops = [{"op": e.key, "shapes": _shapes(e.input_shapes), "calls": e.count, "seconds": self_us(e) / 1e6,
            "share": self_us(e) / total} for e in ranked]  # fmt: skip
    return int(counter.get_total_flops()), ops


def ops_markdown(rows: List[Dict]) -> List[str]:
    """One bullet list per profiled row: the operators that took the time."""
    lines: List[str] = []
    for r in rows:
        if not r.get("top_ops"):
            continue
        lines += ["", f"{r['task']} {r['kind']}, {r['name']}:", ""]
        lines += [f"- {o['share'] * 100:.0f}% {o['op']} x{o['calls']} ({o['seconds']:.2f} s) {o['shapes']}"
                  for o in r["top_ops"]]  # fmt: skip
    return lines
