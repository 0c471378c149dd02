"""`make demo`: built-in data -> tiny MAE and supervised pretraining -> Mask R-CNN and UperNet
fine-tuning from MAE / supervised / random init -> comparison table and PNGs.

Every stage prints a banner with the elapsed time; the pretraining loops and the frameworks
(Detectron2, MMEngine) print their own iteration / loss / ETA lines. Stage times (wall and CPU
seconds) and the results go to ``<output>/demo_summary.json``.
"""
from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from mae_transfer.errors import ComparisonError
from mae_transfer.utils.logger import get_logger

from .builtin_inits import RECIPE_FILE, PretrainRecipe, builtin_checkpoint
from .launch import Init, run_comparison
from .report import build_rows, write_report
from .runs import RUN_INFO

logger = get_logger(__name__)


@dataclass
class DemoPlan:
    """What the demo runs. Fine-tuning lengths override the demo configs' schedules.

    The defaults are sized for about 15 minutes on 2 quiet CPU cores: a Mask R-CNN iteration
    (batch 4, 256 px) takes ~0.9 s and an UperNet iteration (batch 4, 128 px crops) ~0.3 s there, so
    the fine-tuning schedules are shorter than the demo configs' 300 iterations. At 60 Mask R-CNN
    iterations no init had learnt to detect yet (AP ~0 for all); 150 tell them apart. ``quick()``
    is a smoke test of the whole path (a few iterations per stage).
    """
    output: Path = Path("output/demo")
    inits: tuple[str, ...] = ("mae", "supervised", "random")
    tasks: tuple[str, ...] = ("det", "seg")
    recipe: PretrainRecipe = field(default_factory=PretrainRecipe)
    det_iters: int | None = 150  # None: the config's SOLVER.MAX_ITER
    seg_iters: int | None = 120  # None: the config's train_cfg.max_iters
    det_config: str = "demo_vit_tiny"
    seg_config: str = "demo_vit_tiny"
    skip_pretrain: bool = False
    reuse: bool = True

    @classmethod
    def quick(cls, **overrides) -> "DemoPlan":
        recipe = PretrainRecipe(mae_iters=3, mae_batch_size=8, sup_iters=3, sup_batch_size=8)
        return cls(**{"recipe": recipe, "det_iters": 2, "seg_iters": 2, **overrides})


def det_schedule(iters: int | None) -> list[str]:
    """Detectron2 overrides for ``iters`` iterations (lr steps at 80% / 93%, warmup 10%,
    evaluation at the half and at the end)."""
    if iters is None:
        return []
    milestones = sorted({int(iters * 0.8), int(iters * 0.93)} & set(range(1, iters - 1)))
    steps = "(" + "".join(f"{m}," for m in milestones) + ")"
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", steps,
            "SOLVER.WARMUP_ITERS", str(max(iters // 10, 1)), "SOLVER.CHECKPOINT_PERIOD", str(iters),
            "TEST.EVAL_PERIOD", str(max(iters // 2, 1))]


def seg_schedule(iters: int | None) -> list[str]:
    """MMSeg ``--cfg-options`` for ``iters`` iterations: warmup 10% then poly decay, validation at
    the half and at the end."""
    if iters is None:
        return []
    warmup = max(iters // 10, 1)
    log_every = max(min(10, iters // 10), 1)
    return [f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={max(iters // 2, 1)}",
            f"default_hooks.checkpoint.interval={iters}", f"default_hooks.logger.interval={log_every}",
            f"param_scheduler.0.end={warmup}", f"param_scheduler.1.begin={warmup}",
            f"param_scheduler.1.end={iters}"]


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class Stages:
    """Stage banners with elapsed time, and per-stage wall/CPU seconds for the summary."""

    def __init__(self, total: int, echo: Callable[[str], None] = print):
        self.total, self.echo, self.index = total, echo, 0
        self.start = time.perf_counter()
        self.times: dict[str, dict[str, float]] = {}

    def run(self, name: str, function: Callable, *args, timing_file: Path | None = None, **kwargs):
        """Run one stage. ``timing_file``: a json with ``wall_s``/``cpu_s`` that the stage writes when it
        does the work; when the stage reused earlier results (file older than the stage), its
        times are reported (marked ``reused``) instead of the few seconds the reuse took."""
        self.index += 1
        elapsed = _clock(time.perf_counter() - self.start)
        self.echo(f"\n==== [{self.index}/{self.total}] {name}  (demo elapsed {elapsed}) ====")
        wall, cpu, started = time.perf_counter(), _cpu_seconds(), time.time()
        result = function(*args, **kwargs)
        times = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(_cpu_seconds() - cpu, 1)}
        if timing_file is not None and timing_file.is_file() and timing_file.stat().st_mtime < started:
            stored = json.loads(timing_file.read_text())
            if stored.get("wall_s", stored.get("wall_time_s")) is not None:  # pretraining / compare_run.json
                times = {"wall_s": stored.get("wall_s", stored.get("wall_time_s")),
                         "cpu_s": stored.get("cpu_s", stored.get("cpu_time_s")), "reused": True}
        self.times[name] = times
        note = " (reused; it took " + _clock(times["wall_s"]) + " when it ran)" if times.get("reused") else ""
        self.echo(f"==== {name}: done in {_clock(time.perf_counter() - wall)}{note} ====")
        return result

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def build_data() -> dict[str, str]:
    """Generate (or find cached) the four built-in datasets; returns their roots."""
    from mae_transfer.data import builtin_dataset

    names = ("builtin_pretrain", "builtin_coco_train", "builtin_coco_val", "builtin_ade")
    return {name: str(builtin_dataset(name).root) for name in names}


def mae_vs_random(rows) -> list[str]:
    """One sentence per metric saying whether MAE init beat random init (and by how much)."""
    by_name = {r.init: r.values for r in rows}
    if "mae" not in by_name or "random" not in by_name:
        return []
    lines = []
    for metric in ("APbox", "APmask", "mIoU"):
        mae, rnd = by_name["mae"].get(metric), by_name["random"].get(metric)
        if mae is None or rnd is None:
            continue
        verdict = "beat" if mae > rnd else "did not beat"
        lines.append(f"{metric}: MAE init {verdict} random init ({mae:.1f} vs {rnd:.1f}, {mae - rnd:+.1f})")
    return lines


def run_demo(plan: DemoPlan, echo: Callable[[str], None] = print) -> dict:
    """Run every stage of the demo; returns (and writes) the summary dict."""
    out = Path(plan.output)
    out.mkdir(parents=True, exist_ok=True)
    pretrained = [n for n in plan.inits if n in ("mae", "supervised")]
    stages = Stages(2 + len(pretrained) + len(plan.tasks) * len(plan.inits))
    stages.run("build the built-in datasets", build_data)
    inits = []
    for name in plan.inits:
        if name in ("mae", "supervised"):
            title = f"pretrain a tiny {'MAE' if name == 'mae' else 'supervised'} ViT-Ti/16 on the built-in images"
            path = stages.run(title, builtin_checkpoint, name, out / "pretrain", plan.recipe,
                              create=not plan.skip_pretrain, timing_file=out / "pretrain" / name / RECIPE_FILE)
            inits.append(Init(name, str(path)))
        elif name == "random":
            inits.append(Init("random", None))
        else:
            raise ComparisonError(f"the demo knows the initialisations mae, supervised and random, not {name!r}.")

    records = []
    for task in plan.tasks:
        for init in inits:
            what = "Mask R-CNN" if task == "det" else "UperNet"
            records += stages.run(
                f"fine-tune {what} ({task}) from {init.name} init", run_comparison, [init], out, [task],
                plan.det_config, plan.seg_config, det_schedule(plan.det_iters), seg_schedule(plan.seg_iters),
                reuse=plan.reuse, timing_file=out / f"{task}_{init.name}" / RUN_INFO)
    table, files = stages.run("write the comparison table and PNGs", write_report, records, out,
                              title="make demo: MAE vs supervised vs random init (tiny ViT, built-in data, CPU)")
    rows = build_rows(records)
    verdicts = mae_vs_random(rows)
    summary = {
        "total_wall_s": round(sum(t["wall_s"] for t in stages.times.values()), 1),
        "total_cpu_s": round(sum(t["cpu_s"] or 0.0 for t in stages.times.values()), 1),
        "this_invocation_wall_s": round(stages.elapsed, 1), "stages": stages.times,
        "plan": {**asdict(replace(plan, output=str(out))), "recipe": asdict(plan.recipe)},
        "results": {r.init: r.values for r in rows}, "mae_vs_random": verdicts,
        "files": [str(f) for f in files],
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    echo("\n" + table + "\n")
    for line in verdicts:
        echo(line)
    reused = sum(bool(t.get("reused")) for t in stages.times.values())
    total = f"; {_clock(summary['total_wall_s'])} for all stages when they ran" if reused else ""
    echo(f"\ndemo finished in {_clock(stages.elapsed)}{total} (stage times in {out / 'demo_summary.json'})")
    echo("comparison: " + str(out / "comparison.md"))
    echo("\n".join(["PNGs:"] + [f"  {f}" for f in files if f.suffix == ".png"]))
    return summary
