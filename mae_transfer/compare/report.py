"""The comparison's outputs: a table (markdown, csv, console) and PNGs (bars, loss and metric curves).

One row per initialisation; its det run gives APbox/APmask, its seg run mIoU. Plots use
matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mae_transfer.utils.plotting import pyplot

from .runs import METRICS, TASK_METRICS, RunRecord

COLUMNS = ("init", "APbox", "APmask", "mIoU", "det_train_s", "seg_train_s")
_HEADERS = {"init": "init", "APbox": "AP box", "APmask": "AP mask", "mIoU": "mIoU",
            "det_train_s": "det train time", "seg_train_s": "seg train time"}


@dataclass
class Row:
    """One initialisation's results (``None`` where that task was not run)."""
    init: str
    values: dict[str, float | None] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)


def build_rows(records: Iterable[RunRecord]) -> list[Row]:
    """Group runs by initialisation (first-seen order); a later run of the same task replaces one."""
    rows: dict[str, Row] = {}
    for record in records:
        row = rows.setdefault(record.init, Row(record.init, {c: None for c in COLUMNS[1:]}))
        row.runs[record.task] = record
        for metric in TASK_METRICS[record.task]:
            row.values[metric] = record.metrics.get(metric)
        row.values[f"{record.task}_train_s"] = record.train_time_s
    return list(rows.values())


def _present_columns(rows: list[Row]) -> list[str]:
    return ["init"] + [c for c in COLUMNS[1:] if any(r.values.get(c) is not None for r in rows)]


def _cell(column: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column.endswith("_train_s"):
        return f"{int(value) // 60}:{int(value) % 60:02d}"
    return f"{value:.1f}"


def format_table(rows: list[Row]) -> str:
    """Markdown table (also readable on a console); times as m:ss."""
    columns = _present_columns(rows)
    lines = ["| " + " | ".join(_HEADERS[c] for c in columns) + " |",
             "|" + "|".join("---" if c == "init" else "---:" for c in columns) + "|"]
    for row in rows:
        cells = [row.init] + [_cell(c, row.values.get(c)) for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[Row], path: Path) -> None:
    """Numbers unrounded (seconds for times), plus each row's run directories."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(COLUMNS) + ["det_run", "seg_run"])
        for row in rows:
            values = [row.values.get(c) for c in COLUMNS[1:]]
            writer.writerow([row.init] + ["" if v is None else f"{v:.4f}" for v in values]
                            + [str(row.runs[t].path) if t in row.runs else "" for t in ("det", "seg")])


def plot_bars(rows: list[Row], metric: str, path: Path) -> bool:
    """Bar chart of ``metric`` per initialisation; False (nothing written) when no row has it."""
    shown = [(r.init, r.values.get(metric)) for r in rows if r.values.get(metric) is not None]
    if not shown:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(shown), 3.2))
    bars = ax.bar([n for n, _ in shown], [v for _, v in shown], color=[f"C{i}" for i in range(len(shown))])
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by initialisation")
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_overview(rows: list[Row], path: Path) -> bool:
    """One figure with a bar panel per metric present (the picture for a README)."""
    metrics = [m for m in METRICS if any(r.values.get(m) is not None for r in rows)]
    if not metrics:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        names = [r.init for r in rows]
        values = [r.values.get(metric) or 0.0 for r in rows]
        bars = ax.bar(names, values, color=[f"C{i}" for i in range(len(rows))])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_title(metric)
        ax.margins(y=0.15)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def plot_curves(rows: list[Row], task: str, kind: str, path: Path) -> bool:
    """Loss (``kind="loss"``) or metric curves (``kind`` = a metric) of every ``task`` run."""
    series = []
    for row in rows:
        run = row.runs.get(task)
        if run is None:
            continue
        points = run.losses if kind == "loss" else run.curves.get(kind, [])
        if points:
            series.append((row.init, points))
    if not series:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, points) in enumerate(series):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(points) < 12 else None, ms=4, lw=1.2, color=f"C{i}", label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss" if kind == "loss" else kind)
    ax.set_title(f"{task}: {'training loss' if kind == 'loss' else kind} by initialisation")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_plots(rows: list[Row], out_dir: Path) -> list[Path]:
    """All PNGs of a comparison into ``out_dir``; returns the paths written."""
    written = []
    jobs = [(plot_overview, (rows,), "comparison.png")]
    jobs += [(plot_bars, (rows, m), f"bar_{m}.png") for m in METRICS]
    jobs += [(plot_curves, (rows, t, "loss"), f"loss_{t}.png") for t in TASK_METRICS]
    jobs += [(plot_curves, (rows, t, m), f"curve_{m}.png") for t, ms in TASK_METRICS.items() for m in ms]
    for function, args, name in jobs:
        if function(*args, out_dir / name):
            written.append(out_dir / name)
    return written


def write_report(records: Iterable[RunRecord], out_dir: str | Path, title: str = "Backbone comparison",
                 notes: Iterable[str] = ()) -> tuple[str, list[Path]]:
    """``comparison.md``, ``comparison.csv`` and the PNGs into ``out_dir``.

    Returns:
        (the markdown table, the paths of every file written: md, csv, PNGs).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = build_rows(records)
    table = format_table(rows)
    pngs = write_plots(rows, out_dir)
    runs = [f"- {r.init} {t}: `{run.path}`" for r in rows for t, run in sorted(r.runs.items())]
    text = [f"# {title}", "", table, "", "Metrics in percent (COCO AP, mIoU) from the last evaluation of "
            "each run; train time as the framework logged it (m:ss).", ""]
    notes = list(notes) + [f"{r.init} {t}: {n}" for r in rows for t, run in sorted(r.runs.items())
                           for n in dict.fromkeys(run.notes)]
    text += [f"- {n}" for n in notes] + ([""] if notes else [])
    text += ["## Runs", ""] + runs + ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    (out_dir / "comparison.md").write_text("\n".join(text) + "\n")
    write_csv(rows, out_dir / "comparison.csv")
    return table, [out_dir / "comparison.md", out_dir / "comparison.csv", *pngs]
