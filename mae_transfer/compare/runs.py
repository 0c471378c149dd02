"""Reading finished (or running) det/seg run directories into one record per run.

Only the files the training tools write are read, so runs on real COCO/ADE20K work as well as
the built-in demo runs:

* detection (``tools/train_det.py``): ``metrics.json`` (Detectron2 ``JSONWriter``: one json object
  per line; ``total_loss`` while training, ``bbox/AP`` and ``segm/AP`` after each evaluation,
  prefixed by ``<dataset>/`` when several test sets are evaluated) and ``log.txt`` (``Total
  training time: H:MM:SS``);
* segmentation (``tools/train_seg.py``): ``metrics.json`` (one json object per line; ``loss``
  while training, ``{"split": "val", "mIoU": ...}`` after each validation) and the MMEngine log.
* either: ``compare_run.json``, written by :func:`mae_transfer.compare.launch.run_one` next to
  them (the initialisation's name, the fine-tuning seed and the wall time of the run).

Run directories of a seeded comparison are named ``<task>_<init>_seed<k>``; the row name drops
both the task prefix and the seed suffix, so every seed of one initialisation shares a row.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mae_transfer.errors import ComparisonError

RUN_INFO = "compare_run.json"
METRICS = ("APbox", "APmask", "mIoU")
TASK_METRICS = {"det": ("APbox", "APmask"), "seg": ("mIoU",)}
METRIC_LABELS = {"APbox": "AP box", "APmask": "AP mask"}
_DET_KEYS = {"APbox": "bbox/AP", "APmask": "segm/AP"}
_D2_TOTAL_TIME = re.compile(r"Total training time: (\d+):(\d\d):(\d\d)")
_SEED_SUFFIX = re.compile(r"_seed(\d+)$")

Curve = list[tuple[int, float]]


@dataclass
class RunRecord:
    """One fine-tuning run: its initialisation, task, final metrics and curves.

    ``metrics`` maps ``APbox``/``APmask`` (det) or ``mIoU`` (seg) to the last evaluated value (in
    percent, as the frameworks report them); ``curves`` holds every evaluation as (iteration,
    value); ``losses`` the training loss per logged iteration; ``notes`` what a reader should know
    about the numbers (e.g. an evaluation without detections); ``seed`` the fine-tuning seed (None
    when the run does not say).
    """
    init: str
    task: str
    path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    losses: Curve = field(default_factory=list)
    train_time_s: float | None = None
    wall_time_s: float | None = None
    notes: list[str] = field(default_factory=list)
    seed: int | None = None


def metric_label(metric: str) -> str:
    """A metric's name in table headers and plots: ``APbox`` -> ``AP box``, ``probe_mIoU`` -> ``probe mIoU``."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def read_json_lines(path: Path) -> list[dict]:
    """Objects of a json-lines file; an unfinished last line (a run still writing) is skipped."""
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def detect_task(records: list[dict]) -> str:
    """``"det"`` for Detectron2 metrics (``total_loss`` / ``*bbox/AP``), ``"seg"`` for MMSeg ones."""
    for record in records:
        if "total_loss" in record or any(k.endswith(("bbox/AP", "segm/AP")) for k in record):
            return "det"
        if "mIoU" in record or "split" in record:
            return "seg"
    if any("loss" in record for record in records):
        return "seg"
    raise ComparisonError("metrics.json has neither Detectron2 (total_loss, bbox/AP) nor MMSeg "
                          "(loss, mIoU) entries")


def _det_value(record: dict, key: str) -> float | None:
    """``bbox/AP`` or ``<dataset>/bbox/AP`` (first test set) from one Detectron2 record."""
    if key in record:
        return float(record[key])
    for name, value in record.items():
        if name.endswith("/" + key):
            return float(value)
    return None


def _det_curves(records: list[dict], notes: list[str]) -> tuple[Curve, dict[str, Curve]]:
    """Losses and AP curves. An evaluation without any detection (Detectron2 then reports
    ``bbox/AP`` NaN and no ``segm/AP``) counts as AP 0, which is what COCO AP is for no output."""
    losses, curves = [], {m: [] for m in _DET_KEYS}
    for record in records:
        iteration = int(record.get("iteration", 0))
        if "total_loss" in record:
            losses.append((iteration + 1, float(record["total_loss"])))
        box = _det_value(record, "bbox/AP")
        if box is None:
            continue
        mask = _det_value(record, "segm/AP")
        if math.isnan(box) and (mask is None or math.isnan(mask)):
            notes.append(f"no detections at iteration {iteration + 1} (Detectron2 reports NaN; counted as AP 0)")
            box, mask = 0.0, 0.0
        curves["APbox"].append((iteration + 1, box))
        if mask is not None:
            curves["APmask"].append((iteration + 1, mask))
    return losses, curves


def _seg_curves(records: list[dict]) -> tuple[Curve, dict[str, Curve]]:
    losses, miou = [], []
    for record in records:
        if "mIoU" in record:
            miou.append((int(record.get("iteration", 0)), float(record["mIoU"])))
        elif "loss" in record:
            losses.append((int(record["iteration"]), float(record["loss"])))
    return losses, {"mIoU": miou}


def _det_train_time(run_dir: Path) -> float | None:
    log = run_dir / "log.txt"
    if not log.is_file():
        return None
    found = _D2_TOTAL_TIME.findall(log.read_text(errors="replace"))
    if not found:
        return None
    h, m, s = map(int, found[-1])
    return float(h * 3600 + m * 60 + s)


def _seg_train_time(run_dir: Path) -> float | None:
    """Sum of MMEngine's per-iteration ``time`` (vis_data/scalars.json), scaled to all iterations."""
    scalars = sorted(run_dir.glob("*/vis_data/scalars.json"))
    if not scalars:
        return None
    records = [r for r in read_json_lines(scalars[-1]) if "time" in r and "step" in r]
    if not records:
        return None
    # Logged every `interval` iterations with the mean over the window: integrate step-wise.
    total, previous = 0.0, 0
    for record in records:
        step = int(record["step"])
        total += float(record["time"]) * (step - previous)
        previous = step
    return total


def _strip_task_prefix(name: str, task: str) -> str:
    """``det_mae`` -> ``mae`` (the names tools/compare.py gives), so det and seg runs share a row."""
    return name[len(task) + 1:] if name.startswith(f"{task}_") and len(name) > len(task) + 1 else name


def split_seed(name: str) -> tuple[str, int | None]:
    """``det_mae_seed1`` -> (``det_mae``, 1); a name without a ``_seed<k>`` suffix -> (name, None)."""
    match = _SEED_SUFFIX.search(name)
    if match is None or match.start() == 0:
        return name, None
    return name[:match.start()], int(match.group(1))


def read_run(run_dir: str | Path, init: str | None = None) -> RunRecord:
    """Read one run directory; ``init`` overrides the row name (default: the name in
    compare_run.json, else the directory name without a ``det_``/``seg_`` prefix and ``_seed<k>``
    suffix). The seed comes from compare_run.json's ``"seed"``, else the ``_seed<k>`` suffix."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise ComparisonError(f"{run_dir} has no metrics.json; pass the output directory of a "
                              "tools/train_det.py or tools/train_seg.py run.")
    records = read_json_lines(metrics_file)
    try:
        task = detect_task(records)
    except ComparisonError as err:
        raise ComparisonError(f"{metrics_file}: {err}; pass a det or seg run directory.") from None
    info = json.loads((run_dir / RUN_INFO).read_text()) if (run_dir / RUN_INFO).is_file() else {}
    notes: list[str] = []
    losses, curves = _det_curves(records, notes) if task == "det" else _seg_curves(records)
    train_time = _det_train_time(run_dir) if task == "det" else _seg_train_time(run_dir)
    stem, seed = split_seed(run_dir.name)
    if info.get("seed") is not None:
        seed = int(info["seed"])
    return RunRecord(
        init=init or info.get("init") or _strip_task_prefix(stem, task),
        task=task,
        path=run_dir,
        metrics={m: c[-1][1] for m, c in curves.items() if c and math.isfinite(c[-1][1])},
        curves={m: c for m, c in curves.items() if c},
        losses=losses,
        train_time_s=train_time if train_time is not None else info.get("wall_time_s"),
        wall_time_s=info.get("wall_time_s"),
        notes=notes,
        seed=seed,
    )


def find_run_dirs(roots: list[str | Path]) -> list[Path]:
    """Each root that is a run directory, else its immediate/nested run directories (sorted)."""
    found: list[Path] = []
    for root in map(Path, roots):
        if not root.exists():
            raise ComparisonError(f"{root} does not exist; pass run directories (or folders holding them).")
        if (root / "metrics.json").is_file():
            found.append(root)
            continue
        nested = sorted(p.parent for p in root.rglob("metrics.json")
                        if (p.parent / RUN_INFO).is_file() or (p.parent / "config.yaml").is_file()
                        or any(p.parent.glob("*.py")) or any(p.parent.glob("*/vis_data")))
        if not nested:
            raise ComparisonError(f"no run directory (metrics.json) found under {root}.")
        found.extend(nested)
    return found
