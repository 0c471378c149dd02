"""Train (or evaluate) UperNet-ViT semantic segmentation with MMSegmentation's Runner.

    mae-train-seg ade20k_vitb_mae                      # bare name -> configs/seg/
    mae-train-seg demo_vit_tiny --work-dir work_dirs/demo
    mae-train-seg ade20k_vitb_mae --data-root DIR --classes classes.txt
    python -m torch.distributed.run --nproc_per_node 8 -m mae_transfer.cli.train_seg ade20k_vitb_mae --launcher pytorch
    mae-train-seg ade20k_vitb_mae --eval-only work_dirs/ade20k_vitb_mae/iter_160000.pth

(``python tools/train_seg.py`` and ``python -m mae_transfer.cli.train_seg`` are the same command.)
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from mmengine.config import DictAction

from mae_transfer.errors import report_errors
from mae_transfer.utils.logger import setup_logging


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="config file, or a name in configs/seg/ (e.g. ade20k_vitb_mae)")
    parser.add_argument("--work-dir", help="output directory (default work_dirs/<config name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last complete checkpoint in the work dir")
    parser.add_argument("--amp", action="store_true", help="mixed precision (GPU only; ignored on CPU)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config keys, e.g. train_dataloader.batch_size=8 (unknown keys are errors)")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                        help="pytorch: started by torch.distributed.run; slurm: by srun")
    parser.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                        help="with several processes: how long a rank waits for the others before the run stops "
                             "naming the lost rank (default $MAE_TRANSFER_DIST_TIMEOUT, else 1800)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--eval-only", metavar="CHECKPOINT", help="only evaluate this checkpoint on the test split")
    parser.add_argument("--data-root",
                        help="your dataset in ADE20K layout (images/ + annotations/, training/ + validation/)")
    parser.add_argument("--classes", help="text file with one class name per line (label 1 first; 0 = ignored)")
    parser.add_argument("--show-dir", help="write PNGs of predictions beside ground truth here")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow checkpoints that need pickled code (trusted files only)")
    parser.add_argument("--skip-unreadable-images", action="store_true",
                        help="skip training images that cannot be decoded (logged with a count) instead of stopping")
    args = parser.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    if args.dist_timeout is not None:
        os.environ["MAE_TRANSFER_DIST_TIMEOUT"] = str(args.dist_timeout)  # read by init_distributed
    return args


@report_errors("train_seg")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from mae_transfer.seg.config import prepare_config
    from mae_transfer.seg.guards import check_inputs
    from mae_transfer.seg.runner import run

    cfg = prepare_config(args.config, cfg_options=args.cfg_options, launcher=args.launcher,
                         work_dir=args.work_dir, data_root=args.data_root, classes=args.classes,
                         amp=args.amp, resume=args.resume, eval_only=args.eval_only,
                         show_dir=args.show_dir, unsafe_load=args.unsafe_load)
    check_inputs(cfg, eval_only=bool(args.eval_only), resume=args.resume,
                 skip_unreadable=args.skip_unreadable_images)
    run(cfg, eval_only=bool(args.eval_only))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
