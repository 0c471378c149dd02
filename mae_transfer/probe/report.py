"""Per-init summaries of probe results: ``probe.json`` and the printed table."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Mapping, Sequence

from mae_transfer.utils.fileio import atomic_write_text
from mae_transfer.utils.stats import summarize as seed_stats

from .run import ProbeResult


def spread(values: Sequence[float]) -> dict:
    """``{"values": [...], "mean": m, "std": s, "n": n}``: :func:`mae_transfer.utils.stats.summarize`
    (sample standard deviation, n - 1; 0 for a single value)."""
    return seed_stats(values).to_json()


def summarize(results: Sequence[ProbeResult]) -> dict:
    """One init's results: ``mIoU`` / ``aAcc`` spreads, the seeds, mean times and every run."""
    times = {key: statistics.fmean(r.times[key] for r in results) for key in results[0].times}
    return {"protocol": results[0].protocol, "seeds": [r.seed for r in results],
            "mIoU": spread([r.mIoU for r in results]), "aAcc": spread([r.aAcc for r in results]),
            "mean_seconds": times, "runs": [r.to_dict() for r in results]}


def format_table(summaries: Mapping[str, dict]) -> str:
    """``init | mIoU mean ± std | per-seed values`` (sample std over seeds)."""
    rows = [("init", "mIoU mean ± std", "per-seed mIoU")]
    for init, s in summaries.items():
        m = s["mIoU"]
        rows.append((init, f"{m['mean']:.2f} ± {m['std']:.2f}", "  ".join(f"{v:.2f}" for v in m["values"])))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def write_probe_json(path: str | Path, summaries: Mapping[str, dict], settings: Mapping) -> Path:
    """``{"settings": ..., "results": {init: summary}}`` written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"settings": dict(settings), "results": dict(summaries)}, indent=2))
    return path
