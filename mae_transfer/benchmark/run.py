"""Run the selected benchmark cases and write ``benchmark.json``, ``benchmark.md``, ``benchmark.png``."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from mae_transfer.errors import ConfigError

from . import report
from .backbone_bench import GROUPS, run_group
from .machine import load_average, machine_info
from .measure import AMP_DTYPES, PeakMemory, matmul_peak_flops

__all__ = ["Options", "CASES", "default_cases", "run_benchmark"]

logger = logging.getLogger("mae_transfer.benchmark")

TASK_CASES = ("det", "seg", "det_vitb", "seg_vitb")  # demo configs (+ data-loading rate), ViT-B recipes
E2E_CASES = ("det_e2e", "seg_e2e")  # whole steps beside Detectron2's / MMSeg's pipelines (.e2e)
CASES = ("gemm",) + tuple(GROUPS) + TASK_CASES + E2E_CASES + ("loader",)
# global attention at 1024 (MMSeg MAE) needs ~20 GB and minutes per step on a CPU; the ViT-B
# recipe pipelines take minutes there too (run them with --cases det_vitb seg_vitb)
_CPU_DEFAULT_SKIP = ("mae1024", "det_vitb", "seg_vitb") + E2E_CASES
# --quick: toy sizes for the same code paths
_QUICK_IMG = {224: 64, 512: 64, 1024: 128}


@dataclass
class Options:
    """What to run (see ``tools/benchmark.py --help``)."""

    cases: List[str] = field(default_factory=list)  # empty = default_cases(device)
    quick: bool = False
    device: str = "auto"
    out: Path = Path("output/benchmark")
    amp: Optional[str] = None  # "bf16" | "fp16"
    compile: bool = False
    repeats: Optional[int] = None

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def default_cases(device: torch.device) -> List[str]:
    return [c for c in CASES if device.type == "cuda" or c not in _CPU_DEFAULT_SKIP]


def _repeats(opts: Options, device: torch.device, img: int) -> Dict[str, int]:
    """Timed repeats and warm-ups. On CPU the 1024 steps take tens of seconds each, so the
    warm-up call (which also measures memory) is the single timing there."""
    if opts.repeats:
        return {"repeats": opts.repeats, "warmup": 1}
    if opts.quick:
        return {"repeats": 1, "warmup": 1}
    if device.type == "cuda":
        return {"repeats": 10, "warmup": 3}
    if img >= 1024:
        return {"repeats": 1, "warmup": 0}
    return {"repeats": 2, "warmup": 1}


def _gemm(device: torch.device, opts: Options) -> List[Dict]:
    n = 256 if opts.quick else 4096
    dtypes = [torch.float32]
    if opts.amp:
        dtypes.append(AMP_DTYPES[opts.amp])
    return [matmul_peak_flops(device, dtype, n=n) for dtype in dtypes]


def _run_tasks(case: str, device: torch.device, opts: Options) -> List[Dict]:
    from . import tasks  # imports detectron2 / mmseg lazily

    return tasks.run(case, device=device, quick=opts.quick, amp=opts.amp)


def run_benchmark(opts: Options) -> Dict:
    """Run ``opts.cases`` and write the result files into ``opts.out``; returns the result."""
    device = opts.resolved_device()
    cases = opts.cases or default_cases(device)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ConfigError(f"Unknown benchmark case(s) {unknown}; choose from {list(CASES)}.")
    start = time.perf_counter()
    result: Dict = {
        "machine": machine_info(device),
        "options": {**dataclasses.asdict(opts), "out": str(opts.out), "cases": cases},
        "load_average_start": load_average(),
        "memory_method": PeakMemory(device).method,
        "gemm": [],
        "backbone": [],
        "tasks": [],
        "e2e": [],
        "loader": [],
    }
    if "gemm" in cases or any(c in GROUPS or c in E2E_CASES for c in cases):
        result["gemm"] = _gemm(device, opts)
        rates = [f"{g['dtype']} {g['flops_per_s'] / 1e12:.3g} TFLOP/s" for g in result["gemm"]]
        logger.info("GEMM peak: %s", ", ".join(rates))
    peak = result["gemm"][-1]["flops_per_s"] if result["gemm"] else None
    for case in cases:
        if case in GROUPS:
            group = GROUPS[case]
            if opts.quick:
                group = dataclasses.replace(group, img=_QUICK_IMG[group.img])
            result["backbone"] += run_group(
                group, device=device, arch="tiny" if opts.quick else "base", amp=opts.amp,
                compile_model=opts.compile, gemm_peak=peak, **_repeats(opts, device, group.img),
                full=device.type == "cuda" or opts.quick or bool(opts.repeats),
            )  # fmt: skip
        elif case in TASK_CASES:
            result["tasks"] += _run_tasks(case, device, opts)
        elif case in E2E_CASES:
            from . import e2e  # imports detectron2 / mmseg lazily

            repeats = opts.repeats or (1 if opts.quick else 3 if device.type == "cpu" else 5)
            result["e2e"] += e2e.run(case, device=device, quick=opts.quick, amp=opts.amp, repeats=repeats)
        elif case == "loader":
            from . import loader

            result["loader"] += loader.run(quick=opts.quick)
        _write(result, opts.out, start, final=False)
    if result["e2e"]:
        from .e2e import add_gemm_share

        add_gemm_share(result["e2e"], peak)
    report.add_ratios(result["backbone"])
    result["targets"] = [] if opts.quick else report.check_targets(result["backbone"])
    if result["e2e"] and not opts.quick:
        from .e2e import e2e_targets

        result["targets"] += e2e_targets(result["e2e"], device)
    return _write(result, opts.out, start, final=True)


def _write(result: Dict, out: Path, start: float, final: bool) -> Dict:
    """Write JSON + markdown (after every case, so a long run leaves partial results)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result["load_average_end"] = load_average()
    result["wall_seconds"] = time.perf_counter() - start
    result["complete"] = final
    (out / "benchmark.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "benchmark.md").write_text(report.to_markdown(result))
    if final:
        png = report.plot(result, out / "benchmark.png")
        result["png"] = str(png) if png else None
    return result
