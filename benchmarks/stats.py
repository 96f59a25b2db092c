"""Paired per-question statistics for the quality benchmark: is a difference between two paths beyond noise?

    d = paired_bootstrap({0: [1, 0, 1, ...], 1: [...]}, {0: [1, 1, 0, ...], 1: [...]})
    holm([d1, d2, ...])          # Holm's correction across the comparisons of one table

Both paths answer the same held-out questions on the same seeds, so each question and seed gives a pair
(right or wrong on a, right or wrong on b). The difference of accuracies a − b is resampled over questions
and over seeds together (a two-level bootstrap: seeds with replacement, then questions with replacement),
so the interval carries both the finite question set (about 1.4 points of standard error at 1,200
questions) and the training randomness that the seeds vary. Its two-sided p-value is the bootstrap share on
the other side of 0, doubled. Holm's step-down correction (statsmodels) then controls the family-wise error
over every comparison of the table: a difference is *clear* only when its Holm-adjusted p is below 0.05.
McNemar's exact test (statsmodels) on each seed's discordant pairs is reported beside it.

With fewer than ``MIN_SEEDS`` seeds no interval is computed: the seeds' spread is unknown, and nothing is
called clear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

MIN_SEEDS = 2
ALPHA = 0.05
NO_INTERVAL = "fewer than 2 seeds: no interval can be computed"


def _matrix(per_seed: Mapping[int, Sequence[bool | int]], seeds: list[int]) -> np.ndarray:
    return np.array([np.asarray(per_seed[s], dtype=float) for s in seeds])


def paired_bootstrap(
    a: Mapping[int, Sequence[bool | int]],
    b: Mapping[int, Sequence[bool | int]],
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict:
    """``a − b`` in accuracy over the seeds both have (each seed: one 0/1 per question, the same questions in
    the same order): the mean, the 95% percentile interval and the two-sided p of a two-level bootstrap, and
    McNemar's exact p per seed."""
    from statsmodels.stats.contingency_tables import mcnemar

    seeds = sorted(set(a) & set(b))
    out: dict = {"seeds": seeds, "mean": None, "low": None, "high": None, "p": None, "mcnemar_p": []}
    if not seeds:
        return {**out, "note": "no seed in common"}
    first, second = _matrix(a, seeds), _matrix(b, seeds)
    if first.shape != second.shape:
        raise ValueError(f"the two paths answered different question sets: {first.shape} vs {second.shape}")
    diff = first - second  # seeds × questions, each −1, 0 or +1
    out["mean"] = float(diff.mean())
    out["per_seed"] = [float(x) for x in diff.mean(axis=1)]
    for x, y in zip(first.astype(bool), second.astype(bool), strict=True):
        table = [[int(np.sum(x & y)), int(np.sum(x & ~y))], [int(np.sum(~x & y)), int(np.sum(~x & ~y))]]
        out["mcnemar_p"].append(float(mcnemar(table, exact=True).pvalue))
    if len(seeds) < MIN_SEEDS:
        return {**out, "note": NO_INTERVAL}
    rng = np.random.default_rng(seed)
    n_seeds, n_items = diff.shape
    # a draw takes seeds with replacement, then questions with replacement (the same questions for every
    # drawn seed: the pairing is by question); its mean is w·D·u / (S·N) with w, u the draws' counts
    stats = np.empty(n_boot)
    for start in range(0, n_boot, 1000):
        size = min(1000, n_boot - start)
        w = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=size).astype(float)
        u = rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=size).astype(float)
        stats[start : start + size] = np.einsum("bs,si,bi->b", w, diff, u) / (n_seeds * n_items)
    low, high = np.percentile(stats, [2.5, 97.5])
    below, above = (np.sum(stats <= 0) + 1) / (n_boot + 1), (np.sum(stats >= 0) + 1) / (n_boot + 1)
    return {**out, "low": float(low), "high": float(high), "p": float(min(1.0, 2 * min(below, above)))}


def holm(results: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Each result with ``p_holm`` (Holm-adjusted over those that have a p) and ``clear``; a result without
    a p (too few seeds) is never clear."""
    from statsmodels.stats.multitest import multipletests

    tested = [i for i, r in enumerate(results) if r.get("p") is not None]
    adjusted: dict[int, float] = {}
    if tested:
        _, p_adj, _, _ = multipletests([results[i]["p"] for i in tested], alpha=alpha, method="holm")
        adjusted = {i: float(p) for i, p in zip(tested, p_adj, strict=True)}
    return [
        {**r, "p_holm": adjusted.get(i), "clear": i in adjusted and adjusted[i] < alpha}
        for i, r in enumerate(results)
    ]
