"""tools/inspect_param_groups.py on shipped configs (subprocess), checked against the rule restated."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# torch.nn.LayerNorm modules of the ViT (the pyramid's and heads' channel LayerNorms are plain modules)
VIT_NORM = re.compile(r"(^|\.)norm\d?\.(weight|bias)$")


def no_weight_decay(rule: str, name: str, rel: str | None, shape: list[int]) -> bool:
    """The weight-decay exemptions restated: Detectron2's ViTDet configs / MMSeg as they run."""
    if rule == "vitdet":
        return rel is not None and (rel == "pos_embed" or bool(VIT_NORM.search(rel)))
    return len(shape) == 1 or name.endswith(".bias")


def expected(name: str, shape: list[int], depth: int, decay: float, wd: float, k: int | None, rule: str) -> dict:
    """MAE/ViTDet layer decay restated for a model whose ViT is ``backbone.net``."""
    rel = name[len("backbone.net."):] if name.startswith("backbone.net.") else None
    if rel is None:
        layer_id = depth + 1
    elif rel in ("cls_token", "pos_embed") or rel.startswith("patch_embed."):
        layer_id = 0
    elif rel.startswith("blocks."):
        layer_id = int(rel.split(".")[1]) + 1
    else:
        layer_id = depth + 1
    no_wd = no_weight_decay(rule, name, rel, shape)
    frozen = rel is not None and k is not None and layer_id <= depth - k
    return dict(layer_id=layer_id, lr_scale=decay ** (depth + 1 - layer_id), weight_decay=0.0 if no_wd else wd,
                trainable=not frozen)


# (config, framework name in the header, depth, layer decay, weight decay, K of last_k_blocks or None, rule)
CASES = [
    ("coco_vitb_mae_last4", "Detectron2", 12, 0.7, 0.1, 4, "vitdet"),
    ("ade20k_vitb_mae_last4", "MMSegmentation", 12, 0.65, 0.05, 4, "beit"),
]


@pytest.mark.slow
@pytest.mark.parametrize("config, framework, depth, decay, wd, k, rule", CASES, ids=[c[0] for c in CASES])
def test_inspect_tool_prints_table_and_per_parameter_json(tmp_path, config, framework, depth, decay, wd, k, rule):
    out = tmp_path / "params.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "inspect_param_groups.py"), "--config", config,
                           "--json", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{config} ({framework})") and lines[0].endswith(f"weight-decay rule {rule}")
    records = json.loads(out.read_text())
    for r in records:
        want = expected(r["name"], r["shape"], depth, decay, wd, k, rule)
        assert {key: r[key] for key in want} == want, r["name"]
    rows = {int(line.split()[0]): line.split() for line in lines if line.split() and line.split()[0].isdigit()}
    assert sorted(rows) == list(range(depth + 2))
    assert float(rows[0][1]) == pytest.approx(decay ** (depth + 1), rel=1e-3) and float(rows[depth + 1][1]) == 1
    assert [rows[i][-1] for i in range(depth + 2)] == ["yes"] * (depth + 1 - k) + ["no"] * (k + 1)
    total = sum(math.prod(r["shape"]) for r in records)
    assert f"total: {total / 1e6:.2f}M parameters in {len(records)} tensors" in proc.stdout
