"""Markdown tables of the ``det_e2e`` / ``seg_e2e`` / ``loader`` cases."""

from __future__ import annotations

from typing import Dict, List

from .profile import ops_markdown


def fmt_cell(v, spec=".3g") -> str:
    """A number for a markdown cell ("" for a missing one); also used by :mod:`.report`."""
    return "" if v is None else format(v, spec)


def _e2e_table(rows: List[Dict]) -> List[str]:
    lines = [
        "| task | step | pipeline | s (median) | min..max | repeats | ours faster by | peak MB"
        " | ours/its memory | model GFLOP | share of GEMM rate | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['task']} | | {r['name']} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        flops, share = r.get("flops"), r.get("gemm_share")
        ratio, mem = r.get("speedup_of_ours"), r.get("memory_ratio_of_ours")
        lines.append(
            f"| {r['task']} | {r['kind']} | {r['name']} | {fmt_cell(r['seconds'])} "
            f"| {fmt_cell(r['min'])}..{fmt_cell(r['max'])} | {r['repeats']} "
            f"| {fmt_cell(ratio, '.2f') + 'x' if ratio else ''} | {fmt_cell(r.get('peak_mem_mb'), '.0f')} "
            f"| {fmt_cell(mem, '.2f')} | {fmt_cell(flops / 1e9 if flops else None, '.1f')} "
            f"| {fmt_cell(share * 100 if share is not None else None, '.0f') + '%' if share is not None else ''} "
            f"| {r.get('note', '')} |"
        )
    return lines


def _loader_table(rows: List[Dict]) -> List[str]:
    lines = [
        "| task | pipeline | img/s per worker | per-GPU batch | step s/iter | img/s per GPU needed"
        " | workers per GPU | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['task']} | {r['name']} | skipped: {r['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {r['task']} | {r['name']} | {fmt_cell(r['img_per_s_per_worker'])} | {r['per_gpu_batch']} "
            f"| {r['step_s']} | {fmt_cell(r['img_per_s_per_gpu_needed'])} | {r['workers_per_gpu']} "
            f"| {r['note']} |"
        )
    lines += ["", "workers per GPU = ceil(per-GPU batch / step time / img/s per worker)."]
    return lines


def e2e_markdown(result: Dict) -> List[str]:
    """Sections for the whole-pipeline and loader cases (empty when they did not run)."""
    lines: List[str] = []
    if result.get("e2e"):
        lines += ["", "## Whole pipelines, ours beside the references (interleaved)", ""]
        lines += _e2e_table(result["e2e"])
        profiled = ops_markdown(result["e2e"])
        if profiled:
            lines += ["", "## Where the time goes (one profiled call per step, operators by self time)"]
            lines += profiled
    if result.get("loader"):
        lines += ["", "## Data loading per worker", ""] + _loader_table(result["loader"])
    return lines
