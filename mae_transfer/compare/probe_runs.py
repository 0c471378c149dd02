"""The frozen-feature probe as a comparison protocol: every init probed on the same seg data.

``compare --protocol probe`` and ``make demo`` call :func:`probe_inits`; the per-seed mIoU of each
init joins the comparison table as ``probe_mIoU``. Results and settings go to ``<out>/probe.json``
(:func:`mae_transfer.probe.write_probe_json`); a finished file with the same settings and
checkpoints is read instead of probing again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from mae_transfer.utils.logger import get_logger

from .launch import Init

logger = get_logger(__name__)

PROBE_FILE = "probe.json"
PROBE_TIME_FILE = "probe_run.json"  # wall / CPU seconds of the probing, for the demo's stage times


def _settings(inits: Sequence[Init], data: str, seeds: Sequence[int], protocol: str, steps: int | None,
              arch: str, img_size: int) -> dict:
    return {"data": data, "seeds": list(seeds), "protocol": protocol, "steps": steps, "arch": arch,
            "img_size": img_size, "inits": {i.name: i.weights for i in inits}}


def _data_root(data: str) -> str:
    """A built-in dataset name (generated on first use) or an ADE20K-layout folder."""
    if data.startswith("builtin_"):
        from mae_transfer.data import builtin_dataset

        return str(builtin_dataset(data).root)
    return data


def probe_inits(inits: Sequence[Init], out_dir: str | Path, seeds: Sequence[int] = (0, 1, 2),
                protocol: str = "linear", steps: int | None = None, reuse: bool = True,
                data: str = "builtin_ade", arch: str = "vit_tiny_patch16", img_size: int = 128,
                ) -> dict[str, list[float]]:
    """Probe every init (one head per seed) on ``data``; returns ``{init: [mIoU per seed]}``.

    Args:
        inits: the initialisations (``weights`` None = random, drawn per seed).
        out_dir: where ``probe.json`` goes.
        seeds: head seeds (and random-init seeds).
        protocol: ``"linear"`` or ``"multiscale"`` (:mod:`mae_transfer.probe`).
        steps: head training steps (None: the probe's default).
        data: a built-in dataset name or an ADE20K-layout folder.
        arch, img_size: the frozen ViT (the demo's ViT-Ti/16 at 128 px by default).
    """
    from mae_transfer.probe import BackboneInit, HeadConfig, load_ade, run_probe, summarize, write_probe_json

    out_dir = Path(out_dir)
    path = out_dir / PROBE_FILE
    settings = _settings(inits, data, seeds, protocol, steps, arch, img_size)
    if reuse and path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("settings", {}).get("compare") == settings:
            logger.info("probe: finished results found in %s, not probing again", path)
            return {name: s["mIoU"]["values"] for name, s in stored["results"].items()}
    start, cpu = time.perf_counter(), time.process_time()
    train, val, num_classes = load_ade(_data_root(data), img_size)
    head = HeadConfig() if steps is None else HeadConfig(steps=steps)
    summaries = {}
    for init in inits:
        backbone = BackboneInit(init.name, arch, img_size, init.weights)
        summaries[init.name] = summarize(run_probe(backbone, train, val, protocol, list(seeds), num_classes, head))
    write_probe_json(path, summaries, {"compare": settings})
    times = {"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(time.process_time() - cpu, 1)}
    (out_dir / PROBE_TIME_FILE).write_text(json.dumps(times) + "\n")
    return {name: s["mIoU"]["values"] for name, s in summaries.items()}
