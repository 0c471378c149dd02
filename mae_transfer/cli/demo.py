"""The `make demo` main job, on CPU and the built-in generated data (no downloads).

    mae-demo                       # ~20 min on 2 CPU cores; output in output/demo
    mae-demo --quick               # a few iterations per stage: checks the whole path
    mae-demo --skip-pretrain       # reuse output/demo/pretrain/{mae,beit_style,supervised}
    mae-demo --jobs 1              # one fine-tuning run at a time, output on the console

Stages: build the built-in datasets (an unlabelled pool, a small labelled train split, a held-out
val split); pretrain tiny MAE, BEiT-style and supervised ViT-Ti/16 encoders on the pool; a
frozen-feature linear probe of each encoder and of a random one (3 seeds); fine-tune Mask R-CNN
(configs/det/demo_vit_tiny.yaml) and UperNet (configs/seg/demo_vit_tiny.py) from each init
(2 seeds); print the table of mean ± std with a noise verdict per comparison (also
OUTPUT/comparison.md, .csv, .json) and the PNG paths. Stage times and per-seed results:
OUTPUT/demo_summary.json. Finished stages are reused when the demo is run again (--fresh trains
everything again).
(``python tools/demo.py`` and ``python -m mae_transfer.cli.demo`` are the same command.)
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from mae_transfer.errors import report_errors
from mae_transfer.utils.logger import setup_logging


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/demo", help="output directory (default output/demo)")
    p.add_argument("--quick", action="store_true", help="a few iterations per stage (smoke test, ~1-2 min)")
    p.add_argument("--skip-pretrain", action="store_true",
                   help="use the pretrained checkpoints already in OUTPUT/pretrain (error if missing)")
    p.add_argument("--tasks", nargs="+", choices=["det", "seg"], default=None, help="default: det seg")
    p.add_argument("--inits", nargs="+", choices=["mae", "beit_style", "supervised", "random"], default=None,
                   help="default: mae beit_style supervised random")
    p.add_argument("--probe-seeds", type=int, help="linear-probe seeds per init (default 3)")
    p.add_argument("--finetune-seeds", type=int, help="Mask R-CNN / UperNet seeds per init (default 2)")
    p.add_argument("--jobs", type=int, help="fine-tuning runs side by side (default 2, one thread each)")
    p.add_argument("--beit-iters", type=int, help="BEiT-style pretraining iterations")
    p.add_argument("--mae-iters", type=int, help="MAE pretraining iterations")
    p.add_argument("--sup-iters", type=int, help="supervised pretraining iterations")
    p.add_argument("--det-iters", type=int, help="Mask R-CNN fine-tuning iterations per init")
    p.add_argument("--seg-iters", type=int, help="UperNet fine-tuning iterations per init")
    p.add_argument("--fresh", action="store_true", help="fine-tune again even where a finished run exists")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: PyTorch's). Use 1 on a machine shared with other "
                        "jobs: oversubscribed OpenMP threads can make each iteration 10x slower")
    return p.parse_args(argv)


@report_errors("demo")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:  # before torch is imported; the training subprocesses inherit it
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(args.threads)
    setup_logging()
    from mae_transfer.compare.demo import DemoPlan, run_demo

    plan = DemoPlan.quick() if args.quick else DemoPlan()
    recipe = plan.recipe
    if args.mae_iters is not None:
        recipe = replace(recipe, mae_iters=args.mae_iters)
    if args.sup_iters is not None:
        recipe = replace(recipe, sup_iters=args.sup_iters)
    if args.beit_iters is not None:
        recipe = replace(recipe, beit_iters=args.beit_iters)
    counts = {k: getattr(args, k) for k in ("probe_seeds", "finetune_seeds", "jobs") if getattr(args, k) is not None}
    plan = replace(plan, output=Path(args.output), recipe=recipe, skip_pretrain=args.skip_pretrain,
                   reuse=not args.fresh,
                   det_iters=args.det_iters if args.det_iters is not None else plan.det_iters,
                   seg_iters=args.seg_iters if args.seg_iters is not None else plan.seg_iters,
                   tasks=tuple(args.tasks or plan.tasks), inits=tuple(args.inits or plan.inits), **counts)
    run_demo(plan)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
