"""Benchmark the ViT backbone against timm / Detectron2 / MMSeg, and the detection and
segmentation pipelines; writes benchmark.json, benchmark.md and benchmark.png.

    mae-benchmark                                # default cases, CPU or CUDA
    mae-benchmark --cases gemm vit224 win1024 --device cuda --amp bf16
    mae-benchmark --cases det_vitb seg_vitb       # ViT-B Mask R-CNN @1024, UperNet @512
    mae-benchmark --quick --out /tmp/bench      # toy sizes, a few seconds

(``python tools/benchmark.py`` and ``python -m mae_transfer.cli.benchmark`` are the same command.)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from mae_transfer.benchmark import CASES, Options, run_benchmark
from mae_transfer.errors import report_errors
from mae_transfer.utils.logger import setup_logging


def parse_args(argv: Optional[Sequence[str]] = None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", choices=CASES, metavar="CASE",
                        help=f"cases from {', '.join(CASES)} (default: all; on CPU without mae1024)")
    parser.add_argument("--quick", action="store_true", help="toy model sizes (checks the tool, not speed)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if any)")
    parser.add_argument("--out", type=Path, default=Path("output/benchmark"), help="output dir")
    parser.add_argument("--amp", choices=["bf16", "fp16"], help="autocast dtype (default: fp32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbones' forward")
    parser.add_argument("--repeats", type=int, help="timed repeats per case (default: 2 CPU, 10 CUDA)")
    args = parser.parse_args(argv)
    return Options(cases=args.cases or [], quick=args.quick, device=args.device, out=args.out,
                   amp=args.amp, compile=args.compile, repeats=args.repeats)


@report_errors("benchmark")
def main(argv: Optional[Sequence[str]] = None) -> int:
    setup_logging()
    opts = parse_args(argv)
    result = run_benchmark(opts)
    print((Path(opts.out) / "benchmark.md").read_text())
    missed = [t["target"] for t in result.get("targets", []) if t["met"] is False]
    if missed:
        print(f"targets missed: {'; '.join(missed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
