"""Process-group helpers shared by both tools: per-rank RNG state, the group timeout, lost ranks.

* :func:`gather_rng_states` / :func:`restore_rng_state`: every rank's Python, NumPy and torch
  (CPU, CUDA) RNG state, collected on all ranks so the checkpoint writer can store them, and each
  rank restoring its own on resume (or reseeding from (seed, rank, iteration) when the world size
  changed).
* :func:`dist_timeout`: the process-group timeout (``--dist-timeout`` / ``MAE_TRANSFER_DIST_TIMEOUT``).
* :func:`lost_rank_error`: after a collective failed (a peer died or timed out), find which ranks
  are gone and say so in one sentence.
"""
from __future__ import annotations

import datetime
import logging
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist

from mae_transfer.errors import ConfigError, LostRankError

logger = logging.getLogger("mae_transfer.dist")

TIMEOUT_ENV = "MAE_TRANSFER_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # what torch uses for gloo/NCCL by default (30 minutes)


def dist_timeout(seconds: float | None = None) -> datetime.timedelta:
    """The process-group timeout: ``seconds`` if given, else ``$MAE_TRANSFER_DIST_TIMEOUT``, else 30 min."""
    if seconds is None:
        raw = os.environ.get(TIMEOUT_ENV, "")
        try:
            seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ConfigError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds; set it to e.g. 600.") from None
    if seconds <= 0:
        raise ConfigError(f"The distributed timeout must be positive (got {seconds} s); pass e.g. --dist-timeout 600.")
    return datetime.timedelta(seconds=seconds)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# ----------------------------------------------------------------------------- RNG state

def get_rng_state() -> dict:
    """This process's Python, NumPy and torch RNG states as tensors and plain Python values.

    Stored without NumPy objects so that a checkpoint holding it loads with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def gather_rng_states() -> list[dict]:
    """Every rank's :func:`get_rng_state`, index = rank (a collective: call it on all ranks)."""
    local = get_rng_state()
    if not is_distributed():
        return [local]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def reseed(seed: int, rank: int, iteration: int) -> None:
    """Seed Python, NumPy and torch from (seed, rank, iteration) (a resume with another world size)."""
    value = int(np.random.SeedSequence([max(seed, 0), rank, iteration]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def restore_rng_state(states: list[dict] | None, seed: int, iteration: int, torch_only: bool = False) -> str:
    """Restore this rank's entry of ``states`` (from :func:`gather_rng_states`); with ``torch_only``
    only torch's CPU/CUDA generators (for a framework that reproduces the others by replaying).

    When the checkpoint was written by another number of processes (or holds no per-rank states),
    reseed from (seed, rank, iteration) instead and log it once. Returns "restored" or "reseeded".
    """
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if states and len(states) == world:
        if torch_only:
            torch.set_rng_state(states[rank]["torch"])
            if "cuda" in states[rank] and torch.cuda.is_available():
                torch.cuda.set_rng_state(states[rank]["cuda"])
        else:
            set_rng_state(states[rank])
        return "restored"
    saved = len(states) if states else "an unknown number of"
    if rank == 0:
        logger.warning("The checkpoint was written by %s processes, this run has %d: every rank's RNG is "
                       "reseeded from (seed %d, rank, iteration %d), so the run continues differently from "
                       "an uninterrupted one.", saved, world, seed, iteration)
    reseed(seed, rank, iteration)
    return "reseeded"


# ----------------------------------------------------------------------------- lost ranks

_ALIVE_KEY = "mae_transfer/alive/{}"


def lost_rank_error(error: BaseException, wait_s: float = 5.0) -> LostRankError:
    """A :class:`LostRankError` naming the ranks that are gone, after ``error`` broke a collective.

    Every surviving rank announces itself in the process group's store and waits up to ``wait_s``
    for the others; ranks that never announce are reported as lost. When the store itself is gone,
    rank 0 (which hosts it) is the lost one.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    lost: list[int] | None = None
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set(_ALIVE_KEY.format(rank), "1")
        deadline = time.monotonic() + wait_s
        while True:
            lost = [r for r in range(world) if r != rank and not store.check([_ALIVE_KEY.format(r)])]
            if not lost or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    except Exception:  # the store lives in rank 0's process
        lost = [0] if rank != 0 else None
    names = ", ".join(map(str, lost)) if lost else "unknown (all answered after the failure)"
    reason = " ".join(str(error).split())[:200]
    return LostRankError(
        f"Rank {rank} stopped: lost contact with rank {names} of {world} ({type(error).__name__}: {reason}); "
        f"check that process's log and machine, then restart with --resume (timeout: --dist-timeout / {TIMEOUT_ENV}).")


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another rank died or timed out."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in text for marker in ("gloo", "Gloo", "NCCL", "Connection closed by peer", "Connection reset",
                                      "Timed out", "timed out", "Broken pipe"))
