"""Backbone comparison: run one det/seg recipe per initialisation, tabulate and plot the results.

    from mae_transfer.compare import resolve_inits, run_comparison, read_run, write_report
    inits = resolve_inits(["mae", "random"], pretrain_dir)
    records = run_comparison(inits, out_dir, tasks=("det", "seg"))
    text, files = write_report(records, out_dir)      # comparison.md/.csv/.json + PNGs
    # several runs of one (init, task) are seeds: cells are mean ± std, verdicts use the noise rule
"""
from mae_transfer.errors import ComparisonError
from mae_transfer.utils.stats import NOISE_RULE, SeedStats, Verdict, compare_stats, pooled_std, summarize

from .builtin_inits import PretrainRecipe, builtin_checkpoint
from .launch import BUILTIN_INITS, Init, parse_init, resolve_inits, run_comparison, run_one
from .report import Row, add_values, build_rows, comparisons, format_table, write_report
from .runs import RunRecord, find_run_dirs, read_run

__all__ = [
    "PretrainRecipe", "builtin_checkpoint", "BUILTIN_INITS", "Init", "ComparisonError", "parse_init",
    "resolve_inits", "run_comparison", "run_one", "build_rows", "format_table", "write_report",
    "RunRecord", "find_run_dirs", "read_run", "Row", "add_values", "comparisons", "NOISE_RULE", "SeedStats",
    "Verdict", "compare_stats", "pooled_std", "summarize",
]
