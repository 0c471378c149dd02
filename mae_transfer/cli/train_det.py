"""Train / evaluate Mask R-CNN with a plain ViT backbone (Detectron2 ``train_net.py`` semantics).

    mae-train-det --config coco_vitb_mae.yaml --num-gpus 8
    mae-train-det --config demo_vit_tiny                       # CPU, built-in data
    mae-train-det --config demo_vit_tiny --num-gpus 2          # CPU: 2 gloo processes
    mae-train-det --config coco_vitb_mae --resume              # continue after a crash
    mae-train-det --config coco_vitb_mae --eval-only --vis 8 MODEL.WEIGHTS output/model_final.pth
    mae-train-det --config demo_vit_tiny --register-coco mine_train train.json images/ \
        DATASETS.TRAIN "('mine_train',)" DATASETS.TEST "()"

(``python tools/train_det.py`` and ``python -m mae_transfer.cli.train_det`` are the same command.)
Multi-machine: run on every machine with --num-machines M --machine-rank R --dist-url tcp://HOST0:PORT.
SOLVER.IMS_PER_BATCH is the total batch over all processes; see configs/det/Base-ViTDet-MaskRCNN.yaml
for scaling the learning rate with it.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.engine import default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.multiprocessing import ProcessExitedException

from mae_transfer.det.checkpoint import AtomicCheckpointer
from mae_transfer.det.config import load_config, resolve_config_path
from mae_transfer.det.data import prepare_datasets, register_coco_dataset
from mae_transfer.det.engine import Trainer, share_cpu_threads, summary_line
from mae_transfer.det.guards import check_inputs, check_output_dir
from mae_transfer.det.visualize import save_visualizations
from mae_transfer.errors import ConfigError, LostRankError, report_errors
from mae_transfer.utils.dist import TIMEOUT_ENV, dist_timeout, is_peer_failure, lost_rank_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--config-file", dest="config", default="", metavar="FILE",
                        help="config path, or a bare name in configs/det/ (e.g. coco_vitb_mae)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    parser.add_argument("--vis", type=int, default=0, metavar="N",
                        help="with --eval-only: save N PNGs with predictions to OUTPUT_DIR/vis")
    parser.add_argument("--num-gpus", type=int, default=None,
                        help="processes per machine (default: all GPUs, or 1 on CPU; on CPU each is a gloo process)")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines-1)")
    parser.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT of machine 0 (auto: a free local port)")
    parser.add_argument("--register-coco", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_ROOT"),
                        help="register a COCO-format dataset so DATASETS.TRAIN/TEST can name it (repeatable)")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="allow checkpoints that run code when unpickled (trusted files only)")
    parser.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                        help=f"with several processes: how long a rank waits for the others before the run stops "
                             f"naming the lost rank (default ${TIMEOUT_ENV}, else 1800)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config overrides (options may come before, between or after them)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options anywhere on the command line, as MMEngine's tools accept them: config keys never start
    with ``--``, so every ``--option`` (with its values) is an option and every other token an override."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    options, overrides, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        action = _option_action(parser, token)
        if action is None and not token.startswith("--"):
            overrides.append(token)
            i += 1
            continue
        takes = 0 if action is None or "=" in token else _value_count(action.nargs)
        options += argv[i:i + 1 + takes]
        i += 1 + takes
    args = parser.parse_args(options)
    args.opts = overrides
    return args


def _option_action(parser: argparse.ArgumentParser, token: str) -> argparse.Action | None:
    name = token.split("=", 1)[0]
    if name in parser._option_string_actions:
        return parser._option_string_actions[name]
    if not name.startswith("--"):
        return None
    prefixed = {a for s, a in parser._option_string_actions.items() if s.startswith(name)}  # argparse abbreviations
    return prefixed.pop() if len(prefixed) == 1 else None


def _value_count(nargs) -> int:
    return 1 if nargs is None else nargs if isinstance(nargs, int) else 1


def build_config(args: argparse.Namespace) -> CfgNode:
    """Config file + overrides + what the machine implies (CPU: no AMP); datasets registered."""
    for name, json_file, image_root in args.register_coco:
        register_coco_dataset(name, json_file, image_root)
    cfg = load_config(args.config, args.opts)
    if args.unsafe_load:
        cfg.MODEL.UNSAFE_LOAD = True
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        cfg.SOLVER.AMP.ENABLED = False  # Detectron2's AMP trainer needs CUDA
    world_size = args.num_gpus * args.num_machines
    if not args.eval_only and cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the {world_size} processes; "
            f"set it to a multiple of {world_size}."
        )
    check_inputs(cfg, eval_only=args.eval_only, resume=args.resume)  # paths, COCO json, image files
    cfg = prepare_datasets(cfg)
    check_output_dir(cfg, eval_only=args.eval_only, resume=args.resume)  # never overwrite an earlier run
    cfg.freeze()
    return cfg


def _drop_earlier_log_handlers() -> None:
    """Only this run's log handlers: Detectron2's ``setup_logger`` adds (and caches) handlers per
    output dir, so a second run in one process (tests, notebooks) would print every line twice."""
    for name in ("detectron2", "fvcore", "mae_transfer"):
        named_logger = logging.getLogger(name)
        for handler in list(named_logger.handlers):
            named_logger.removeHandler(handler)
    setup_logger.cache_clear()


def train_worker(args: argparse.Namespace):
    """One process's job (called once, or by ``launch`` in every process)."""
    cfg = build_config(args)
    share_cpu_threads()
    args.config_file = str(resolve_config_path(args.config)) if args.config else ""
    _drop_earlier_log_handlers()
    default_setup(cfg, args)  # log.txt, config.yaml, seeds
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mae_transfer", abbrev_name="mt")
    try:
        if not args.eval_only:
            trainer = Trainer(cfg)
            trainer.resume_or_load(resume=args.resume)
            try:
                return trainer.train()
            except RuntimeError as error:  # a collective failed: another rank died or stopped answering
                if comm.get_world_size() > 1 and is_peer_failure(error):
                    raise lost_rank_error(error) from None
                raise
        model_cfg = cfg.clone()
        model_cfg.defrost()
        model_cfg.MODEL.VIT.WEIGHTS = ""  # MODEL.WEIGHTS (a whole detector) replaces them anyway
        model = Trainer.build_model(model_cfg)
        AtomicCheckpointer(model, cfg.OUTPUT_DIR, unsafe=cfg.MODEL.UNSAFE_LOAD).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            logging.getLogger("mae_transfer.det").info(summary_line(results, cfg.OUTPUT_DIR))
            if args.vis and cfg.DATASETS.TEST:
                save_visualizations(cfg, model, cfg.DATASETS.TEST[0], args.vis, os.path.join(cfg.OUTPUT_DIR, "vis"))
        return results
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()  # gloo processes can abort at exit without this


@report_errors("train_det")
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, check the config in this process, then train/evaluate in 1..N processes."""
    args = parse_args(argv)
    if args.num_gpus is None:
        args.num_gpus = max(torch.cuda.device_count(), 1)
    if args.num_machines > 1 and args.dist_url == "auto":
        raise ConfigError("--num-machines > 1 needs --dist-url tcp://HOST:PORT of machine 0.")
    build_config(args)  # user errors surface here once, before any process starts
    try:
        launch(train_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,), timeout=dist_timeout(args.dist_timeout))
    except ProcessExitedException as err:  # a process of this machine died without raising (killed, OOM)
        rank = args.machine_rank * args.num_gpus + err.error_index
        signal = f" ({err.signal_name})" if err.signal_name else ""
        raise LostRankError(f"rank {rank} (process {err.error_pid}) died with exit code {err.exit_code}{signal}; "
                            "the other processes of this machine were stopped; check its memory and log, then "
                            "restart with --resume.") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
