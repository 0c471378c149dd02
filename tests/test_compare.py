"""tools/compare.py and the demo's pieces, on run directories written by the frameworks' own writers.

The det run's metrics.json is written by Detectron2's JSONWriter from an EventStorage (as the
trainer's PeriodicWriter does, evaluation results flattened as EvalHook does); the seg run's by
the project's MMEngine MetricsJsonHook driven through its hook methods. So the reader is checked
against the real formats, and the table/CSV numbers against the values put in.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_det_run(run_dir: Path, losses: list[float], ap_box: float, ap_mask: float, seconds: int) -> None:
    """A Detectron2-format run: metrics.json via JSONWriter, log.txt with the timer hook's line."""
    from detectron2.evaluation.testing import flatten_results_dict
    from detectron2.utils.events import EventStorage, JSONWriter

    run_dir.mkdir(parents=True)
    writer = JSONWriter(str(run_dir / "metrics.json"), window_size=1)
    with EventStorage(0) as storage:
        for it, loss in enumerate(losses):
            storage.iter = it
            storage.put_scalars(total_loss=loss, lr=1e-4)
            if it == len(losses) - 1:  # EvalHook after the last step, before the writer
                results = {"bbox": {"AP": ap_box, "AP50": 2 * ap_box}, "segm": {"AP": ap_mask}}
                storage.put_scalars(**flatten_results_dict(results), smoothing_hint=False)
            writer.write()
    writer.close()
    minutes, secs = divmod(seconds, 60)
    (run_dir / "log.txt").write_text(
        f"[11/22 22:24:20] d2.engine.hooks INFO: Total training time: 0:{minutes:02d}:{secs:02d} (0:00:01 on hooks)\n")


def write_seg_run(run_dir: Path, losses: list[float], mious: list[tuple[int, float]], iter_time: float) -> None:
    """An MMSeg-format run: metrics.json via MetricsJsonHook, MMEngine's vis_data/scalars.json."""
    from mmengine.logging import MessageHub

    from mae_transfer.seg.hooks import MetricsJsonHook

    run_dir.mkdir(parents=True)
    hub = MessageHub.get_instance(f"compare-test-{run_dir.name}")
    runner = SimpleNamespace(work_dir=str(run_dir), iter=0, max_iters=len(losses), message_hub=hub,
                             logger=SimpleNamespace(info=lambda *a: None))
    hook = MetricsJsonHook(interval=1)
    evaluated = dict(mious)
    scalars = []
    for it, loss in enumerate(losses):
        runner.iter = it
        hub.update_scalar("train/lr", 1e-4)
        hook.after_train_iter(runner, it, outputs={"loss": loss, "decode.loss_ce": loss * 0.7})
        scalars.append({"loss": loss, "time": iter_time, "iter": it + 1, "step": it + 1})
        if it + 1 in evaluated:
            runner.iter = it + 1
            hook.after_val_epoch(runner, {"aAcc": 90.0, "mIoU": evaluated[it + 1], "mAcc": 80.0})
    hook.after_run(runner)
    vis = run_dir / "20261122_224850" / "vis_data"
    vis.mkdir(parents=True)
    (vis / "scalars.json").write_text("".join(json.dumps(s) + "\n" for s in scalars))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    write_det_run(root / "det_mae", [2.0, 1.5, 1.0, 0.8], ap_box=41.25, ap_mask=36.5, seconds=83)
    write_det_run(root / "det_random", [2.1, 1.9, 1.7, 1.6], ap_box=12.5, ap_mask=10.0, seconds=95)
    write_seg_run(root / "seg_mae", [1.2, 0.9, 0.7, 0.6], [(2, 30.0), (4, 44.5)], iter_time=2.0)
    write_seg_run(root / "seg_random", [1.3, 1.2, 1.1, 1.0], [(4, 25.0)], iter_time=1.5)
    for task in ("det", "seg"):  # the names compare.py stores beside the runs it launches
        for init in ("mae", "random"):
            (root / f"{task}_{init}" / "compare_run.json").write_text(json.dumps({"init": init, "task": task}))
    return root


def test_read_runs_in_framework_formats(runs: Path):
    from mae_transfer.compare import read_run

    det = read_run(runs / "det_mae")
    assert det.task == "det" and det.init == "mae"
    assert det.metrics == pytest.approx({"APbox": 41.25, "APmask": 36.5})
    assert det.losses == [(1, 2.0), (2, 1.5), (3, 1.0), (4, 0.8)]
    assert det.curves["APbox"] == [(4, 41.25)]
    assert det.train_time_s == 83
    seg = read_run(runs / "seg_mae")
    assert seg.task == "seg" and seg.metrics == {"mIoU": 44.5}
    assert seg.curves["mIoU"] == [(2, 30.0), (4, 44.5)]
    assert [v for _, v in seg.losses] == [1.2, 0.9, 0.7, 0.6]
    assert seg.train_time_s == pytest.approx(8.0)  # 4 iterations x 2.0 s
    (runs / "seg_random" / "compare_run.json").unlink()  # a run tools/compare.py did not launch
    assert read_run(runs / "seg_random").init == "random" and read_run(runs / "seg_random", "x").init == "x"


def test_evaluation_without_detections_counts_as_zero_ap(tmp_path: Path):
    """Detectron2's COCOEvaluator returns NaN for every bbox metric (and no segm) without predictions."""
    from mae_transfer.compare import read_run

    run_dir = tmp_path / "det_empty"
    write_det_run(run_dir, [2.0, 1.9], ap_box=float("nan"), ap_mask=0.0, seconds=5)
    lines = (run_dir / "metrics.json").read_text().splitlines()
    last = json.loads(lines[-1].replace("NaN", "null"))
    last.pop("segm/AP")
    lines[-1] = json.dumps({k: (float("nan") if v is None else v) for k, v in last.items()})
    (run_dir / "metrics.json").write_text("\n".join(lines) + "\n")
    record = read_run(run_dir)
    assert record.metrics == {"APbox": 0.0, "APmask": 0.0}
    assert record.notes == ["no detections at iteration 2 (Detectron2 reports NaN; counted as AP 0)"]


def test_compare_collect_writes_table_csv_and_pngs(runs: Path, tmp_path: Path):
    out = tmp_path / "table"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "compare.py"), "--collect", str(runs),
                             "--output", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "| mae | 41.2 | 36.5 | 44.5 | 1:23 | 0:08 |" in result.stdout  # 41.25 rounds half-even
    assert "| random | 12.5 | 10.0 | 25.0 | 1:35 | 0:06 |" in result.stdout
    with open(out / "comparison.csv") as f:
        rows = {r["init"]: r for r in csv.DictReader(f)}
    assert float(rows["mae"]["APbox"]) == 41.25 and float(rows["mae"]["mIoU"]) == 44.5
    assert float(rows["random"]["APmask"]) == 10.0 and float(rows["random"]["seg_train_s"]) == 6.0
    assert rows["mae"]["det_run"].endswith("det_mae")
    md = (out / "comparison.md").read_text()
    assert "![comparison](comparison.png)" in md
    expected = ["comparison", "bar_APbox", "bar_APmask", "bar_mIoU", "loss_det", "loss_seg",
                "curve_APbox", "curve_APmask", "curve_mIoU"]
    for name in expected:
        with Image.open(out / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) > 100
        assert str(out / f"{name}.png") in result.stdout


def test_collect_rejects_a_folder_without_runs(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, str(REPO / "tools" / "compare.py"), "--collect",
                             str(tmp_path / "empty")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("compare: error: no run directory") and "Traceback" not in result.stderr


def test_parse_and_resolve_inits(tmp_path: Path, monkeypatch):
    from mae_transfer.compare import ComparisonError, parse_init, resolve_inits

    assert parse_init("random") == ("random", None)
    assert parse_init("deit=/ckpt/deit_small.pth") == ("deit", "/ckpt/deit_small.pth")
    assert parse_init("runs/mae_b/checkpoint-last.pth") == ("mae_b", "runs/mae_b/checkpoint-last.pth")
    with pytest.raises(ComparisonError, match="neither a built-in"):
        parse_init("maee")
    checkpoint = tmp_path / "beit.pth"
    checkpoint.write_bytes(b"x")
    monkeypatch.delenv("MAE_TRANSFER_BEIT", raising=False)
    inits = resolve_inits(["random", "beit", f"mine={checkpoint}"], tmp_path / "pretrain")
    assert [(i.name, i.weights) for i in inits] == [("random", None), ("mine", str(checkpoint))]  # beit skipped
    monkeypatch.setenv("MAE_TRANSFER_BEIT", str(checkpoint))
    assert resolve_inits(["beit"], tmp_path)[0].weights == str(checkpoint)
    with pytest.raises(ComparisonError, match="does not exist"):
        resolve_inits([f"x={tmp_path / 'missing.pth'}"], tmp_path)
    with pytest.raises(FileNotFoundError, match="tools/demo.py"):
        resolve_inits(["mae"], tmp_path / "none", pretrain_missing=False)


def test_demo_schedules_are_valid_overrides_of_the_demo_configs():
    """The demo's iteration overrides pass each framework's own config checks."""
    from mae_transfer.compare.demo import det_schedule, seg_schedule
    from mae_transfer.det.config import load_config as load_det
    from mae_transfer.seg.config import load_config as load_seg

    det = load_det("demo_vit_tiny", det_schedule(120))
    assert det.SOLVER.MAX_ITER == 120 and tuple(det.SOLVER.STEPS) == (96, 111) and det.SOLVER.WARMUP_ITERS == 12
    assert det.TEST.EVAL_PERIOD == 60
    assert tuple(load_det("demo_vit_tiny", det_schedule(2)).SOLVER.STEPS) == ()
    options = dict(o.split("=", 1) for o in seg_schedule(150))
    seg = load_seg("demo_vit_tiny", {k: int(v) for k, v in options.items()})
    assert seg.train_cfg.max_iters == 150 and seg.train_cfg.val_interval == 75
    assert [s["end"] for s in seg.param_scheduler] == [15, 150] and seg.param_scheduler[1]["begin"] == 15


def test_run_one_records_time_reuses_finished_runs_and_protects_foreign_dirs(tmp_path: Path):
    """run_one with a stand-in training command (writes a Detectron2-format metrics line)."""
    from mae_transfer.compare import ComparisonError, Init, run_one

    run_dir = tmp_path / "det_x"
    line = json.dumps({"iteration": 0, "bbox/AP": 7.0, "segm/AP": 3.0})
    script = f"import pathlib, sys; pathlib.Path(sys.argv[1], 'metrics.json').open('a').write({line!r} + '\\n')"
    command = [sys.executable, "-c", script, str(run_dir)]
    record = run_one("det", command, run_dir, Init("x", None))
    assert record.init == "x" and record.metrics == {"APbox": 7.0, "APmask": 3.0}
    info = json.loads((run_dir / "compare_run.json").read_text())
    assert info["returncode"] == 0 and info["wall_time_s"] >= 0 and record.train_time_s == info["wall_time_s"]
    run_one("det", command, run_dir, Init("x", None))  # reused: the command did not run again
    assert len((run_dir / "metrics.json").read_text().splitlines()) == 1
    run_one("det", command, run_dir, Init("x", None), reuse=False)  # fresh: old files removed first
    assert len((run_dir / "metrics.json").read_text().splitlines()) == 1
    foreign = tmp_path / "det_y"
    foreign.mkdir()
    (foreign / "model_final.pth").write_bytes(b"keep")
    with pytest.raises(ComparisonError, match="did not write"):
        run_one("det", command[:-1] + [str(foreign)], foreign, Init("y", None))
    assert (foreign / "model_final.pth").read_bytes() == b"keep"
    with pytest.raises(ComparisonError, match="failed \\(exit 3\\)"):
        run_one("det", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "det_z", Init("z", None))


def test_plan_runs_seeds_and_freeze_reach_both_frameworks(tmp_path: Path):
    """Each seed is its own run directory; the seed and freeze policy are the frameworks' own keys
    and pass their config checks."""
    from mae_transfer.compare import Init
    from mae_transfer.compare.launch import plan_runs
    from mae_transfer.det.config import load_config as load_det
    from mae_transfer.seg.config import load_config as load_seg

    specs = plan_runs([Init("mae", "w.pth"), Init("random", None)], tmp_path, ["det", "seg"], seeds=[0, 1],
                      freeze="last_k_blocks:2")
    assert [s.run_dir.name for s in specs] == [f"{t}_{i}_seed{k}" for t in ("det", "seg")
                                               for i in ("mae", "random") for k in (0, 1)]
    assert {s.protocol for s in specs} == {"partial"} and [s.seed for s in specs[:2]] == [0, 1]
    det_opts = specs[1].command[specs[1].command.index("OUTPUT_DIR"):]
    cfg = load_det("demo_vit_tiny", det_opts[2:])
    assert cfg.SEED == 1 and cfg.MODEL.VIT.FREEZE == "last_k_blocks:2" and cfg.MODEL.VIT.WEIGHTS == "w.pth"
    from mae_transfer.cli.train_seg import parse_args

    seg = load_seg("demo_vit_tiny", parse_args(specs[5].command[3:]).cfg_options)  # as train_seg parses them
    assert seg.randomness.seed == 1 and seg.optim_wrapper.paramwise_cfg["freeze"] == "last_k_blocks:2"


def test_parallel_jobs_write_console_logs_and_keep_order(tmp_path: Path):
    """Two stand-in runs side by side: results come back in the order given, each run's output in
    its console.log, progress read from the framework's ETA line."""
    from mae_transfer.compare.jobs import RunSpec, execute, progress_of

    script = ("import json, pathlib, sys, time; d = pathlib.Path(sys.argv[1]); time.sleep(float(sys.argv[2])); "
              "print('[d2] eta: 0:00:03  iter: 7  total_loss: 1.0'); "
              "(d / 'metrics.json').write_text(json.dumps({'iteration': 0, 'bbox/AP': float(sys.argv[2])}) + '\\n')")
    specs = [RunSpec("det", name, None, tmp_path / f"det_{name}", [sys.executable, "-c", script,
                                                                   str(tmp_path / f"det_{name}"), delay], seed=0)
             for name, delay in (("slow", "1.0"), ("fast", "0.1"))]
    records = execute(specs, jobs=2, echo=lambda _: None)
    assert [r.init for r in records] == ["slow", "fast"] and records[0].metrics["APbox"] == 1.0
    assert progress_of(tmp_path / "det_fast" / "console.log") == "iter 7, eta 0:00:03"
    assert json.loads((tmp_path / "det_slow" / "compare_run.json").read_text())["seed"] == 0


def test_stage_estimate_learns_from_finished_stages():
    from mae_transfer.compare.stages import Stage, Stages

    plan = [Stage("a", "det", 100.0), Stage("b", "det", 100.0), Stage("c", "seg", 50.0)]
    stages = Stages(plan, echo=lambda _: None)
    assert stages.remaining_s() == 250.0
    stages.run("a", lambda: None)  # took ~0 s (e.g. cached): the other det stage is estimated at that,
    assert 49.0 < stages.remaining_s() < 51.0 and set(stages.times) == {"a"}  # the seg prior is not scaled
    stages._measured["a"] = 200.0  # a det stage took twice its prior: seg's prior doubles
    assert stages.remaining_s() == pytest.approx(200.0 + 100.0)
