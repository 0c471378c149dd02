"""Seeds and spread in the comparison: per-seed summaries, the noise rule, aggregation of seeded
run directories, and the tables / comparison.json a seeded comparison writes.

The statistics are checked against numpy and against the rule restated; run directories are
written by hand in the formats tests/test_compare.py checks against the frameworks' own writers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mae_transfer.compare import (
    NOISE_RULE,
    ComparisonError,
    Row,
    RunRecord,
    add_values,
    build_rows,
    compare_stats,
    comparisons,
    find_run_dirs,
    format_table,
    pooled_std,
    read_run,
    summarize,
    write_report,
)


def write_det(run_dir: Path, ap_box: float, ap_mask: float, seconds: int, info: dict | None = None) -> None:
    """A Detectron2-style metrics.json (loss lines, one evaluation) and the timer line of log.txt."""
    run_dir.mkdir(parents=True)
    lines = [{"iteration": 0, "total_loss": 2.0}, {"iteration": 1, "total_loss": 1.5},
             {"iteration": 1, "bbox/AP": ap_box, "bbox/AP50": 2 * ap_box, "segm/AP": ap_mask}]
    (run_dir / "metrics.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run_dir / "log.txt").write_text(f"d2.engine.hooks INFO: Total training time: 0:{seconds // 60:02d}:"
                                     f"{seconds % 60:02d} (0:00:01 on hooks)\n")
    if info is not None:
        (run_dir / "compare_run.json").write_text(json.dumps(info))


def write_seg(run_dir: Path, miou: float, info: dict | None = None) -> None:
    """An MMSeg-style metrics.json (MetricsJsonHook lines: losses, one validation) and the dumped config."""
    run_dir.mkdir(parents=True)
    lines = [{"iteration": 1, "loss": 1.2}, {"iteration": 2, "loss": 0.9},
             {"split": "val", "iteration": 2, "aAcc": 90.0, "mIoU": miou}]
    (run_dir / "metrics.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run_dir / "demo_vit_tiny.py").write_text("train_cfg = dict(max_iters=2)\n")
    if info is not None:
        (run_dir / "compare_run.json").write_text(json.dumps(info))


# -- per-seed summaries and the noise rule ------------------------------------------------------

def test_summarize_and_pooled_std_match_numpy():
    a, b = [41.0, 43.5, 40.25, 44.0], [30.0, 31.5, 29.0]
    sa, sb = summarize(a), summarize(b)
    assert (sa.n, sa.values) == (4, tuple(a))
    assert sa.mean == pytest.approx(np.mean(a)) and sa.std == pytest.approx(np.std(a, ddof=1))
    # pooled variance = all squared deviations from each sample's own mean over (na + nb - 2)
    squares = np.sum((np.array(a) - np.mean(a)) ** 2) + np.sum((np.array(b) - np.mean(b)) ** 2)
    assert pooled_std(sa, sb) == pytest.approx(np.sqrt(squares / (len(a) + len(b) - 2)))
    one = summarize([7.5])
    assert (one.mean, one.std, one.n) == (7.5, 0.0, 1)
    assert pooled_std(one, one) is None  # no degree of freedom
    assert pooled_std(one, sb) == pytest.approx(sb.std)  # the single seed adds no spread
    assert str(sa) == f"{np.mean(a):.1f} ± {np.std(a, ddof=1):.1f}" and str(one) == "7.5"
    with pytest.raises(ComparisonError, match="at least one value"):
        summarize([])


@pytest.mark.parametrize("shift", [-3.0, -2.0, -1.99, -0.5, 0.0, 0.5, 1.99, 2.0, 2.01, 5.0])
def test_within_noise_exactly_below_two_pooled_std(shift: float):
    ref = summarize([9.0, 10.0, 11.0])  # std 1, so the pooled std of two shifted copies is 1
    other = summarize([9.0 + shift, 10.0 + shift, 11.0 + shift])
    verdict = compare_stats(other, ref, "mae", "random", "mIoU")
    assert verdict.pooled_std == pytest.approx(1.0) and verdict.diff == pytest.approx(shift)
    expected = "within noise" if abs(verdict.diff) < 2 * verdict.pooled_std else \
        "ahead" if verdict.diff > 0 else "behind"
    assert verdict.verdict == expected
    assert verdict.verdict == {-3.0: "behind", -2.0: "behind", 2.0: "ahead", 2.01: "ahead", 5.0: "ahead"}.get(
        shift, "within noise")


def test_noise_rule_edge_cases():
    # one seed each: no spread, whatever the difference
    assert compare_stats(summarize([50.0]), summarize([10.0]), "a", "b", "APbox").verdict == "no spread"
    # one seed against three: the three give the pooled std
    v = compare_stats(summarize([14.0]), summarize([9.0, 10.0, 11.0]), "a", "b", "APbox")
    assert v.pooled_std == pytest.approx(1.0) and v.verdict == "ahead"
    # identical per-seed values (std 0): any difference is ahead/behind, none is within noise
    same = summarize([20.0, 20.0, 20.0])
    assert compare_stats(summarize([20.1, 20.1]), same, "a", "b", "m").verdict == "ahead"
    assert compare_stats(summarize([19.9, 19.9]), same, "a", "b", "m").verdict == "behind"
    assert compare_stats(summarize([20.0, 20.0]), same, "a", "b", "m").verdict == "within noise"
    # k is the rule's multiplier
    wide = compare_stats(summarize([12.0, 13.0, 14.0]), summarize([9.0, 10.0, 11.0]), "a", "b", "m", k=4.0)
    assert wide.verdict == "within noise"


def test_a_small_difference_does_not_print_as_zero():
    v = compare_stats(summarize([0.05, 0.05]), summarize([0.02, 0.02]), "mae", "random", "APbox")
    assert v.verdict == "ahead" and "mae ahead by 0.03, more than 2 pooled std (0.0)" in v.sentence()


def test_verdict_sentences():
    mae, rnd = summarize([83.5, 84.7, 85.9]), summarize([80.1, 81.0, 81.9])
    assert compare_stats(mae, rnd, "mae", "random", "mIoU").sentence() == (
        "mIoU: mae 84.7 ± 1.2 vs random 81.0 ± 0.9 (3 seeds each): mae ahead by 3.7, "
        "more than 2 pooled std (2.1)")
    assert compare_stats(rnd, mae, "random", "mae", "mIoU").sentence().endswith(
        "random behind by 3.7, more than 2 pooled std (2.1)")
    close = compare_stats(summarize([81.6, 82.8]), rnd, "mae", "random", "mIoU")
    assert close.sentence() == ("mIoU: mae 82.2 ± 0.8 vs random 81.0 ± 0.9 (2 and 3 seeds): within noise: "
                                "the difference 1.2 is below 2 pooled std (1.8)")  # 2 * sqrt((0.72 + 1.62) / 3)
    alone = compare_stats(summarize([3.0]), summarize([1.0]), "mae", "random", "APbox")
    assert alone.sentence().startswith("APbox: mae 3.0 vs random 1.0 (1 seed each): difference 2.0;")
    assert set(alone.to_json()) == {"metric", "a", "b", "diff", "pooled_std", "verdict", "sentence"}


# -- seeded run directories ---------------------------------------------------------------------

@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """det runs with 2 seeds and seg runs with 3 seeds for mae and random (named as launch.py names them)."""
    root = tmp_path / "out"
    write_det(root / "det_mae_seed1", 42.0, 37.0, 90, {"init": "mae", "task": "det", "seed": 1})
    write_det(root / "det_mae_seed0", 40.0, 35.0, 80)  # no compare_run.json: init and seed from the name
    (root / "det_mae_seed0" / "config.yaml").write_text("MODEL: {}\n")
    write_det(root / "det_random_seed0", 12.0, 10.0, 100, {"init": "random", "task": "det", "seed": 0})
    write_det(root / "det_random_seed1", 13.0, 10.5, 110, {"init": "random", "task": "det", "seed": 1})
    for seed, (mae, rnd) in enumerate([(60.0, 50.0), (61.0, 52.0), (62.0, 51.0)]):
        write_seg(root / f"seg_mae_seed{seed}", mae, {"init": "mae", "task": "seg"})  # seed from the name
        write_seg(root / f"seg_random_seed{seed}", rnd)
    return root


def test_seed_runs_aggregate_into_one_row_per_init(seeded: Path):
    records = [read_run(d) for d in find_run_dirs([seeded])]
    by_dir = {r.path.name: r for r in records}
    assert (by_dir["det_mae_seed0"].init, by_dir["det_mae_seed0"].seed) == ("mae", 0)
    assert (by_dir["det_mae_seed1"].init, by_dir["det_mae_seed1"].seed) == ("mae", 1)
    assert (by_dir["seg_random_seed2"].init, by_dir["seg_random_seed2"].seed) == ("random", 2)
    rows = {r.init: r for r in build_rows(records)}
    assert list(rows) == ["mae", "random"]
    mae = rows["mae"]
    assert [r.seed for r in mae.runs["det"]] == [0, 1] and [r.seed for r in mae.runs["seg"]] == [0, 1, 2]
    assert mae.stats["APbox"].values == (40.0, 42.0)  # seed order
    assert mae.stats["APbox"].std == pytest.approx(np.std([40.0, 42.0], ddof=1))
    assert mae.values["APbox"] == 41.0 and mae.values["mIoU"] == 61.0 and mae.stats["mIoU"].n == 3
    assert mae.values["det_train_s"] == 85.0 and mae.values["seg_train_s"] is None
    with pytest.raises(ComparisonError, match="both seed 0 of mae det"):
        build_rows(records + [RunRecord("mae", "det", seeded / "elsewhere", {"APbox": 1.0}, seed=0)])
    assert len(build_rows(records + records)[0].runs["det"]) == 2  # the same directory twice counts once


def test_compare_run_json_seed_wins_over_the_name(tmp_path: Path):
    write_det(tmp_path / "det_mae_seed3", 1.0, 1.0, 5, {"init": "mae", "task": "det", "seed": 7})
    write_det(tmp_path / "det_deit", 1.0, 1.0, 5)
    assert read_run(tmp_path / "det_mae_seed3").seed == 7
    assert (read_run(tmp_path / "det_deit").init, read_run(tmp_path / "det_deit").seed) == ("deit", None)


def test_seeded_report_tables_json_and_extra_metric(seeded: Path, tmp_path: Path):
    records = [read_run(d) for d in find_run_dirs([seeded])]
    probe = {"mae": {"probe_mIoU": [30.0, 31.0, 32.0]}, "random": {"probe_mIoU": {1: 21.0, 0: 20.0, 2: 22.0}}}
    text, files = write_report(records, tmp_path / "report", extra=probe)
    lines = text.splitlines()
    assert lines[0] == "| init | AP box | AP mask | mIoU | probe mIoU | det train time |"
    assert "| mae | 41.0 ± 1.4 | 36.0 ± 1.4 | 61.0 ± 1.0 | 31.0 ± 1.0 | 1:25 |" in lines
    assert "| random | 12.5 ± 0.7 | 10.2 ± 0.4 | 51.0 ± 1.0 | 21.0 ± 1.0 | 1:45 |" in lines
    assert "| mae | 40.0, 42.0 | 35.0, 37.0 | 60.0, 61.0, 62.0 | 30.0, 31.0, 32.0 |" in lines  # per-seed
    assert "over 2 seeds (AP box, AP mask) and 3 seeds (mIoU, probe mIoU) per initialisation" in text
    assert NOISE_RULE in text
    assert ("mIoU: mae 61.0 ± 1.0 vs random 51.0 ± 1.0 (3 seeds each): mae ahead by 10.0, more than 2 pooled "
            "std (2.0)") in lines
    md = (tmp_path / "report" / "comparison.md").read_text()
    assert "- mae det seed 1: `" in md and NOISE_RULE in md and "- APbox: mae 41.0 ± 1.4 vs random" in md

    report = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert set(report) == {"results", "verdicts", "noise_rule", "runs"} and report["noise_rule"] == NOISE_RULE
    assert report["results"]["mae"]["APbox"] == {"values": [40.0, 42.0], "mean": 41.0,
                                                 "std": pytest.approx(np.std([40, 42], ddof=1)), "n": 2}
    assert report["results"]["random"]["probe_mIoU"]["values"] == [20.0, 21.0, 22.0]  # {seed: value} sorted
    assert [(v["metric"], v["a"], v["b"]) for v in report["verdicts"]] == [
        ("APbox", "mae", "random"), ("APmask", "mae", "random"), ("mIoU", "mae", "random"),
        ("probe_mIoU", "mae", "random")]
    assert {v["verdict"] for v in report["verdicts"]} == {"ahead"}
    assert set(report["verdicts"][0]) == {"metric", "a", "b", "diff", "pooled_std", "verdict", "sentence"}
    assert [Path(p).name for p in report["runs"]["mae"]["det"]] == ["det_mae_seed0", "det_mae_seed1"]
    assert len(report["runs"]["random"]["seg"]) == 3
    names = {f.name for f in files}
    assert {"comparison.json", "comparison.png", "bar_probe_mIoU.png", "bar_APbox.png", "curve_mIoU.png",
            "loss_det.png"} <= names
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)


def test_single_seed_rows_and_extra_values_api():
    rows = [Row("mae", {"APbox": 20.0, "mIoU": 30.0}), Row("deit", {"APbox": 25.0, "mIoU": 29.0})]
    assert format_table(rows).splitlines()[2] == "| mae | 20.0 | 30.0 |"  # one seed: no ±
    verdicts = comparisons(rows)  # no random row: against the first one
    assert [(v.a, v.b, v.verdict) for v in verdicts] == [("deit", "mae", "no spread")] * 2
    row = add_values(rows, "random", "probe_mIoU", [10.0, 12.0])
    assert rows[-1] is row and row.values["probe_mIoU"] == 11.0 and row.values["APbox"] is None
    add_values(rows, "mae", "probe_mIoU", {2: 19.0, 0: 17.0, 1: 18.0})
    assert rows[0].stats["probe_mIoU"].values == (17.0, 18.0, 19.0) and rows[0].values["APbox"] == 20.0
    assert [(v.a, v.b, v.metric, v.verdict) for v in comparisons(rows)] == [
        ("mae", "random", "probe_mIoU", "ahead")]  # random has only the probe
    assert [v.a for v in comparisons(rows, reference="mae")] == ["deit", "deit", "random"]
    with pytest.raises(ComparisonError, match="'beit' has no results"):
        comparisons(rows, reference="beit")
    assert build_rows([], {"mae": {"probe_mIoU": [1.0]}})[0].stats["probe_mIoU"].n == 1
