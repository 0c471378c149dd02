"""The comparison's PNGs: per-seed points with mean ± std per initialisation, loss and metric curves.

Each initialisation keeps one colour (``C<row index>``) in every figure. Plots use matplotlib's
Agg backend (no display needed). ``rows`` are :class:`mae_transfer.compare.report.Row` objects.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mae_transfer.utils.plotting import pyplot

from .runs import TASK_METRICS, metric_label

if TYPE_CHECKING:
    from .report import Row

_POINTS_AT, _MEAN_AT, _JITTER = -0.12, 0.18, 0.2  # x offsets from an init's tick


def _offsets(n: int) -> list[float]:
    """Deterministic jitter: ``n`` points spread evenly over ``_JITTER`` around ``_POINTS_AT``."""
    if n == 1:
        return [_POINTS_AT]
    return [_POINTS_AT - _JITTER / 2 + _JITTER * i / (n - 1) for i in range(n)]


def _strip(ax, rows: list[Row], metric: str, fontsize: int = 8) -> None:
    """On ``ax``: every seed's value as a point and the mean with a ±std error bar, per init."""
    shown = [(i, r) for i, r in enumerate(rows) if metric in r.stats]
    for x, (i, row) in enumerate(shown):
        stats = row.stats[metric]
        ax.scatter([x + o for o in _offsets(stats.n)], stats.values, s=16, color=f"C{i}", alpha=0.75,
                   zorder=3, label="per seed" if x == 0 else None)
        ax.errorbar([x + _MEAN_AT], [stats.mean], yerr=[stats.std] if stats.n > 1 else None, fmt="D", ms=5,
                    color="black", mfc=f"C{i}", capsize=3, lw=1, zorder=4,
                    label="mean ± std" if x == 0 else None)
        ax.annotate(f"{stats.mean:.1f}", (x + _MEAN_AT, stats.mean), xytext=(5, 0), textcoords="offset points",
                    va="center", fontsize=fontsize)
    ax.set_xticks(range(len(shown)), [r.init for _, r in shown], fontsize=fontsize)
    ax.set_xlim(-0.6, len(shown) - 0.2)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)


def plot_metric(rows: list[Row], metric: str, path: Path) -> bool:
    """Per-seed points and mean ± std of ``metric`` per init; False (nothing written) when no row has it."""
    shown = [r for r in rows if metric in r.stats]
    if not shown:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(shown), 3.4))
    _strip(ax, rows, metric)
    ax.set_ylabel(metric_label(metric))
    ns = sorted({r.stats[metric].n for r in shown})
    seeds = "1 seed" if ns == [1] else f"{ns[0]} seeds" if len(ns) == 1 else f"{ns[0]}-{ns[-1]} seeds"
    ax.set_title(f"{metric_label(metric)} by initialisation ({seeds})")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_overview(rows: list[Row], metrics: list[str], path: Path) -> bool:
    """One figure with a points-and-mean panel per metric present (the picture for a README)."""
    metrics = [m for m in metrics if any(m in r.stats for r in rows)]
    if not metrics:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        _strip(ax, rows, metric, fontsize=7)
        ax.set_title(metric_label(metric))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def plot_curves(rows: list[Row], task: str, kind: str, path: Path) -> bool:
    """Loss (``kind="loss"``) or metric curves of every ``task`` run: one line per run, one colour
    per init (its seeds share it, with thinner lines)."""
    series = []
    for i, row in enumerate(rows):
        runs = row.runs.get(task, [])
        for j, run in enumerate(runs):
            points = run.losses if kind == "loss" else run.curves.get(kind, [])
            if points:
                label = None if j else row.init + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")
                series.append((i, label, len(runs) > 1, points))
    if not series:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, label, seeded, points in series:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(points) < 12 else None, ms=3 if seeded else 4, lw=0.8 if seeded else 1.2,
                alpha=0.8 if seeded else 1.0, color=f"C{i}", label=label)
    what = "training loss" if kind == "loss" else metric_label(kind)
    ax.set_xlabel("iteration")
    ax.set_ylabel(what)
    ax.set_title(f"{task}: {what} by initialisation")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_plots(rows: list[Row], metrics: list[str], out_dir: Path) -> list[Path]:
    """All PNGs of a comparison into ``out_dir`` (``comparison.png``, ``bar_<metric>.png``,
    ``loss_<task>.png``, ``curve_<metric>.png``); returns the paths written."""
    jobs = [(plot_overview, (rows, metrics), "comparison.png")]
    jobs += [(plot_metric, (rows, m), f"bar_{m}.png") for m in metrics]
    jobs += [(plot_curves, (rows, t, "loss"), f"loss_{t}.png") for t in TASK_METRICS]
    jobs += [(plot_curves, (rows, t, m), f"curve_{m}.png") for t, ms in TASK_METRICS.items() for m in ms]
    return [out_dir / name for function, args, name in jobs if function(*args, out_dir / name)]
