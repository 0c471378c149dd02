"""Human-readable summary of per-parameter layer-decay settings (see ``param_settings``)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else str(n)


def _values(values: Iterable[float], fmt: str) -> str:
    return ", ".join(format(v, fmt) for v in sorted(set(values)))


def layer_table(records: list[dict], base_lr: float) -> str:
    """One row per layer id: lr scale, effective lr, weight decay(s), parameter counts; and totals.

    Args:
        records: output of :func:`mae_transfer.optim.param_settings` (one dict per parameter).
        base_lr: learning rate of the top layer.
    """
    by_layer: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        by_layer[record["layer_id"]].append(record)
    header = f"{'layer':>5}  {'lr scale':>10}  {'lr':>10}  {'weight decay':>12}  {'params':>9}  {'tensors':>7}  frozen"
    lines = [header, "-" * len(header)]
    for layer_id in sorted(by_layer):
        rows = by_layer[layer_id]
        numel = sum(math.prod(r["shape"]) for r in rows)
        frozen = sum(math.prod(r["shape"]) for r in rows if not r["trainable"])
        state = "no" if frozen == 0 else "yes" if frozen == numel else f"{_count(frozen)}"
        lines.append(
            f"{layer_id:>5}  {_values((r['lr_scale'] for r in rows), '.4g'):>10}  "
            f"{_values((base_lr * r['lr_scale'] for r in rows), '.3e'):>10}  "
            f"{_values((r['weight_decay'] for r in rows), 'g'):>12}  {_count(numel):>9}  {len(rows):>7}  {state}"
        )
    total = sum(math.prod(r["shape"]) for r in records)
    trainable = sum(math.prod(r["shape"]) for r in records if r["trainable"])
    lines.append("-" * len(header))
    lines.append(
        f"total: {_count(total)} parameters in {len(records)} tensors; trainable {_count(trainable)}, "
        f"frozen {_count(total - trainable)}; {len(by_layer)} layer ids"
    )
    return "\n".join(lines)
