"""The detection trainer: Detectron2's ``DefaultTrainer`` made to run on CPU (gloo) and GPUs (NCCL).

Differences from ``DefaultTrainer``, each for a reason:

* DDP is created by :func:`create_ddp_model_any_device` (Detectron2 passes ``device_ids=[rank]``,
  which DDP rejects for CPU modules);
* the optimizer comes from :mod:`mae_transfer.det.optimizer` (layer decay, freeze policies);
* the train loader uses :mod:`mae_transfer.det.data` (LSJ, resumable sample order);
* checkpoints are written atomically and carry every rank's RNG state and the data seed
  (:mod:`mae_transfer.det.checkpoint`, :mod:`mae_transfer.det.resume_state`);
* a non-finite loss on any rank stops all ranks with :class:`NonFiniteLossError` (iteration + loss terms)
  before the optimizer step, so weights and the last checkpoint stay good;
* evaluation uses COCOEvaluator and the run ends with one summary line (bbox AP, mask AP).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import weakref
from collections import OrderedDict
from typing import Mapping

import torch
from detectron2.config import CfgNode
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from mae_transfer.errors import NonFiniteLossError
from mae_transfer.optim import find_backbone_prefix

from . import optimizer as det_optimizer
from .checkpoint import AtomicCheckpointer
from .data import build_test_loader, build_train_loader, data_seed, prepare_datasets
from .resume_state import GatherRngStates, apply_resume_state, insert_before_checkpointer, resume_state

logger = logging.getLogger("mae_transfer.det")


def create_ddp_model_any_device(model: torch.nn.Module, fp16_compression: bool = False) -> torch.nn.Module:
    """Wrap ``model`` in DistributedDataParallel when there are several processes.

    CUDA models get ``device_ids=[local_rank]`` (NCCL, as Detectron2 does); CPU models get
    ``device_ids=None`` (gloo), the only form DDP accepts for CPU modules. ``fp16_compression``
    registers Detectron2's fp16 all-reduce hook (``SOLVER.FP16_COMPRESSION``; works on gloo too).
    """
    on_cuda = next(model.parameters()).is_cuda
    device_ids = [comm.get_local_rank()] if on_cuda else None
    return create_ddp_model(model, device_ids=device_ids, broadcast_buffers=False,
                            fp16_compression=fp16_compression)


def share_cpu_threads() -> None:
    """With N processes on one machine's CPUs, give each cores/N intra-op threads.

    Without this every gloo process starts as many threads as there are cores, and they thrash
    (10x slower steps on 2 cores). No effect on GPU runs or single processes.
    """
    if not torch.cuda.is_available() and comm.get_local_size() > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))


def non_finite_loss(iteration: int, losses: Mapping[str, float],
                    last_checkpoint: str | None = None) -> NonFiniteLossError:
    """The error that stops every rank before the optimizer step when a loss became NaN/inf."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    terms = ", ".join(f"{k}={v}" for k, v in bad.items())
    kept = f"; last good checkpoint: {last_checkpoint}" if last_checkpoint else ""
    return NonFiniteLossError(
        f"Training stopped: non-finite loss at iteration {iteration} ({terms}; all terms: "
        + ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        + f"{kept}); lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS or check the data, then --resume.",
        iteration=iteration, losses=losses, last_checkpoint=last_checkpoint)


class _FiniteLossCheck:
    """Mixin for Detectron2's Simple/AMP trainers: stop every rank when any loss term is non-finite."""

    stopped_non_finite = False  # set before raising, so that no checkpoint is written afterwards

    def _write_metrics(self, loss_dict, data_time, prefix="", iter=None):
        # Detectron2 calls this after backward and before optimizer.step, on every rank.
        iteration = self.iter if iter is None else iter
        local = {k: float(v.detach()) for k, v in loss_dict.items()}
        all_losses = comm.all_gather(local) if comm.get_world_size() > 1 else [local]
        if not all(math.isfinite(v) for losses in all_losses for v in losses.values()):
            worst = next(l for l in all_losses if not all(math.isfinite(v) for v in l.values()))  # same on all ranks
            self.stopped_non_finite = True
            raise non_finite_loss(iteration, worst)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)


class _CheckedSimpleTrainer(_FiniteLossCheck, SimpleTrainer):
    pass


class _CheckedAMPTrainer(_FiniteLossCheck, AMPTrainer):
    pass


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` for ViT Mask R-CNN on CPU or GPUs; see the module docstring."""

    def __init__(self, cfg: CfgNode):
        # DefaultTrainer.__init__ hard-codes a CUDA-only DDP wrapper, so the same steps are
        # spelled out here with the device-aware one.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        share_cpu_threads()
        cfg = prepare_datasets(self.auto_scale_workers(cfg, comm.get_world_size()))
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        self.data_seed = data_seed(cfg)
        data_loader = build_train_loader(cfg, seed=self.data_seed)
        model = create_ddp_model_any_device(model, fp16_compression=cfg.SOLVER.FP16_COMPRESSION)
        trainer_cls = _CheckedAMPTrainer if cfg.SOLVER.AMP.ENABLED else _CheckedSimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, unsafe=cfg.MODEL.UNSAFE_LOAD,
                                               trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self._rng_gatherer = GatherRngStates(cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.MAX_ITER)
        self.register_hooks(insert_before_checkpointer(self.build_hooks(), self._rng_gatherer))

    def resume_or_load(self, resume: bool = True) -> None:
        """Load the last checkpoint (``resume``) or ``MODEL.WEIGHTS``; on resume, every rank restores its
        own RNG state and the loader continues where the interrupted run was."""
        self._resume = None
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:
            saved_seed, _ = apply_resume_state(self._resume, self.cfg.SEED, self.start_iter)
            self.data_seed = self.data_seed if saved_seed is None else saved_seed
            start, seed = self.start_iter, self.data_seed
            self._trainer.reset_data_loader(lambda: build_train_loader(self.cfg, start_iter=start, seed=seed))

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["resume"] = resume_state(self._rng_gatherer, self.data_seed)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._resume = state_dict.get("resume")  # applied in resume_or_load, after all states loaded

    def train(self) -> OrderedDict | None:
        """Train, evaluate at the end, and log one summary line with bbox and mask AP.

        Every rank also logs a digest of its weights before and after training (``log.txt`` /
        ``log.txt.rank{r}``); in a healthy data-parallel run all ranks log the same digests.
        """
        logger.info(f"Weights digest at iteration {self.start_iter}: {weights_digest(self.model)}")
        try:
            results = super().train()
        except NonFiniteLossError as error:  # name the checkpoint that --resume will continue from
            has_last = self.checkpointer.has_checkpoint()
            last = self.checkpointer.get_checkpoint_file() if has_last else "none written yet"
            raise non_finite_loss(error.iteration, error.losses, last) from None
        logger.info(f"Weights digest at iteration {self.iter}: {weights_digest(self.model)}")
        results = getattr(self, "_last_eval_results", results)
        if comm.is_main_process() and results:
            logger.info(summary_line(results, self.cfg.OUTPUT_DIR))
        return results

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        """Layer decay + freeze policy for ViT backbones; Detectron2's own optimizer for CNNs."""
        if not _has_vit(model):
            return super().build_optimizer(cfg, model)
        return det_optimizer.build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> COCOEvaluator:
        return COCOEvaluator(dataset_name, output_dir=os.path.join(cfg.OUTPUT_DIR, "inference"))


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of all parameters and buffers, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _has_vit(model: torch.nn.Module) -> bool:
    try:
        find_backbone_prefix(model)
    except ValueError:
        return False
    return True


def summary_line(results: Mapping, output_dir: str = "") -> str:
    """``"Final: <dataset> bbox AP 50.30, mask AP 44.90 (output: DIR)"`` from evaluation results.

    ``results`` is a dataset's result dict (``{"bbox": {"AP": ...}, "segm": {...}}``) or a dict of
    those keyed by dataset name, as ``DefaultTrainer.test`` returns.
    """
    per_dataset = results if results and "bbox" not in results else {"": results}
    parts = []
    for name, res in per_dataset.items():
        box = res.get("bbox", {}).get("AP", float("nan"))
        mask = res.get("segm", {}).get("AP", float("nan"))
        parts.append(f"{name + ' ' if name else ''}bbox AP {box:.2f}, mask AP {mask:.2f}")
    return "Final: " + "; ".join(parts) + (f" (output: {output_dir})" if output_dir else "")
