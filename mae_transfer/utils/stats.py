"""Seeds and spread: the per-seed summary of one metric and the noise rule for two initialisations.

Pure python (no numpy, no torch), so the rule reads in a minute and is testable by hand:

* ``summarize(values)``: mean and sample standard deviation (ddof=1) of one metric over seeds;
* ``pooled_std(a, b)``: sqrt(((na-1) sa^2 + (nb-1) sb^2) / (na+nb-2)), the two samples' common std;
* ``compare_stats(a, b, ...)``: the difference of means a - b and its verdict: "within noise" when
  |diff| < k * pooled std (k = 2), else "ahead" / "behind"; "no spread" with one seed each
  (no pooled std exists then, so nothing can be told from noise).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable

from mae_transfer.errors import ComparisonError

NOISE_K = 2.0
NOISE_RULE = ("A difference is called within noise when it is below 2 pooled standard deviations "
              "of the per-seed values.")
VERDICTS = ("ahead", "behind", "within noise", "no spread")


@dataclass(frozen=True)
class SeedStats:
    """One metric of one initialisation over its seeds.

    Attributes:
        values: the per-seed values, in seed order.
        mean: their mean.
        std: their sample standard deviation (ddof=1); 0.0 for a single value (``n`` says so).
        n: the number of seeds.
    """
    values: tuple[float, ...]
    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        """``"84.7 ± 1.2"`` for several seeds, ``"84.7"`` for one."""
        return f"{self.mean:.1f} ± {self.std:.1f}" if self.n > 1 else f"{self.mean:.1f}"

    def to_json(self) -> dict:
        """``{"values": [...], "mean": m, "std": s, "n": n}`` (the comparison.json cell)."""
        return {"values": list(self.values), "mean": self.mean, "std": self.std, "n": self.n}


def summarize(values: Iterable[float]) -> SeedStats:
    """Mean and sample std (ddof=1) of per-seed values (in seed order).

    Raises:
        ComparisonError: when there is no value.
    """
    values = tuple(float(v) for v in values)
    if not values:
        raise ComparisonError("no per-seed values to summarize; pass at least one value per metric.")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return SeedStats(values=values, mean=statistics.fmean(values), std=std, n=len(values))


def pooled_std(a: SeedStats, b: SeedStats) -> float | None:
    """sqrt(((na-1) sa^2 + (nb-1) sb^2) / (na+nb-2)); None with one seed each (no degree of freedom)."""
    dof = a.n + b.n - 2
    if dof == 0:
        return None
    return math.sqrt(((a.n - 1) * a.std ** 2 + (b.n - 1) * b.std ** 2) / dof)


def fmt_value(x: float) -> str:
    """One decimal (``"84.7"``), or two significant digits below 0.1 (``"0.032"``) so that a small
    nonzero value or difference does not print as ``0.0``."""
    return f"{x:.1f}" if x == 0 or abs(x) >= 0.095 else f"{x:.2g}"


@dataclass(frozen=True)
class Verdict:
    """The comparison of initialisation ``a`` against ``b`` on one metric.

    Attributes:
        metric: the metric's name (``"mIoU"``).
        a, b: the two initialisations' names; ``diff`` is mean(a) - mean(b).
        stats_a, stats_b: their per-seed summaries.
        pooled_std: the pooled standard deviation, None with one seed each.
        verdict: ``"ahead"`` / ``"behind"`` (a against b, |diff| >= k pooled std), ``"within noise"``
            (|diff| < k pooled std, or no difference at all), ``"no spread"`` (one seed each).
        k: how many pooled standard deviations a difference must reach.
    """
    metric: str
    a: str
    b: str
    stats_a: SeedStats
    stats_b: SeedStats
    diff: float
    pooled_std: float | None
    verdict: str
    k: float = NOISE_K

    def sentence(self) -> str:
        """E.g. ``"mIoU: mae 84.7 ± 1.2 vs random 81.0 ± 0.9 (3 seeds each): mae ahead by 3.7, more
        than 2 pooled std (2.1)"``; the number in brackets is k times the pooled std."""
        na, nb = self.stats_a.n, self.stats_b.n
        seeds = f"{na} seed{'s' if na > 1 else ''} each" if na == nb else f"{na} and {nb} seeds"
        head = f"{self.metric}: {self.a} {self.stats_a} vs {self.b} {self.stats_b} ({seeds}): "
        k = f"{self.k:g}"
        if self.verdict == "no spread":
            return head + (f"difference {fmt_value(self.diff)}; with one seed each there is no spread to tell it "
                           "from noise")
        threshold = self.k * self.pooled_std
        if self.verdict == "within noise":
            return head + (f"within noise: the difference {fmt_value(self.diff)} is below {k} pooled std "
                           f"({fmt_value(threshold)})")
        return head + (f"{self.a} {self.verdict} by {fmt_value(abs(self.diff))}, more than {k} pooled std "
                       f"({fmt_value(threshold)})")

    def to_json(self) -> dict:
        """``{"metric", "a", "b", "diff", "pooled_std", "verdict", "sentence"}``."""
        return {"metric": self.metric, "a": self.a, "b": self.b, "diff": self.diff,
                "pooled_std": self.pooled_std, "verdict": self.verdict, "sentence": self.sentence()}


def compare_stats(a: SeedStats, b: SeedStats, name_a: str, name_b: str, metric: str,
                  k: float = NOISE_K) -> Verdict:
    """The noise verdict of ``a`` against ``b``: "within noise" exactly when |mean_a - mean_b| < k
    pooled std (also when the means are equal, e.g. identical values with std 0); "no spread" with
    one seed each; else "ahead"/"behind" by the sign of the difference."""
    diff = a.mean - b.mean
    pooled = pooled_std(a, b)
    if pooled is None:
        verdict = "no spread"
    elif abs(diff) < k * pooled or diff == 0:
        verdict = "within noise"
    else:
        verdict = "ahead" if diff > 0 else "behind"
    return Verdict(metric=metric, a=name_a, b=name_b, stats_a=a, stats_b=b, diff=diff, pooled_std=pooled,
                   verdict=verdict, k=k)
