"""The comparison's outputs: tables (markdown, csv, console), comparison.json and PNGs.

One row per initialisation, aggregating every run of it: each seed of its det runs gives APbox /
APmask, each seed of its seg runs mIoU. A cell is the mean ± sample std over seeds ("84.7 ± 1.2",
or "84.7" for one seed) and a second table lists the per-seed values. Below the tables, one
sentence per comparison (each initialisation against ``random`` when it is there, else against
the first one) with its noise verdict (:mod:`mae_transfer.utils.stats`).

Metrics that do not come from a det/seg run (e.g. a frozen-feature probe's ``probe_mIoU``) join
the rows through :func:`add_values` or ``write_report(..., extra={init: {metric: [values]}})``
and then appear in the tables, json, plots and verdicts like the others.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from mae_transfer.errors import ComparisonError
from mae_transfer.utils.stats import NOISE_K, NOISE_RULE, SeedStats, Verdict, compare_stats, summarize

from .plots import write_plots
from .runs import METRICS, TASK_METRICS, RunRecord, metric_label

COLUMNS = ("init", "APbox", "APmask", "mIoU", "det_train_s", "seg_train_s")
TIME_COLUMNS = ("det_train_s", "seg_train_s")
_TIME_HEADERS = {"det_train_s": "det train time", "seg_train_s": "seg train time"}

ExtraValues = Mapping[str, Mapping[str, "Sequence[float] | Mapping[int, float]"]]


@dataclass
class Row:
    """One initialisation's results over its seeds.

    Attributes:
        init: the initialisation's name.
        values: per metric (and ``det_train_s`` / ``seg_train_s``) the mean over seeds, ``None``
            where that task was not run.
        runs: per task, its runs in seed order.
        stats: per metric, the per-seed values and their mean / std. A metric given only in
            ``values`` counts as one seed.
    """
    init: str
    values: dict[str, float | None] = field(default_factory=dict)
    runs: dict[str, list[RunRecord]] = field(default_factory=dict)
    stats: dict[str, SeedStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for metric, value in self.values.items():
            if value is not None and metric not in TIME_COLUMNS and metric not in self.stats:
                self.stats[metric] = summarize([value])

    def set_values(self, metric: str, values: Sequence[float] | Mapping[int, float]) -> None:
        """Set ``metric``'s per-seed values (a list in seed order, or ``{seed: value}``)."""
        if isinstance(values, Mapping):
            values = [values[seed] for seed in sorted(values)]
        self.stats[metric] = summarize(values)
        self.values[metric] = self.stats[metric].mean


def _empty_row(init: str) -> Row:
    return Row(init, {c: None for c in COLUMNS[1:]})


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _seed_order(runs: list[RunRecord]) -> list[RunRecord]:
    """Runs sorted by seed (unseeded ones last, as given); one run per path; one run per seed."""
    unique = list({str(r.path.resolve()): r for r in runs}.values())
    unique.sort(key=lambda r: (r.seed is None, r.seed or 0))
    seen: dict[int, RunRecord] = {}
    for run in unique:
        if run.seed is not None and run.seed in seen:
            raise ComparisonError(
                f"{seen[run.seed].path} and {run.path} are both seed {run.seed} of {run.init} {run.task}; "
                "collect them under different names (NAME=DIR) or leave one out.")
        if run.seed is not None:
            seen[run.seed] = run
    return unique


def add_values(rows: list[Row], init: str, metric: str,
               values: Sequence[float] | Mapping[int, float]) -> Row:
    """Give ``init``'s row per-seed values of an extra metric (e.g. ``probe_mIoU`` from a probe).

    The row is created (at the end) when ``init`` has no run. Returns the row.
    """
    row = next((r for r in rows if r.init == init), None)
    if row is None:
        row = _empty_row(init)
        rows.append(row)
    row.set_values(metric, values)
    return row


def build_rows(records: Iterable[RunRecord], extra: ExtraValues | None = None) -> list[Row]:
    """Group runs by initialisation (first-seen order) and summarize each metric over seeds.

    Args:
        records: det/seg runs; several runs of one (init, task) are seeds of it.
        extra: per init, per metric, per-seed values of metrics that are not det/seg runs.

    Raises:
        ComparisonError: when two different runs claim the same seed of one (init, task).
    """
    grouped: dict[str, dict[str, list[RunRecord]]] = {}
    for record in records:
        grouped.setdefault(record.init, {}).setdefault(record.task, []).append(record)
    rows = []
    for init, by_task in grouped.items():
        row = _empty_row(init)
        for task, runs in by_task.items():
            row.runs[task] = _seed_order(runs)
            for metric in TASK_METRICS[task]:
                values = [r.metrics[metric] for r in row.runs[task] if metric in r.metrics]
                if values:
                    row.set_values(metric, values)
            row.values[f"{task}_train_s"] = _mean([r.train_time_s for r in row.runs[task]
                                                   if r.train_time_s is not None])
        rows.append(row)
    for init, metrics in (extra or {}).items():
        for metric, values in metrics.items():
            add_values(rows, init, metric, values)
    return rows


def metrics_of(rows: list[Row]) -> list[str]:
    """The metrics some row has: APbox, APmask, mIoU first, then extra ones in first-seen order."""
    extra = [m for r in rows for m in r.stats if m not in METRICS]
    return [m for m in METRICS if any(m in r.stats for r in rows)] + list(dict.fromkeys(extra))


def comparisons(rows: list[Row], reference: str | None = None, k: float = NOISE_K) -> list[Verdict]:
    """Each init against ``reference`` (default ``random`` when present, else the first row), per
    metric both have, in table order (metric by metric)."""
    if not rows:
        return []
    names = [r.init for r in rows]
    if reference is not None and reference not in names:
        raise ComparisonError(f"the reference initialisation {reference!r} has no results; pick one of "
                              f"{', '.join(names)}.")
    ref = rows[names.index(reference or ("random" if "random" in names else names[0]))]
    return [compare_stats(row.stats[metric], ref.stats[metric], row.init, ref.init, metric, k)
            for metric in metrics_of(rows) if metric in ref.stats
            for row in rows if row is not ref and metric in row.stats]


def _present_columns(rows: list[Row]) -> list[str]:
    times = [c for c in TIME_COLUMNS if any(r.values.get(c) is not None for r in rows)]
    return ["init"] + metrics_of(rows) + times


def _header(column: str) -> str:
    return "init" if column == "init" else _TIME_HEADERS.get(column) or metric_label(column)


def _markdown(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])


def _time(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{int(value) // 60}:{int(value) % 60:02d}"


def format_table(rows: list[Row]) -> str:
    """Markdown table (also readable on a console): mean ± std per metric, mean times as m:ss."""
    columns = _present_columns(rows)
    lines = [[row.init] + [_time(row.values.get(c)) if c in TIME_COLUMNS
                           else str(row.stats[c]) if c in row.stats else "-" for c in columns[1:]]
             for row in rows]
    return _markdown([_header(c) for c in columns], lines)


def format_seed_table(rows: list[Row]) -> str:
    """Markdown table of the per-seed values (seed order); empty when every cell has one seed."""
    metrics = metrics_of(rows)
    if all(s.n == 1 for r in rows for s in r.stats.values()):
        return ""
    lines = [[row.init] + [", ".join(f"{v:.1f}" for v in row.stats[m].values) if m in row.stats else "-"
                           for m in metrics] for row in rows]
    return _markdown(["per-seed values"] + [metric_label(m) for m in metrics], lines)


def seeds_caption(rows: list[Row]) -> str:
    """How many seeds each cell summarizes, e.g. "Mean ± sample standard deviation over 2 seeds per
    initialisation (3 seeds for probe mIoU)", plus :data:`NOISE_RULE`."""
    counts: dict[str, list[str]] = {}
    for metric in metrics_of(rows):
        ns = [r.stats[metric].n for r in rows if metric in r.stats]
        label = f"{min(ns)}" if min(ns) == max(ns) else f"{min(ns)}-{max(ns)}"
        counts.setdefault(label, []).append(metric_label(metric))
    if not counts:
        return NOISE_RULE
    if list(counts) == ["1"]:
        return f"One seed per initialisation: no spread, so no difference can be told from noise. {NOISE_RULE}"
    parts = [f"{n} seed{'s' if n != '1' else ''}" + ("" if len(counts) == 1 else f" ({', '.join(ms)})")
             for n, ms in counts.items()]
    return (f"Mean ± sample standard deviation (ddof=1) over {' and '.join(parts)} per initialisation; "
            f"per-seed values in seed order. {NOISE_RULE}")


def format_report(rows: list[Row], verdicts: list[Verdict]) -> str:
    """What a console shows: the table, the per-seed table, the caption and one sentence per comparison."""
    blocks = [format_table(rows), format_seed_table(rows), seeds_caption(rows),
              "\n".join(v.sentence() for v in verdicts)]
    return "\n\n".join(b for b in blocks if b)


def comparison_json(rows: list[Row], verdicts: list[Verdict]) -> dict:
    """``{"results": {init: {metric: {"values", "mean", "std", "n"}}}, "verdicts": [...],
    "noise_rule": ..., "runs": {init: {task: [run dirs in seed order]}}}``."""
    metrics = metrics_of(rows)
    return {
        "results": {r.init: {m: r.stats[m].to_json() for m in metrics if m in r.stats} for r in rows},
        "verdicts": [v.to_json() for v in verdicts],
        "noise_rule": NOISE_RULE,
        "runs": {r.init: {t: [str(run.path) for run in runs] for t, runs in r.runs.items()} for r in rows},
    }


def write_csv(rows: list[Row], path: Path) -> None:
    """Means unrounded (seconds for times), then per metric its std, n and per-seed values
    (``;``-separated), then each row's run directories (``;``-separated, seed order)."""
    metrics = metrics_of(rows)
    means = list(COLUMNS[1:4]) + [m for m in metrics if m not in COLUMNS] + list(TIME_COLUMNS)
    spread = [f"{m}_{what}" for m in metrics for what in ("std", "n", "values")]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["init"] + means + spread + ["det_run", "seg_run"])
        for row in rows:
            cells = ["" if row.values.get(c) is None else f"{row.values[c]:.4f}" for c in means]
            for metric in metrics:
                s = row.stats.get(metric)
                values = "" if s is None else ";".join(f"{v:.4f}" for v in s.values)
                cells += ["", "", ""] if s is None else [f"{s.std:.4f}", str(s.n), values]
            runs = [";".join(str(r.path) for r in row.runs.get(t, [])) for t in ("det", "seg")]
            writer.writerow([row.init] + cells + runs)


def _run_lines(rows: list[Row]) -> list[str]:
    return [f"- {r.init} {t}" + ("" if run.seed is None else f" seed {run.seed}") + f": `{run.path}`"
            for r in rows for t, runs in sorted(r.runs.items()) for run in runs]


def write_report(records: Iterable[RunRecord], out_dir: str | Path, title: str = "Backbone comparison",
                 notes: Iterable[str] = (), extra: ExtraValues | None = None,
                 reference: str | None = None) -> tuple[str, list[Path]]:
    """``comparison.md``, ``comparison.csv``, ``comparison.json`` and the PNGs into ``out_dir``.

    Args:
        records: det/seg runs (several per init and task: one per seed).
        extra: per init, per metric, per-seed values of metrics that are not det/seg runs
            (e.g. ``{"mae": {"probe_mIoU": [41.0, 42.5, 41.7]}}``).
        reference: the initialisation every other is compared against (default ``random`` when
            present, else the first).

    Returns:
        (what to print: the tables, caption and verdict sentences; the paths of every file
        written: md, csv, json, PNGs).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = build_rows(records, extra)
    verdicts = comparisons(rows, reference)
    pngs = write_plots(rows, metrics_of(rows), out_dir)
    text = [f"# {title}", "", format_table(rows), ""]
    seed_table = format_seed_table(rows)
    text += [seed_table, ""] if seed_table else []
    text += ["Metrics in percent (COCO AP, mIoU) from the last evaluation of each run; train time as the "
             "framework logged it (m:ss, mean over seeds). " + seeds_caption(rows), ""]
    text += [f"- {v.sentence()}" for v in verdicts] + ([""] if verdicts else [])
    notes = list(notes) + [f"{r.init} {t}" + ("" if run.seed is None else f" seed {run.seed}") + f": {n}"
                           for r in rows for t, runs in sorted(r.runs.items()) for run in runs
                           for n in dict.fromkeys(run.notes)]
    text += (["## Notes", ""] + [f"- {n}" for n in notes] + [""]) if notes else []
    text += ["## Runs", ""] + _run_lines(rows) + ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs]
    (out_dir / "comparison.md").write_text("\n".join(text) + "\n")
    write_csv(rows, out_dir / "comparison.csv")
    (out_dir / "comparison.json").write_text(json.dumps(comparison_json(rows, verdicts), indent=1) + "\n")
    files = [out_dir / "comparison.md", out_dir / "comparison.csv", out_dir / "comparison.json"]
    return format_report(rows, verdicts), files + pngs
