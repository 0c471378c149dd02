"""Supervised pretraining (object-crop classification) for the "supervised" comparison row.

    mae-pretrain-sup --data builtin --iters 300 --output output/sup_tiny
    mae-pretrain-sup --json ann.json --images IMAGE_DIR --output DIR

Every annotated object of a COCO-format dataset becomes a labelled crop; a ViT with a class token
and linear head learns to classify them. Writes OUTPUT/checkpoint-last.pth (timm/DeiT layout,
{'model': ...} with head.*), metrics.json and loss.png.
(``python tools/pretrain_sup.py`` and ``python -m mae_transfer.cli.pretrain_sup`` are the same command.)
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from mae_transfer.errors import report_errors
from mae_transfer.models import PRESETS
from mae_transfer.pretrain import SupPretrainConfig, pretrain_supervised
from mae_transfer.utils.logger import setup_logging


def parse_args(argv: Optional[Sequence[str]] = None) -> SupPretrainConfig:
    d = SupPretrainConfig(json="", images="", output="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model, choices=sorted(k for k in PRESETS if k.startswith("vit_")))
    p.add_argument("--data", default=None, help="'builtin': the generated pretraining set (+ its val set)")
    p.add_argument("--json", help="COCO instances json (instead of --data builtin)")
    p.add_argument("--images", help="image folder of --json")
    p.add_argument("--val-json", help="optional held-out json for the final accuracy")
    p.add_argument("--val-images", help="image folder of --val-json")
    p.add_argument("--output", required=True)
    p.add_argument("--iters", type=int, default=d.iters)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-iters", type=int, default=None, help="default: 10%% of --iters")
    p.add_argument("--drop-path", type=float, default=d.drop_path)
    p.add_argument("--img-size", type=int, default=d.img_size, help="crop side in pixels")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--device", default=d.device)
    a = p.parse_args(argv)
    if a.data == "builtin":
        from mae_transfer.data import builtin_dataset
        train, val = builtin_dataset("builtin_pretrain"), builtin_dataset("builtin_coco_val")
        a.json, a.images = str(train.json_path), str(train.image_dir)
        a.val_json, a.val_images = a.val_json or str(val.json_path), a.val_images or str(val.image_dir)
    elif a.data is not None:
        p.error("--data only accepts 'builtin'; for your own data pass --json and --images.")
    if not (a.json and a.images):
        p.error("pass --data builtin, or --json ANNOTATIONS.json --images IMAGE_DIR.")
    return SupPretrainConfig(
        json=a.json, images=a.images, output=a.output, model=a.model, val_json=a.val_json,
        val_images=a.val_images, iters=a.iters, batch_size=a.batch_size, lr=a.lr,
        weight_decay=a.weight_decay, warmup_iters=a.warmup_iters, drop_path=a.drop_path,
        img_size=a.img_size, seed=a.seed, num_workers=a.num_workers, log_every=a.log_every,
        device=a.device)


@report_errors("pretrain_sup")
def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    setup_logging()
    pretrain_supervised(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
