"""tools/benchmark.py --cases det_e2e seg_e2e loader on toy sizes (no timing asserts): both
pipelines of each task build with their own code, step, infer and land in the tables."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mae_transfer.benchmark.loader import ZOO_STEP_S, workers_needed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_e2e")
    cmd = [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--quick", "--device", "cpu",
           "--cases", "det_e2e", "seg_e2e", "loader", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "benchmark.json").read_text()), (out / "benchmark.md").read_text()


def test_each_task_times_ours_and_the_reference(result):
    data, md = result
    rows = data["e2e"]
    gemm_rate = data["gemm"][-1]["flops_per_s"]  # model FLOP/s of each step as a share of it
    skipped = [r for r in rows if r.get("skipped")]
    if skipped and all("SourceMissing" in r["skipped"] for r in skipped):
        rows = [r for r in rows if not r.get("skipped")]  # no Detectron2 source archive here
    assert not [r for r in rows if r.get("skipped")], rows
    got = {(r["task"], r["kind"], r["impl"]) for r in rows}
    for task, reference in (("det", "detectron2"), ("seg", "mmseg")):
        if not any(r["task"] == task for r in rows):
            continue
        for kind in ("train step", "inference"):
            assert {(task, kind, "ours"), (task, kind, reference)} <= got
    for r in rows:
        assert r["seconds"] > 0 and r["min"] <= r["seconds"] <= r["max"] and r["repeats"] >= 1
        assert r["flops"] > 0 and r["gemm_share"] == pytest.approx(r["flops"] / r["seconds"] / gemm_rate)
        if r["impl"] != "ours":
            assert r["speedup_of_ours"] > 0
    assert "## Whole pipelines, ours beside the references" in md and "share of GEMM rate" in md


def test_each_step_says_which_operators_took_its_time(result):
    data, md = result
    for r in (r for r in data["e2e"] if not r.get("skipped")):
        ops = r["top_ops"]
        assert ops and all(o["seconds"] >= 0 and 0 <= o["share"] <= 1 and o["calls"] >= 1 for o in ops), r
        assert [o["seconds"] for o in ops] == sorted((o["seconds"] for o in ops), reverse=True)
        assert sum(o["share"] for o in ops) <= 1 + 1e-6
    assert "## Where the time goes" in md
    assert any(o["op"].startswith("aten::") for r in data["e2e"] if not r.get("skipped") for o in r["top_ops"])


def test_loader_rows_give_workers_per_gpu(result):
    data, md = result
    rows = {r["task"]: r for r in data["loader"]}
    assert set(rows) == {"det", "seg"} and not any(r.get("skipped") for r in rows.values()), rows
    for r in rows.values():
        assert r["img_per_s_per_worker"] > 0
        assert r["workers_per_gpu"] == workers_needed(r["per_gpu_batch"], r["step_s"], r["img_per_s_per_worker"])
    assert "## Data loading per worker" in md


def test_workers_needed_arithmetic():
    # ViTDet-B zoo: 1 image per GPU every 0.314 s = 3.18 img/s; at 1 img/s per worker: 4 workers
    assert workers_needed(1, ZOO_STEP_S, 1.0) == 4
    assert workers_needed(2, 0.5, 2.0) == 2
