"""Where a step's time goes: one call under ``torch.profiler`` and ``torch.utils.flop_counter``.

The e2e cases run this once per step after their timings: the model FLOPs of the call (for the
share of the GEMM rate) and its most expensive operators by self time, with their input shapes,
so a row's time can be traced to, e.g., the one convolution that dominates a head.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

__all__ = ["analyse", "ops_markdown"]

_COUNTER_RECORD = "PythonDispatchMode"  # the flop counter's own records (its Python overhead)


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
    return int(counter.get_total_flops()), _top_ops(prof.events(), cuda, top)


def _nested_in_itself(event) -> bool:
    """The flop counter re-dispatches every op inside it: the inner record of an op sits below
    the outer one (through ``PythonDispatchMode``). Its time is the op's; its call is not."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == event.name:
            return True
        parent = parent.cpu_parent
    return False


def _top_ops(events, cuda: bool, top: int) -> List[Dict]:
    """Self time and calls per (operator, input shapes), the flop counter's own records left out."""
    seconds: Dict[Tuple[str, str], float] = {}
    calls: Dict[Tuple[str, str], int] = {}
    for e in events:
        if e.name == _COUNTER_RECORD:
            continue
        key = (e.name, _shapes(e.input_shapes))
        seconds[key] = seconds.get(key, 0.0) + (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e6
        calls[key] = calls.get(key, 0) + (0 if _nested_in_itself(e) else 1)
    total = sum(seconds.values()) or 1.0
    ranked = sorted(seconds, key=seconds.get, reverse=True)[:top]
    return [{"op": name, "shapes": shapes, "calls": calls[(name, shapes)], "seconds": seconds[(name, shapes)],
             "share": seconds[(name, shapes)] / total} for name, shapes in ranked]  # fmt: skip


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
