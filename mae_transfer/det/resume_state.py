"""What a detection checkpoint carries beyond weights/optimizer/scheduler, so every rank resumes exactly.

Detectron2 writes checkpoints from rank 0 only (its ``PeriodicCheckpointer`` exists on the main
process), so rank 0 alone cannot save the other ranks' RNG states. :class:`GatherRngStates` runs
on every rank right before that hook and, at the iterations it will save, gathers all ranks' RNG
states (Python, NumPy, torch CPU/CUDA) to every rank; rank 0's trainer stores the list in the
checkpoint (``trainer.resume``), with the data seed and the number of processes. The sampler's
position is not stored: it is recomputed from the iteration (:mod:`mae_transfer.det.resumable_loader`).
"""
from __future__ import annotations

from detectron2.engine import HookBase, hooks
from detectron2.utils import comm

from mae_transfer.utils.dist import gather_rng_states, restore_rng_state


class GatherRngStates(HookBase):
    """Gather every rank's RNG state at the iterations the checkpointer saves (all ranks run it)."""

    def __init__(self, period: int, max_iter: int):
        self.period, self.max_iter = period, max_iter
        self.states: list[dict] | None = None

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if (self.period > 0 and done % self.period == 0) or done >= self.max_iter:
            self.states = gather_rng_states()


def insert_before_checkpointer(hook_list: list, hook: HookBase) -> list:
    """``hook_list`` with ``hook`` placed right before the PeriodicCheckpointer (or last on other ranks)."""
    index = next((i for i, h in enumerate(hook_list) if isinstance(h, hooks.PeriodicCheckpointer)), len(hook_list))
    return hook_list[:index] + [hook] + hook_list[index:]


def resume_state(gatherer: GatherRngStates | None, data_seed: int) -> dict:
    """The ``resume`` entry of the trainer's state dict (on rank 0, at a checkpoint iteration)."""
    return {"rng_states": gatherer.states if gatherer else None, "data_seed": int(data_seed),
            "world_size": comm.get_world_size()}


def apply_resume_state(state: dict | None, seed: int, iteration: int) -> tuple[int | None, str]:
    """Restore this rank's RNG state from a checkpoint's ``resume`` entry.

    Returns:
        (the saved data seed or None, "restored" / "reseeded"); reseeding (from seed, rank,
        iteration, with one log line) happens when the number of processes changed or the
        checkpoint predates per-rank states.
    """
    state = state or {}
    how = restore_rng_state(state.get("rng_states"), seed, iteration)
    return state.get("data_seed"), how
