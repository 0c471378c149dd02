"""MAE pretraining on a folder of images.

    mae-pretrain-mae --model mae_vit_tiny_patch16 --data IMAGE_DIR --iters 200 \
        --batch-size 16 --output output/mae_tiny

Writes OUTPUT/checkpoint-last.pth ({'model': ...}, official MAE names), metrics.json, loss.png and
reconstruction.png. --data builtin uses the generated built-in images (mae_transfer.data).
(``python tools/pretrain_mae.py`` and ``python -m mae_transfer.cli.pretrain_mae`` are the same command.)
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from mae_transfer.errors import report_errors
from mae_transfer.models.mae import MAE_PRESETS
from mae_transfer.pretrain import MAEPretrainConfig, pretrain_mae
from mae_transfer.utils.logger import setup_logging


def parse_args(argv: Optional[Sequence[str]] = None) -> MAEPretrainConfig:
    defaults = MAEPretrainConfig(data="", output="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=defaults.model, choices=sorted(MAE_PRESETS))
    p.add_argument("--data", required=True, help="folder of images, or 'builtin'")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--iters", type=int, default=defaults.iters)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (absolute)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--warmup-iters", type=int, default=None, help="default: 10%% of --iters")
    p.add_argument("--mask-ratio", type=float, default=defaults.mask_ratio)
    p.add_argument("--no-norm-pix-loss", action="store_true", help="regress raw pixels")
    p.add_argument("--img-size", type=int, default=defaults.img_size)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--num-workers", type=int, default=defaults.num_workers)
    p.add_argument("--log-every", type=int, default=defaults.log_every)
    p.add_argument("--save-every", type=int, default=defaults.save_every,
                   help="write checkpoint-last.pth every N iterations (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue OUTPUT/checkpoint-last.pth")
    p.add_argument("--device", default=defaults.device, help="cpu or cuda")
    a = p.parse_args(argv)
    if a.data == "builtin":
        from mae_transfer.data import builtin_image_dir
        a.data = str(builtin_image_dir())
    return MAEPretrainConfig(
        data=a.data, output=a.output, model=a.model, iters=a.iters, batch_size=a.batch_size,
        lr=a.lr, weight_decay=a.weight_decay, warmup_iters=a.warmup_iters, mask_ratio=a.mask_ratio,
        norm_pix_loss=not a.no_norm_pix_loss, img_size=a.img_size, seed=a.seed,
        num_workers=a.num_workers, log_every=a.log_every, save_every=a.save_every,
        resume=a.resume, device=a.device)


@report_errors("pretrain_mae")
def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    setup_logging()
    pretrain_mae(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
