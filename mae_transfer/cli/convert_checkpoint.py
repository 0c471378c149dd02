"""Inspect and convert a pretrained ViT checkpoint of any supported layout.

    mae-convert-checkpoint mae_pretrain_vit_base.pth --model vit_base_patch16 \
        --img-size 1024 --window-size 14 --rel-pos decomposed --no-cls-token --out vitb_mae.safetensors

Prints the detected layout (MAE, MAE full pretraining, DeiT/timm, BEiT, MoCo v3, ViTDet, MMSeg, or
this project's own) and the load report for the chosen model; with --out, writes the loaded
tensors (resized to the model's geometry) in this project's names, plus the pyramid as
``pyramid.*`` when the checkpoint has one, to .safetensors or .pth.
(``python tools/convert_checkpoint.py`` and ``python -m mae_transfer.cli.convert_checkpoint`` are the
same command.)
"""
from __future__ import annotations

import argparse
import ast
import logging
from typing import Optional, Sequence

from torch import nn

from mae_transfer.checkpoints import convert_checkpoint, load_pretrained, read_checkpoint, save_checkpoint
from mae_transfer.errors import ConfigError, UserError, report_errors
from mae_transfer.models import PRESETS, SimplePyramid, create_vit
from mae_transfer.utils.logger import setup_logging


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="checkpoint path or http(s) URL")
    p.add_argument("--model", default="vit_base_patch16", choices=sorted(PRESETS), help="create_vit preset")
    p.add_argument("--img-size", type=int, nargs="+", default=[224], help="input size: S or H W")
    p.add_argument("--window-size", type=int, default=0, help="window attention size (0 = global)")
    p.add_argument("--global-blocks", type=int, nargs="*", default=None, help="blocks with global attention")
    p.add_argument("--rel-pos", choices=["decomposed", "beit", "beit_shared"], default=None)
    p.add_argument("--no-cls-token", action="store_true", help="build the model without class token")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="other create_vit arguments, e.g. depth=2 pretrain_img_size=1024")
    p.add_argument("--out", default=None, help="write the converted weights here (.safetensors or .pth)")
    p.add_argument("--strict", action="store_true", help="fail on unexplained missing/unexpected keys")
    p.add_argument("--unsafe-load", action="store_true",
                   help="allow pickles that run code when loaded (only for files you trust)")
    return p.parse_args(argv)


def model_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {"img_size": tuple(args.img_size) if len(args.img_size) == 2 else args.img_size[0],
              "window_size": args.window_size, "rel_pos": args.rel_pos}
    if args.global_blocks is not None:
        kwargs["global_blocks"] = tuple(args.global_blocks)
    if args.no_cls_token:
        kwargs["use_cls_token"] = False
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


class Backbone(nn.Module):
    """ViT (``net``) + ViTDet pyramid (``pyramid``), sized from the checkpoint's pyramid tensors."""

    def __init__(self, net: nn.Module, pyramid_state: dict):
        super().__init__()
        self.net = net
        out_channels = pyramid_state["simfp_4.0.weight"].shape[0]
        scales = [s for s, stage in ((4.0, 2), (2.0, 3), (1.0, 4), (0.5, 5)) if f"simfp_{stage}.0.weight" in
                  pyramid_state or f"simfp_{stage}.1.weight" in pyramid_state]
        self.pyramid = SimplePyramid(in_channels=net.embed_dim, out_channels=out_channels, scale_factors=scales)


def build_vit(args: argparse.Namespace) -> nn.Module:
    """The ``create_vit`` model the options describe; a bad option value is a :class:`ConfigError`."""
    try:
        return create_vit(args.model, **model_kwargs(args))
    except UserError:
        raise
    except (ValueError, TypeError) as err:  # create_vit rejects the --set / geometry arguments
        raise ConfigError(f"--model {args.model} with these options cannot be built: {err}") from None


@report_errors("convert_checkpoint")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.WARNING)
    checkpoint = read_checkpoint(args.src, unsafe=args.unsafe_load)
    converted = convert_checkpoint(checkpoint, name=args.src)
    model = vit = build_vit(args)
    if "simfp_4.0.weight" in converted.pyramid:
        model = Backbone(vit, converted.pyramid)
    report = load_pretrained(model, checkpoint, strict=args.strict, name=args.src)
    print(f"layout: {report.layout} ({report.description})")
    print(report.summary())
    if args.out:
        state = model.state_dict()
        tensors = {k.removeprefix("net."): state[k] for k in report.loaded}
        save_checkpoint(tensors, args.out, {"source": str(args.src), "source_layout": report.layout,
                                            "model": args.model})
        print(f"wrote {len(tensors)} tensors to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
