"""`make demo`: built-in data -> tiny MAE, BEiT-style and supervised pretraining on the unlabelled
pool -> frozen-feature probe and Mask R-CNN / UperNet fine-tuning from each init, several seeds ->
a table of mean ± std with a noise verdict per comparison, PNGs.

Every stage prints a banner with the elapsed time and an estimate of what is left; the pretraining
loops print their own iteration / loss lines, and the fine-tuning runs (two at a time on two cores)
report their iteration and ETA. Stage times and the results go to ``<output>/demo_summary.json``:
``results[init][metric] = {"values": [one per seed], "mean", "std", "n"}`` for ``probe_mIoU``,
``mIoU``, ``APbox`` and ``APmask``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from mae_transfer.errors import ComparisonError
from mae_transfer.utils.logger import get_logger

from .builtin_inits import PRETRAINERS, RECIPE_FILE, PretrainRecipe, builtin_checkpoint
from .jobs import execute
from .launch import Init, plan_runs
from .probe_runs import PROBE_TIME_FILE, probe_inits
from .report import build_rows, comparison_json, comparisons, write_report
from .runs import RUN_INFO
from .stages import Stage, Stages, clock

logger = get_logger(__name__)

INIT_TITLES = {"mae": "MAE", "beit_style": "BEiT-style", "supervised": "supervised", "random": "random"}


@dataclass
class DemoPlan:
    """What the demo runs. Fine-tuning lengths override the demo configs' schedules.

    Sized for about 20 minutes on 2 CPU cores: ``finetune_seeds`` runs of each (init, task) go
    side by side (``jobs``), one thread each. ``quick()`` is a smoke test of the whole path (a few
    iterations per stage).
    """
    output: Path = Path("output/demo")
    inits: tuple[str, ...] = ("mae", "beit_style", "supervised", "random")
    tasks: tuple[str, ...] = ("det", "seg")
    recipe: PretrainRecipe = field(default_factory=PretrainRecipe)
    probe_seeds: int = 3
    finetune_seeds: int = 2
    probe_protocol: str = "linear"
    probe_steps: int | None = None  # None: the probe's default
    det_iters: int | None = 100  # None: the config's SOLVER.MAX_ITER
    seg_iters: int | None = 120  # None: the config's train_cfg.max_iters
    det_config: str = "demo_vit_tiny_192"
    seg_config: str = "demo_vit_tiny"
    jobs: int = 2
    skip_pretrain: bool = False
    reuse: bool = True

    @classmethod
    def quick(cls, **overrides) -> "DemoPlan":
        recipe = PretrainRecipe(mae_iters=3, mae_batch_size=8, sup_iters=3, sup_batch_size=8,
                                beit_iters=3, beit_batch_size=8)
        return cls(**{"recipe": recipe, "det_iters": 2, "seg_iters": 2, "probe_steps": 5, **overrides})


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


def build_data() -> dict[str, str]:
    """Generate (or find cached) the four built-in datasets; returns their roots."""
    from mae_transfer.data import builtin_dataset

    names = ("builtin_pretrain", "builtin_coco_train", "builtin_coco_val", "builtin_ade")
    return {name: str(builtin_dataset(name).root) for name in names}


# Prior guesses of each stage's seconds on 2 quiet CPU cores (only for the first estimate of what is left).
_PRIORS = {"data": 20, "pretrain": 150, "probe": 60, "det": 110, "seg": 60, "report": 5}


def _stage_plan(plan: DemoPlan) -> tuple[list[Stage], dict[str, str]]:
    pretrained = [n for n in plan.inits if n in PRETRAINERS]
    titles = {"data": "build the built-in datasets",
              **{f"pretrain_{n}": f"pretrain a tiny {INIT_TITLES.get(n, n)} ViT-Ti/16 on the unlabelled pool"
                 for n in pretrained},
              "probe": f"{plan.probe_protocol} probe of the frozen encoders ({plan.probe_seeds} seeds each)",
              **{f"{t}_{n}": f"fine-tune {'Mask R-CNN' if t == 'det' else 'UperNet'} ({t}) from {n} init, "
                             f"{plan.finetune_seeds} seeds" for t in plan.tasks for n in plan.inits},
              "report": "write the comparison table and PNGs"}
    kinds = {key: key.split("_")[0] for key in titles}
    stages = [Stage(title, kinds[key], _PRIORS[kinds[key]]) for key, title in titles.items()]
    return stages, titles


def _resolve_inits(plan: DemoPlan, stages: Stages, titles: dict[str, str], out: Path) -> list[Init]:
    inits = []
    for name in plan.inits:
        if name in PRETRAINERS:
            path = stages.run(titles[f"pretrain_{name}"], builtin_checkpoint, name, out / "pretrain", plan.recipe,
                              create=not plan.skip_pretrain, timing_file=out / "pretrain" / name / RECIPE_FILE)
            inits.append(Init(name, str(path)))
        elif name == "random":
            inits.append(Init("random", None))
        else:
            raise ComparisonError(f"the demo knows the initialisations {', '.join(INIT_TITLES)}, not {name!r}.")
    return inits


def run_demo(plan: DemoPlan, echo: Callable[[str], None] = print) -> dict:
    """Run every stage of the demo; returns (and writes) the summary dict."""
    out = Path(plan.output)
    out.mkdir(parents=True, exist_ok=True)
    stage_list, titles = _stage_plan(plan)
    stages = Stages(stage_list, echo)
    stages.run(titles["data"], build_data)
    inits = _resolve_inits(plan, stages, titles, out)
    probe = stages.run(titles["probe"], probe_inits, inits, out / "probe", seeds=range(plan.probe_seeds),
                       protocol=plan.probe_protocol, steps=plan.probe_steps, reuse=plan.reuse,
                       timing_file=out / "probe" / PROBE_TIME_FILE)
    seeds = list(range(plan.finetune_seeds))
    records = []
    opts = {"det_opts": det_schedule(plan.det_iters), "seg_opts": seg_schedule(plan.seg_iters)}
    for task in plan.tasks:
        for init in inits:
            specs = plan_runs([init], out, [task], plan.det_config, plan.seg_config, seeds=seeds, **opts)
            records += stages.run(titles[f"{task}_{init.name}"], execute, specs, reuse=plan.reuse, jobs=plan.jobs,
                                  timing_file=[s.run_dir / RUN_INFO for s in specs])
    extra = {init: {"probe_mIoU": values} for init, values in probe.items()}
    names = " vs ".join(INIT_TITLES.get(n, n) for n in plan.inits)
    title = f"make demo: {names} init (tiny ViT, built-in data, CPU)"
    report, files = stages.run(titles["report"], write_report, records, out, title=title, extra=extra)
    rows = build_rows(records, extra=extra)
    verdicts = comparisons(rows)
    summary = {
        "total_wall_s": round(sum(t["wall_s"] for t in stages.times.values()), 1),
        "total_cpu_s": round(sum(t["cpu_s"] or 0.0 for t in stages.times.values()), 1),
        "this_invocation_wall_s": round(stages.elapsed, 1), "stages": stages.times,
        "plan": {**asdict(replace(plan, output=str(out))), "recipe": asdict(plan.recipe)},
        **comparison_json(rows, verdicts), "files": [str(f) for f in files],
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    echo("\n" + report + "\n")
    reused = sum(bool(t.get("reused")) for t in stages.times.values())
    total = f"; {clock(summary['total_wall_s'])} for all stages when they ran" if reused else ""
    echo(f"demo finished in {clock(stages.elapsed)}{total} (stage times in {out / 'demo_summary.json'})")
    echo("comparison: " + str(out / "comparison.md"))
    echo("\n".join(["PNGs:"] + [f"  {f}" for f in files if f.suffix == ".png"]))
    return summary
