"""BEiT-style pretraining on a folder of images (BEiT's masked-image-modelling objective with a
k-means patch tokenizer learned on the same images, since BEiT's DALL-E tokenizer is not available
offline).

    mae-pretrain-beit --model vit_tiny_patch16 --data IMAGE_DIR --iters 200 \
        --batch-size 32 --img-size 128 --output output/beit_style_tiny

Writes OUTPUT/checkpoint-last.pth ({'model': ...}: the ViT in timm names plus mask_token and
lm_head, which the checkpoint loaders ignore; the k-means codebook under 'tokenizer'), metrics.json
and loss.png. The checkpoint plugs into fine-tuning as MODEL.VIT.WEIGHTS (Detectron2) or
model.backbone.pretrained (MMSeg). --data builtin uses the generated built-in images.
(``python tools/pretrain_beit.py`` and ``python -m mae_transfer.cli.pretrain_beit`` are the same command.)
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from mae_transfer.errors import report_errors
from mae_transfer.pretrain import BEiTStylePretrainConfig, pretrain_beit_style
from mae_transfer.pretrain.beit_trainer import PRESET_CHOICES
from mae_transfer.utils.logger import setup_logging


def parse_args(argv: Optional[Sequence[str]] = None) -> BEiTStylePretrainConfig:
    defaults = BEiTStylePretrainConfig(data="", output="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=defaults.model, choices=PRESET_CHOICES, help="ViT preset")
    p.add_argument("--depth", type=int, default=None, help="override the preset's number of blocks")
    p.add_argument("--data", required=True, help="folder of images, or 'builtin'")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--iters", type=int, default=defaults.iters)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (absolute)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--warmup-iters", type=int, default=None, help="default: 10%% of --iters")
    p.add_argument("--clip-grad", type=float, default=defaults.clip_grad, help="gradient-norm clip (0: off)")
    p.add_argument("--drop-path", type=float, default=defaults.drop_path)
    p.add_argument("--mask-ratio", type=float, default=defaults.mask_ratio)
    p.add_argument("--min-mask-patches", type=int, default=None,
                   help="smallest mask block (default: BEiT's 16 of 196 patches, scaled to the grid)")
    p.add_argument("--vocab-size", type=int, default=defaults.vocab_size, help="visual tokens (k-means centroids)")
    p.add_argument("--tokenizer-patches", type=int, default=defaults.tokenizer_patches,
                   help="patches the k-means codebook is fitted on")
    p.add_argument("--tokenizer-iters", type=int, default=defaults.tokenizer_iters, help="Lloyd iterations")
    p.add_argument("--img-size", type=int, default=defaults.img_size)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--log-every", type=int, default=defaults.log_every)
    p.add_argument("--save-every", type=int, default=defaults.save_every,
                   help="write checkpoint-last.pth every N iterations (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue OUTPUT/checkpoint-last.pth")
    p.add_argument("--device", default=defaults.device, help="cpu or cuda")
    a = p.parse_args(argv)
    if a.data == "builtin":
        from mae_transfer.data import builtin_image_dir
        a.data = str(builtin_image_dir())
    return BEiTStylePretrainConfig(
        data=a.data, output=a.output, model=a.model, depth=a.depth, iters=a.iters, batch_size=a.batch_size,
        lr=a.lr, weight_decay=a.weight_decay, warmup_iters=a.warmup_iters, clip_grad=a.clip_grad,
        drop_path=a.drop_path, mask_ratio=a.mask_ratio, min_mask_patches=a.min_mask_patches,
        vocab_size=a.vocab_size, tokenizer_patches=a.tokenizer_patches, tokenizer_iters=a.tokenizer_iters,
        img_size=a.img_size, seed=a.seed, log_every=a.log_every, save_every=a.save_every,
        resume=a.resume, device=a.device)


@report_errors("pretrain_beit")
def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    setup_logging()
    pretrain_beit_style(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
