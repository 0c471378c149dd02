"""Running MMSeg configs with MMEngine's Runner on GPUs or CPUs, one place for every device quirk.

* Distributed: the process group is initialised *before* the Runner is built (NCCL on GPUs, gloo
  on CPU), so MMEngine skips its own ``init_dist``, which calls ``torch.cuda.set_device``
  unconditionally. Without CUDA, DDP is built with ``device_ids=None`` (MMEngine passes
  ``[LOCAL_RANK]``, which DDP rejects for CPU modules) and SyncBN becomes BN (SyncBN needs GPUs).
* AMP (``AmpOptimWrapper``) needs a GPU: on CPU the run falls back to fp32 with a warning.
* Checkpoints are written atomically (temporary file, fsync, rename) and are plain data that
  ``torch.load(weights_only=True)`` reads (see :class:`~mae_transfer.seg.checkpoint.ResumableCheckpointHook`);
  a checkpoint that needs pickled code is refused unless the user allows it (``unsafe_load``).
  Every rank's RNG state is gathered into each checkpoint, and each rank restores its own.
* A non-finite loss on any rank stops all ranks before the optimizer step
  (:mod:`mae_transfer.seg.optim_wrapper`).
* The process group has a timeout (``--dist-timeout`` / ``MAE_TRANSFER_DIST_TIMEOUT``); when a
  rank dies or stops answering, the others stop with a message naming it.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from mae_transfer.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from mae_transfer.utils.dist import dist_timeout, gather_rng_states, is_distributed, is_peer_failure, lost_rank_error
from mae_transfer.utils.fileio import atomic_write_file
from mae_transfer.utils.logger import get_logger
from mae_transfer.utils.run_dir import is_local

# The modules that register what configs name (MODELS, TRANSFORMS, HOOKS, optimizer constructor).
from . import backbone, checkpoint, neck, transforms  # noqa: F401
from .hooks import MetricsJsonHook
from .optim_wrapper import use_finite_check, watch_loss_terms
from .optimizer import apply_paramwise_freeze

logger = get_logger(__name__)

# Hooks every run gets (registered in mae_transfer.seg.hooks); NonFiniteLossHook only when the config
# names an optimizer wrapper that mae_transfer.seg.optim_wrapper cannot replace by a checking one.
DEFAULT_HOOKS = ("MetricsJsonHook", "ResumableCheckpointHook")


def init_distributed(launcher: str) -> tuple[int, int]:
    """Initialise the default process group for ``launcher`` ("none", "pytorch" or "slurm").

    Returns:
        (rank, world_size); (0, 1) for "none".
    """
    if launcher == "none":
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if launcher == "slurm":
        _slurm_env_to_torch_env()
    elif launcher != "pytorch":
        raise ConfigError(f"--launcher {launcher!r} is not supported; use none, pytorch or slurm.")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    timeout = dist_timeout()
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout)
    logger.info("process group: %s, rank %d of %d, timeout %d s", backend, rank, world_size, timeout.total_seconds())
    return rank, world_size


def _slurm_env_to_torch_env() -> None:
    """Set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from Slurm's variables (srun)."""
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        nodes = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_NODELIST"]],
                               capture_output=True, text=True, check=True).stdout.split()
        os.environ["MASTER_ADDR"] = nodes[0]
    os.environ.setdefault("MASTER_PORT", "29500")


def destroy_distributed() -> None:
    """Tear the process group down (a gloo process exiting without this can abort with -6)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def replace_syncbn(node: Any) -> int:
    """Turn ``dict(type='SyncBN')`` and ``norm='SyncBN'`` into BN in a config tree; count them."""
    count = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if value == "SyncBN" and key in ("type", "norm"):
                node[key] = "BN"
                count += 1
            else:
                count += replace_syncbn(value)
    elif isinstance(node, list):
        count += sum(replace_syncbn(item) for item in node)
    return count


def adapt_to_device(cfg: Config, cuda: bool | None = None) -> None:
    """Make ``cfg`` run on this machine: SyncBN/AMP/DDP settings for CPU; nothing changes on GPUs."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return
    if replace_syncbn(cfg.model):
        logger.info("no GPU: SyncBN layers are built as BN")
    optim_wrapper = cfg.get("optim_wrapper")
    if optim_wrapper is not None and optim_wrapper.get("type") == "AmpOptimWrapper":
        logger.warning("no GPU: mixed precision (AmpOptimWrapper) is turned off; training in fp32")
        optim_wrapper.type = "OptimWrapper"
        for key in ("loss_scale", "dtype", "use_fsdp"):
            optim_wrapper.pop(key, None)
    if cfg.get("launcher", "none") != "none":
        wrapper = dict(cfg.get("model_wrapper_cfg") or {})
        wrapper.setdefault("type", "MMDistributedDataParallel")
        wrapper.update(device_ids=None, broadcast_buffers=False)
        cfg.model_wrapper_cfg = wrapper
        cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"


def add_default_hooks(cfg: Config) -> None:
    """Append the project's hooks (metrics json, resumable checkpoints) once; the non-finite loss
    check goes into the optimizer wrapper (or, for other wrapper types, a hook after the step)."""
    hooks = list(cfg.get("custom_hooks") or [])
    present = {h.get("type") for h in hooks if isinstance(h, dict)}
    interval = cfg.get("default_hooks", {}).get("logger", {}).get("interval", 50)
    names = DEFAULT_HOOKS if use_finite_check(cfg) else DEFAULT_HOOKS + ("NonFiniteLossHook",)
    for name in names:
        if name not in present:
            hooks.append(dict(type=name, interval=interval) if name == "MetricsJsonHook" else dict(type=name))
    cfg.custom_hooks = hooks


@contextlib.contextmanager
def _unsafe_torch_load(enabled: bool) -> Iterator[None]:
    """Let MMEngine's ``torch.load`` unpickle arbitrary objects (only when the user asked)."""
    if not enabled:
        yield
        return
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous


class MAETransferRunner(Runner):
    """MMEngine's Runner with atomic checkpoint writes and safe, clearly failing checkpoint loads.

    ``cfg.unsafe_load = True`` (``--unsafe-load``) allows checkpoints that need pickled code.
    The freeze policy of ``optim_wrapper.paramwise_cfg.freeze`` is applied when the model is
    built, before DistributedDataParallel records which parameters need gradients.
    """

    def build_model(self, model):
        model = super().build_model(model)
        paramwise = (self.cfg.get("optim_wrapper") or {}).get("paramwise_cfg") or {}
        if paramwise.get("freeze"):
            frozen = apply_paramwise_freeze(model, paramwise)
            logger.info("freeze policy %s: %d parameter tensors frozen", paramwise["freeze"], len(frozen))
        watch_loss_terms(model)
        return model

    def build_optim_wrapper(self, optim_wrapper):
        wrapper = super().build_optim_wrapper(optim_wrapper)
        wrapper.work_dir = self.work_dir  # named in the non-finite loss message
        return wrapper

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        """Gather every rank's RNG state (all ranks call this), then write atomically on rank 0."""
        self.rng_states = gather_rng_states()  # stored by ResumableCheckpointHook.before_save_checkpoint
        if not is_main_process():
            return
        save = super().save_checkpoint  # writes out_dir/<name>; here the temporary name
        atomic_write_file(Path(out_dir) / filename, lambda tmp: save(out_dir, tmp.name, *args, **kwargs))

    def load_checkpoint(self, filename: str, *args, **kwargs):
        unsafe = bool(self.cfg.get("unsafe_load", False))
        if is_local(filename) and not Path(filename).is_file():
            raise CheckpointError(f"Checkpoint {filename} does not exist; check the path.")
        try:
            with _unsafe_torch_load(unsafe):
                return super().load_checkpoint(filename, *args, **kwargs)
        except pickle.UnpicklingError as error:
            if "Weights only load failed" in str(error):
                raise UnsafeCheckpointError(
                    f"Checkpoint {filename} contains pickled Python objects that could run code when "
                    "loaded; if you trust its source, pass --unsafe-load (cfg unsafe_load=True).") from None
            raise CheckpointError(f"Checkpoint {filename} is corrupt or truncated ({error}); "
                                  "use another checkpoint.") from None
        except (RuntimeError, EOFError) as error:
            if "zip archive" in str(error) or "central directory" in str(error) or isinstance(error, EOFError):
                raise CheckpointError(f"Checkpoint {filename} is corrupt or truncated ({error}); "
                                      "use another checkpoint.") from None
            raise


def build_runner(cfg: Config) -> MAETransferRunner:
    """Adapt ``cfg`` to the device, add the project's hooks and build the Runner.

    Call :func:`init_distributed` first when ``cfg.launcher`` is not "none".
    """
    adapt_to_device(cfg)
    add_default_hooks(cfg)
    give_visualizer_own_name(cfg)
    return MAETransferRunner.from_cfg(cfg)


def give_visualizer_own_name(cfg: Config) -> None:
    """A fresh visualizer per run: MMEngine returns an *existing* instance of the same name, whose
    ``save_dir`` (PNGs, scalars.json) would be an earlier run's when one process runs twice."""
    visualizer = cfg.get("visualizer")
    if isinstance(visualizer, dict):
        visualizer["name"] = f"{visualizer.get('name') or 'visualizer'}-{uuid.uuid4().hex[:8]}"


def run(cfg: Config, eval_only: bool = False) -> dict:
    """Initialise the process group, train (or only evaluate ``cfg.load_from``), tear down.

    Returns:
        The last validation/test metrics (``{}`` when none were computed).
    """
    try:
        _, world_size = init_distributed(cfg.get("launcher", "none"))
        if cfg.get("resume") and not cfg.get("load_from"):
            logger.info("--resume: no checkpoint in %s yet; starting from the beginning", cfg.work_dir)
        runner = build_runner(cfg)
        if not eval_only:
            total = world_size * cfg.train_dataloader.batch_size
            recipe = (cfg.get("auto_scale_lr") or {}).get("base_batch_size")
            if recipe and total != recipe:
                logger.warning("total batch %d (%d processes x %d) differs from the recipe's %d; see the "
                               "config's comment or enable auto_scale_lr", total, world_size,
                               cfg.train_dataloader.batch_size, recipe)
        if eval_only:
            runner.test()
        else:
            try:
                runner.train()
            except RuntimeError as error:  # a collective failed: another rank died or stopped answering
                if is_distributed() and is_peer_failure(error):
                    raise lost_rank_error(error) from None
                raise
        hook = next(h for h in runner.hooks if isinstance(h, MetricsJsonHook))
        return dict(hook.last_metrics or {})
    finally:
        destroy_distributed()
