"""Speed, memory and FLOP benchmarks of the backbone and the task pipelines (CPU and CUDA).

Entry point: :func:`run_benchmark` (``tools/benchmark.py`` is its command line).
"""

from .run import CASES, Options, default_cases, run_benchmark

__all__ = ["CASES", "Options", "default_cases", "run_benchmark"]
