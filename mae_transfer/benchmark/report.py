"""Ratios, target checks, the markdown table and the PNG of a benchmark result."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from mae_transfer.utils.plotting import pyplot

from .e2e_report import e2e_markdown, fmt_cell

__all__ = ["add_ratios", "check_targets", "to_markdown", "plot"]

OURS = ("ours", "ours_mae")


def _reference(rows: List[Dict], row: Dict) -> Optional[Dict]:
    """Our row (no checkpointing) of the same group and mode."""
    for r in rows:
        if (
            r["group"] == row["group"] and r["mode"] == row["mode"] and r["impl"] in OURS
            and not r.get("grad_ckpt") and r.get("seconds")
        ):  # fmt: skip
            return r
    return None


def add_ratios(rows: List[Dict]) -> None:
    """Add to each timed row ``speedup_of_ours`` (its time / our time: > 1 means ours is faster)
    and ``memory_ratio_of_ours`` (our peak / its peak: < 1 means ours needs less). For our
    checkpointed row both are taken against our own non-checkpointed row, so they read as
    "time x checkpointing costs" and "memory it saves"."""
    for row in rows:
        ours = _reference(rows, row)
        if not row.get("seconds") or ours is None or ours is row:
            continue
        mem, our_mem = row.get("peak_mem_mb"), ours.get("peak_mem_mb")
        if row.get("grad_ckpt") and row["impl"] in OURS:
            row["ckpt_time_ratio"] = row["seconds"] / ours["seconds"]
            row["note"] = f"checkpointing: time x{row['ckpt_time_ratio']:.2f}"
            if mem and our_mem:
                row["ckpt_memory_saving"] = our_mem / mem
                row["note"] += f", memory /{row['ckpt_memory_saving']:.2f}"
            continue
        row["speedup_of_ours"] = row["seconds"] / ours["seconds"]
        if mem and our_mem:
            row["memory_ratio_of_ours"] = our_mem / mem


def _find(rows, group, mode, impl, ckpt=False) -> Optional[Dict]:
    for r in rows:
        if (r["group"], r["mode"], r["impl"], bool(r.get("grad_ckpt"))) == (group, mode, impl, ckpt):
            return r if r.get("seconds") else None
    return None


def check_targets(rows: List[Dict]) -> List[Dict]:
    """The speed/memory targets of the performance issue, each with the measured value."""

    def target(name, value, goal, higher_is_better=True):
        if value is None:
            return {"target": name, "goal": goal, "value": None, "met": None}
        met = value >= goal if higher_is_better else value <= goal
        return {"target": name, "goal": goal, "value": round(value, 3), "met": met}

    def speed(group, other):
        r = _find(rows, group, "fwdbwd", other)
        return r.get("speedup_of_ours") if r else None

    d2_1024 = _find(rows, "win1024", "fwdbwd", "d2")
    ours_1024 = _find(rows, "win1024", "fwdbwd", "ours")
    ckpt_1024 = _find(rows, "win1024", "fwdbwd", "ours", ckpt=True)
    mem_ratio = d2_1024.get("memory_ratio_of_ours") if d2_1024 else None
    ckpt_saving = None
    if ckpt_1024:
        ckpt_saving = ckpt_1024.get("ckpt_memory_saving")
    return [
        target("ours / timm speed, ViT-B 224 fwd+bwd", speed("vit224", "timm"), 1.0),
        target("ours / ViTDet speed, 512 fwd+bwd", speed("win512", "d2"), 1.2),
        target("ours / ViTDet speed, 1024 fwd+bwd", speed("win1024", "d2"), 1.5),
        target("ours / ViTDet peak memory, 1024 fwd+bwd", mem_ratio, 0.5, higher_is_better=False),
        target("grad checkpointing memory saving, 1024", ckpt_saving, 2.0),
        target(
            "ours fraction of GEMM peak, 1024 fwd+bwd",
            ours_1024.get("peak_fraction") if ours_1024 else None, 0.75,
        ),
    ]  # fmt: skip


def _backbone_table(rows: List[Dict]) -> List[str]:
    lines = [
        "| group | model | mode | batch | s/iter | img/s | ours faster by | peak MB | ours/its memory"
        " | GFLOP | TFLOP/s | % GEMM peak | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['group']} | {r['name']} | {r['mode']} | | skipped: {r['skipped']} |"
                         " | | | | | | | |")  # fmt: skip
            continue
        ratio = r.get("speedup_of_ours")
        frac = r.get("peak_fraction")
        lines.append(
            f"| {r['group']} | {r['name']} | {r['mode']} | {r['batch']} | {fmt_cell(r['seconds'])} "
            f"| {fmt_cell(r.get('img_per_s'))} | {fmt_cell(ratio, '.2f') + 'x' if ratio else ''} "
            f"| {fmt_cell(r.get('peak_mem_mb'), '.0f')} | {fmt_cell(r.get('memory_ratio_of_ours'), '.2f')} "
            f"| {fmt_cell(r['flops'] / 1e9 if r.get('flops') else None, '.0f')} "
            f"| {fmt_cell(r['flops_per_s'] / 1e12 if r.get('flops_per_s') else None, '.3g')} "
            f"| {fmt_cell(frac * 100 if frac else None, '.0f')} | {r.get('note', '')} |"
        )
    return lines


def _task_table(rows: List[Dict]) -> List[str]:
    lines = ["| task | case | value | unit | note |", "|---|---|---|---|---|"]
    for r in rows:
        value = r.get("value")
        shown = r.get("skipped") and f"skipped: {r['skipped']}" or fmt_cell(value)
        lines.append(f"| {r['task']} | {r['case']} | {shown} | {r.get('unit', '')} | {r.get('note', '')} |")
    return lines


def to_markdown(result: Dict) -> str:
    """The whole result as markdown: machine, GEMM peak, backbone table, targets, task table."""
    m = result["machine"]
    where = m.get("gpu") or f"{m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} threads)"
    lines = [
        f"# Benchmark on {where}",
        "",
        f"torch {m['torch']}, device {m['device']}, memory {m['memory_gb']} GB, "
        f"amp {result['options'].get('amp') or 'off (fp32)'}, compile {result['options'].get('compile')}, "
        f"load average {result.get('load_average_start')} -> {result.get('load_average_end')}, "
        f"{result.get('wall_seconds', 0):.0f} s in all.",
        "",
    ]
    for g in result.get("gemm", []):
        rate = g["flops_per_s"] / 1e12
        lines.append(f"GEMM {g['n']}x{g['n']} {g['dtype']}: {rate:.3g} TFLOP/s (measured limit).")
    lines.append("")
    lines.append(f"Peak memory: {result.get('memory_method', '')}.")
    lines.append(
        "FLOPs: torch.utils.flop_counter on the meta device; model FLOPs of the group (largest count"
        " among the implementations; checkpointing's recompute not counted). Times: medians of"
        " interleaved repeats, device synchronised. Speed ratio = its time / our time."
    )
    if result.get("backbone"):
        lines += ["", "## Backbones", ""] + _backbone_table(result["backbone"])
    if result.get("targets"):
        lines += ["", "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
        for t in result["targets"]:
            met = {True: "yes", False: "NO", None: "not measured"}[t["met"]]
            lines.append(f"| {t['target']} | {t['goal']} | {fmt_cell(t['value'])} | {met} |")
    if result.get("tasks"):
        lines += ["", "## Detection / segmentation / data", ""] + _task_table(result["tasks"])
    if result.get("e2e") or result.get("loader"):
        lines += e2e_markdown(result)
    return "\n".join(lines) + "\n"


def plot(result: Dict, path: Path) -> Optional[Path]:
    """Bar charts of img/s and peak memory per backbone case; None if matplotlib is missing."""
    try:
        plt = pyplot()
    except ImportError:
        return None
    rows = [r for r in result.get("backbone", []) if r.get("seconds")]
    if not rows:
        return None
    labels = [f"{r['group']} {r['mode']}\n{r['name'].split(' ')[0]}{' ckpt' if r.get('grad_ckpt') else ''}"
              for r in rows]  # fmt: skip
    colors = ["tab:green" if r["impl"] in OURS else "tab:gray" for r in rows]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, len(rows) * 0.7), 8))
    axes[0].bar(range(len(rows)), [r["img_per_s"] for r in rows], color=colors)
    axes[0].set_ylabel("images / s")
    axes[1].bar(range(len(rows)), [r.get("peak_mem_mb") or 0 for r in rows], color=colors)
    axes[1].set_ylabel("peak memory (MB)")
    for ax in axes:
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
    where = result["machine"].get("gpu") or result["machine"]["cpu"]
    axes[0].set_title(f"backbones on {where} (green: ours)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
