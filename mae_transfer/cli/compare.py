"""Compare backbone initialisations on the same detection / segmentation recipe.

    # fine-tune Mask R-CNN and UperNet (demo configs, built-in data) from three initialisations
    mae-compare --inits mae supervised random --output output/compare
    # the same with 3 fine-tuning seeds each, two runs at a time: mean ± std and a noise verdict
    mae-compare --inits mae random --seeds 3 --jobs 2 --output output/seeds
    # frozen-feature linear probe (seconds per seed), or partial fine-tuning (last 4 blocks train)
    mae-compare --inits mae random --protocol probe --seeds 5 --output output/probe
    mae-compare --inits mae random --protocol partial --freeze last_k_blocks:4 --output output/partial
    # your checkpoints on real COCO + ADE20K recipes (each run in OUTPUT/<task>_<name>)
    mae-compare --inits mae=mae_vitb.pth deit=deit_b.pth --det-config coco_vitb_mae \\
        --seg-config ade20k_vitb_mae --output output/vitb
    # only tabulate runs that already finished (det and/or seg run directories, or folders of them)
    mae-compare --collect output/vitb --output output/table
    mae-compare --collect mae=runs/coco_mae mae=runs/ade_mae deit=runs/coco_deit --output t

Writes OUTPUT/comparison.md, comparison.csv, comparison.json and PNGs (comparison.png,
bar_<metric>.png, loss_<task>.png, curve_<metric>.png). Built-ins: mae / beit_style / supervised
(tiny ViTs pretrained on the built-in pool on first use), random, beit (needs $MAE_TRANSFER_BEIT or
beit=PATH).
(``python tools/compare.py`` and ``python -m mae_transfer.cli.compare`` are the same command.)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from mae_transfer.errors import report_errors
from mae_transfer.utils.logger import setup_logging


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inits", nargs="+", default=[], metavar="INIT",
                   help="mae, supervised, beit, random, NAME=CHECKPOINT or CHECKPOINT")
    p.add_argument("--collect", nargs="+", default=[], metavar="DIR",
                   help="read finished run directories (or folders of them; NAME=DIR names the row) "
                        "instead of training")
    p.add_argument("--output", default="output/compare", help="where runs, tables and PNGs go")
    p.add_argument("--tasks", nargs="+", choices=["det", "seg"], default=["det", "seg"])
    p.add_argument("--det-config", default="demo_vit_tiny", help="configs/det name or path")
    p.add_argument("--seg-config", default="demo_vit_tiny", help="configs/seg name or path")
    p.add_argument("--det-opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="Detectron2 overrides for every det run, e.g. SOLVER.MAX_ITER 100")
    p.add_argument("--seg-opts", nargs="+", default=[], metavar="KEY=VALUE",
                   help="--cfg-options for every seg run, e.g. train_cfg.max_iters=100")
    p.add_argument("--pretrain-dir", default=None, help="built-in checkpoints (default OUTPUT/pretrain)")
    p.add_argument("--retrain", action="store_true", help="train again even where a finished run exists")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="fine-tune each (init, task) N times with seeds 0..N-1 (pretraining fixed); tables "
                        "show mean ± std and the per-seed values (default: one run with the config's seed)")
    p.add_argument("--protocol", choices=["finetune", "partial", "probe"], default="finetune",
                   help="finetune: the whole model trains; partial: the --freeze policy; probe: the frozen-"
                        "feature segmentation probe (mae-probe) on the seg data instead of det/seg training")
    p.add_argument("--freeze", default="last_k_blocks:4",
                   help="freeze policy for --protocol partial (mae_transfer.optim.partial), default last_k_blocks:4")
    p.add_argument("--probe-head", choices=["linear", "multiscale"], default="linear",
                   help="probe protocol: linear (last block) or multiscale (last 4 blocks), DINOv2's")
    p.add_argument("--probe-data", default="builtin_ade", help="ADE20K-layout folder or built-in name for the probe")
    p.add_argument("--probe-arch", default="vit_tiny_patch16", help="ViT preset the probed checkpoints fit")
    p.add_argument("--probe-img-size", type=int, default=128, help="probe input side in pixels")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each with cores/jobs threads and its output in RUN/console.log")
    args = p.parse_args(argv)
    if bool(args.inits) == bool(args.collect):
        p.error("pass either --inits (train and compare) or --collect (tabulate finished runs).")
    return args


@report_errors("compare")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from mae_transfer.compare import find_run_dirs, read_run, resolve_inits, run_comparison, write_report

    out = Path(args.output)
    records, extra = [], None
    if args.collect:
        for entry in args.collect:  # DIR, or NAME=DIR to name the row
            name, _, path = entry.partition("=") if "=" in entry else ("", "", entry)
            records += [read_run(d, name or None) for d in find_run_dirs([path])]
    else:
        inits = resolve_inits(args.inits, Path(args.pretrain_dir or out / "pretrain"))
        seeds = list(range(args.seeds)) if args.seeds else None
        if args.protocol == "probe":
            from mae_transfer.compare.probe_runs import probe_inits

            values = probe_inits(inits, out / "probe", seeds or [0], args.probe_head, reuse=not args.retrain,
                                 data=args.probe_data, arch=args.probe_arch, img_size=args.probe_img_size)
            extra = {name: {"probe_mIoU": v} for name, v in values.items()}
        else:
            freeze = args.freeze if args.protocol == "partial" else None
            records = run_comparison(inits, out, args.tasks, args.det_config, args.seg_config,
                                     args.det_opts, args.seg_opts, reuse=not args.retrain, seeds=seeds,
                                     freeze=freeze, jobs=args.jobs)
    table, files = write_report(records, out, extra=extra)
    print(table)
    print("\n".join(["wrote:"] + [f"  {f}" for f in files]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
