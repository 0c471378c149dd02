"""Backbone throughput, peak memory and FLOPs, ours against timm / Detectron2 / MMSeg.

The implementations of one group run in the same process, interleaved (A, B, C, A, B, C, ...)
after one warm-up each, and the median of the repeats is reported, so a load change on a shared
machine hits all of them alike and their ratios stay fair.
"""

from __future__ import annotations

import copy
import gc
import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from .backbones import Unavailable, build_backbone, describe
from .measure import PeakMemory, Timer, autocast, count_flops, median

__all__ = ["Group", "GROUPS", "run_group"]

logger = logging.getLogger("mae_transfer.benchmark")


@dataclass
class Group:
    """Backbones compared with each other at one input size.

    ``specs`` hold ``impl`` / ``layout`` / ``grad_ckpt`` (see :mod:`.backbones`); ``modes`` the
    steps timed (``"fwd"``: inference under ``no_grad``; ``"fwdbwd"``: forward, mean of the
    output, backward). A spec with ``"modes"`` runs only those. ``baseline`` names the impl the
    ratios are taken against (the reference), ``ours`` the one compared with it.
    """

    name: str
    img: int
    layout: str
    specs: List[Dict]
    batch: Dict[str, int] = field(default_factory=lambda: {"cpu": 1, "cuda": 4})
    modes: tuple = ("fwd", "fwdbwd")
    cpu_skip: tuple = ()  # (impl, mode) pairs left out of the default CPU run (time budget)


def _spec(impl: str, **extra) -> Dict:
    return dict(impl=impl, **extra)


GROUPS: Dict[str, Group] = {
    g.name: g
    for g in [
        Group("vit224", 224, "global", [_spec("ours"), _spec("timm")], {"cpu": 4, "cuda": 64}),
        Group(
            "win512", 512, "window",
            [_spec("ours"), _spec("d2"), _spec("timm_sam"),
             _spec("ours", grad_ckpt=True, modes=("fwdbwd",))],
            {"cpu": 1, "cuda": 16},
        ),
        Group("mae512", 512, "global", [_spec("ours_mae"), _spec("mmseg_mae")], {"cpu": 1, "cuda": 16}),
        Group(
            "win1024", 1024, "window",
            [_spec("ours"), _spec("d2"), _spec("timm_sam"),
             _spec("ours", grad_ckpt=True, modes=("fwdbwd",))],
            {"cpu": 1, "cuda": 4},
            cpu_skip=(("timm_sam", "fwdbwd"),),  # ~1 min on 2 cores; as slow as ViTDet at 512
        ),
        Group("mae1024", 1024, "global", [_spec("ours_mae"), _spec("mmseg_mae")], {"cpu": 1, "cuda": 1}),
    ]
}  # fmt: skip


@dataclass
class _Entry:
    spec: Dict
    model: torch.nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    row: Dict


def _step(entry: _Entry, x: torch.Tensor, mode: str, amp: Optional[str]) -> None:
    model, forward = entry.model, entry.forward
    if mode == "fwd":
        model.eval()
        with torch.no_grad(), autocast(x.device, amp):
            forward(x)
        return
    model.train()
    with autocast(x.device, amp):
        loss = forward(x).float().mean()
    loss.backward()
    model.zero_grad(set_to_none=True)


def _flops(spec: Dict, batch: int, img: int, mode: str) -> Optional[int]:
    """Counted on the meta device (no arithmetic is done), batch 1 scaled to ``batch``."""
    try:
        model, forward = build_backbone(spec)
        model.to("meta")
        x = torch.empty(1, 3, img, img, device="meta")
        if mode == "fwd":
            with torch.no_grad():
                flops = count_flops(lambda: forward(x))
        else:
            flops = count_flops(lambda: forward(x).float().mean().backward())
        return flops * batch
    except Exception as e:  # counting is best effort: the timing stays valid without it
        logger.warning("FLOP count failed for %s (%s): %s", describe(spec), mode, e)
        return None


def _model_flops(entries: List[_Entry], batch: int, img: int, mode: str) -> Optional[int]:
    """FLOPs of the function all implementations of a group compute: the largest count among
    them without checkpointing (a fused kernel the counter cannot see only lowers a count;
    recomputation is not counted, so checkpointing shows as lower achieved FLOP/s)."""
    counts = [_flops(e.spec, batch, img, mode) for e in entries if not e.spec.get("grad_ckpt")]
    counts = [c for c in counts if c]
    return max(counts) if counts else None


def _build(group: Group, arch: str, device: torch.device, compile_model: bool) -> List[_Entry]:
    entries = []
    for base in group.specs:
        spec = dict(base, img=group.img, layout=group.layout, arch=arch)
        row = {"group": group.name, "name": describe(spec), **copy.deepcopy(spec)}
        try:
            model, forward = build_backbone(spec)
        except Unavailable as e:
            row["skipped"] = str(e)
            logger.info("skip %s: %s", describe(spec), e)
            entries.append(_Entry(spec, None, None, row))
            continue
        model.to(device)
        if compile_model:
            forward = torch.compile(forward)
        row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        entries.append(_Entry(spec, model, forward, row))
    return entries


def run_group(
    group: Group,
    *,
    device: torch.device,
    arch: str = "base",
    repeats: int = 3,
    warmup: int = 1,
    amp: Optional[str] = None,
    compile_model: bool = False,
    gemm_peak: Optional[float] = None,
    full: bool = True,
) -> List[Dict]:
    """Run one group; returns a row per (spec, mode) with ``seconds`` (median), ``img_per_s``,
    ``peak_mem_mb``, ``flops``, ``flops_per_s``, ``peak_fraction`` (of ``gemm_peak``) and the
    raw ``times``. Skipped specs get a ``skipped`` reason instead. ``full=False`` leaves out the
    group's ``cpu_skip`` cases."""
    batch = group.batch["cuda" if device.type == "cuda" else "cpu"]
    torch.manual_seed(0)
    x = torch.randn(batch, 3, group.img, group.img, device=device)
    entries = _build(group, arch, device, compile_model)
    rows: List[Dict] = []
    for mode in group.modes:
        active = [e for e in entries if e.model is not None and mode in e.spec.get("modes", group.modes)]
        if not full:
            left_out = [e for e in active if (e.spec["impl"], mode) in group.cpu_skip]
            active = [e for e in active if e not in left_out]
            rows.extend(dict(e.row, mode=mode, skipped="left out of the default CPU run (--repeats N runs it)")
                        for e in left_out)  # fmt: skip
        results = {id(e): dict(e.row, mode=mode, batch=batch, times=[]) for e in active}
        for e in active:  # warm-up; the first call also gives the peak memory
            logger.info("%s %s: warm-up", describe(e.spec), mode)
            mem = PeakMemory(device)
            try:
                with mem:
                    first = Timer(device)(lambda: _step(e, x, mode, amp))
            except torch.OutOfMemoryError:
                results[id(e)]["skipped"] = f"out of memory at batch {batch}"
                e.model.zero_grad(set_to_none=True)
                _free(device)
                continue
            results[id(e)].update(peak_mem_mb=_mb(mem.bytes), memory_method=mem.method)
            if warmup == 0:  # the first call doubles as a timing (slow CPU cases)
                results[id(e)]["times"].append(first)
            for _ in range(warmup - 1):
                _step(e, x, mode, amp)
        failed = [e for e in active if results[id(e)].get("skipped")]
        rows.extend(results[id(e)] for e in failed)
        active = [e for e in active if e not in failed]
        for r in range(repeats - (warmup == 0)):
            for e in active if r % 2 == 0 else active[::-1]:
                results[id(e)]["times"].append(Timer(device)(lambda: _step(e, x, mode, amp)))
        model_flops = _model_flops(active, batch, group.img, mode)
        for e in active:
            res = results[id(e)]
            res["seconds"] = median(res["times"])
            res["img_per_s"] = batch / res["seconds"]
            res["flops"] = model_flops
            if res["flops"]:
                res["flops_per_s"] = res["flops"] / res["seconds"]
                if gemm_peak:
                    res["peak_fraction"] = res["flops_per_s"] / gemm_peak
            logger.info(
                "%s %s: %.3f s/iter (batch %d), peak %s MB",
                describe(e.spec), mode, res["seconds"], batch, res.get("peak_mem_mb"),
            )  # fmt: skip
            rows.append(res)
        rows.extend(dict(e.row, mode=mode) for e in entries if e.model is None)
    del entries
    _free(device)
    return rows


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _mb(n: Optional[int]) -> Optional[float]:
    return None if n is None else n / 2**20
