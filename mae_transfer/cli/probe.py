"""Frozen-feature segmentation probe (DINOv2's linear / multiscale protocol) of one or more inits.

    # random init on the built-in data, 3 seeds (about a minute on 2 CPU cores; --threads 1 when busy)
    mae-probe --inits random --output output/probe
    # your checkpoints on ADE20K at 256 px, last 4 blocks
    mae-probe --data data/ade/ADEChallengeData2016 --inits random mae=mae_vitb.pth \\
        --arch vit_base_patch16 --img-size 256 --protocol multiscale --output output/probe_vitb

The backbone stays frozen; its patch tokens (final norm applied) are computed once and a BatchNorm +
1x1 conv head is trained on them per seed (fixed schedule), then evaluated on the validation split
(mIoU as MMSeg's IoUMetric). Writes OUTPUT/probe.json (per init: per-seed mIoU, mean, std) and prints
``init | mIoU mean ± std | per-seed values``.
(``python tools/probe.py`` and ``python -m mae_transfer.cli.probe`` are the same command.)
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch

from mae_transfer.data import builtin_dataset
from mae_transfer.errors import ConfigError, report_errors
from mae_transfer.models import PRESETS
from mae_transfer.probe import BackboneInit, HeadConfig, format_table, load_ade, run_probe, summarize, write_probe_json
from mae_transfer.utils.logger import get_logger, setup_logging

logger = get_logger(__name__)


def parse_inits(entries: Sequence[str]) -> list[tuple[str, Optional[str]]]:
    """``random`` or ``NAME=PATH`` -> ``(name, path or None)``; names must be unique.

    Raises:
        ConfigError: an entry of another form, an empty name or path, a missing file, a repeated name.
    """
    inits: list[tuple[str, Optional[str]]] = []
    for entry in entries:
        if entry == "random":
            name, path = "random", None
        else:
            name, sep, path = entry.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--inits entry {entry!r} is neither 'random' nor NAME=PATH; "
                                  f"write e.g. mae=output/mae/checkpoint-last.pth.")
            if "://" not in path and not Path(path).is_file():
                raise ConfigError(f"Checkpoint {path} of --inits {name}= does not exist; pass an existing file.")
        if name in {n for n, _ in inits}:
            raise ConfigError(f"--inits names {name!r} twice; give each init its own NAME.")
        inits.append((name, path))
    return inits


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    head = HeadConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="ADE20K-layout folder (default: the built-in builtin_ade)")
    p.add_argument("--inits", nargs="+", default=["random"], metavar="INIT", help="random or NAME=CHECKPOINT")
    p.add_argument("--arch", default="vit_tiny_patch16", help="a mae_transfer.models preset")
    p.add_argument("--img-size", type=int, default=128, help="square side images and labels are resized to")
    p.add_argument("--protocol", default="linear", choices=["linear", "multiscale"],
                   help="linear: last block; multiscale: last 4 blocks concatenated")
    p.add_argument("--seeds", type=int, default=3, help="runs per init, seeds 0..N-1")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=head.steps, help="head training steps")
    length.add_argument("--epochs", type=float, default=None, help="head training epochs (instead of --steps)")
    p.add_argument("--batch-size", type=int, default=head.batch_size, help="feature maps per head step")
    p.add_argument("--num-classes", type=int, default=None, help="default: from the data")
    p.add_argument("--no-flip", action="store_true", help="no horizontally flipped training copies")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is fastest on a busy machine, where "
                        "the small head steps thrash with several threads")
    p.add_argument("--unsafe-load", action="store_true", help="allow pickled checkpoints that run code")
    p.add_argument("--output", default="output/probe", help="where probe.json goes")
    return p.parse_args(argv)


def _check(args: argparse.Namespace) -> None:
    if args.arch not in PRESETS:
        raise ConfigError(f"--arch {args.arch!r} is not a known architecture; choose one of {sorted(PRESETS)}.")
    for flag, value in (("--seeds", args.seeds), ("--img-size", args.img_size), ("--steps", args.steps),
                        ("--batch-size", args.batch_size)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}.")


@report_errors("probe")
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    _check(args)
    inits = parse_inits(args.inits)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    class_names = None
    if args.data is None:
        dataset = builtin_dataset("builtin_ade")
        root, class_names = dataset.root, list(dataset.class_names)
    else:
        root = Path(args.data)
    num_classes = args.num_classes or (len(class_names) if class_names else None)
    train, val, num_classes = load_ade(root, args.img_size, num_classes)
    head = HeadConfig(steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, flip=not args.no_flip)
    seeds = list(range(args.seeds))
    logger.info("probe: %d train / %d val images at %d px, %d classes, %s protocol, seeds %s", len(train),
                len(val), args.img_size, num_classes, args.protocol, seeds)
    summaries, start = {}, time.perf_counter()
    for name, path in inits:
        init = BackboneInit(name, args.arch, args.img_size, path, unsafe=args.unsafe_load)
        results = run_probe(init, train, val, args.protocol, seeds, num_classes, head, args.device)
        summaries[name] = summarize(results)
        logger.info("probe %s done: mIoU %.2f ± %.2f (elapsed %.1fs)", name, summaries[name]["mIoU"]["mean"],
                    summaries[name]["mIoU"]["std"], time.perf_counter() - start)
    settings = dict(data=str(root), arch=args.arch, img_size=args.img_size, protocol=args.protocol, seeds=seeds,
                    num_classes=num_classes, class_names=class_names, num_train=len(train), num_val=len(val),
                    inits={n: p for n, p in inits}, head=asdict(head))
    path = write_probe_json(Path(args.output) / "probe.json", summaries, settings)
    print(format_table(summaries))
    print(f"wrote: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
