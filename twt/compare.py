"""Paired comparison of two training paths across seeds: is a difference larger than the seeds' spread?

    paired_difference({0: 0.317, 1: 0.29, 2: 0.33}, {0: 0.262, 1: 0.25, 2: 0.27})

Each seed trains both paths on the same data order, so the per-seed differences ``a_s − b_s`` are paired.
The difference is called clear when the two-sided 95% confidence interval of their mean,
``mean ± t(0.975, n−1) · sd / √n`` (Student's t), excludes 0. With 3 seeds t = 4.30: a mean difference must
be about 2.5 standard deviations of the differences to count. Fewer than ``MIN_SEEDS`` (3) seeds never
show a clear difference (two equal differences would give an interval of width 0).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

MIN_SEEDS = 3

# two-sided 95% quantiles of Student's t by degrees of freedom (1..30); beyond that the normal 1.96
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def t_quantile(df: int) -> float:
    """t(0.975, df)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return T_975[df - 1] if df <= len(T_975) else 1.96


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> dict:
    """``a − b`` over the seeds both have: mean, sd, the 95% interval and whether it excludes 0."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    out: dict = {"seeds": seeds, "differences": [round(d, 6) for d in diffs]}
    if not diffs:
        return {**out, "mean": None, "sd": None, "low": None, "high": None, "clear": False}
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {**out, "mean": round(mean, 6), "sd": None, "low": None, "high": None, "clear": False}
    sd = statistics.stdev(diffs)
    half = t_quantile(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    low, high = mean - half, mean + half
    return {
        **out,
        "mean": round(mean, 6),
        "sd": round(sd, 6),
        "low": round(low, 6),
        "high": round(high, 6),
        "clear": len(diffs) >= MIN_SEEDS and (low > 0 or high < 0),
    }
