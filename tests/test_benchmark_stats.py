"""The quality benchmark's paired per-question statistics: bootstrap over questions and seeds, Holm."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from stats import NO_INTERVAL, holm, paired_bootstrap


def _answers(p: float, n: int, rng: random.Random) -> list[int]:
    return [int(rng.random() < p) for _ in range(n)]


def test_a_three_point_gain_on_1200_questions_and_5_seeds_is_seen() -> None:
    # b answers 85% right; a fixes 3.5% of the questions b gets wrong on every seed: TwT's ablation size
    rng = random.Random(0)
    b = {s: _answers(0.85, 1200, rng) for s in range(5)}
    a = {s: [1 if (x == 0 and rng.random() < 0.25) else x for x in row] for s, row in b.items()}
    result = paired_bootstrap(a, b, n_boot=2000)
    assert 0.025 < result["mean"] < 0.05 and result["low"] > 0 and result["p"] < 0.01
    assert all(p < 0.05 for p in result["mcnemar_p"])


def test_no_difference_is_not_called_clear() -> None:
    rng = random.Random(1)
    a = {s: _answers(0.7, 1200, rng) for s in range(5)}
    b = {s: _answers(0.7, 1200, rng) for s in range(5)}
    result = paired_bootstrap(a, b, n_boot=2000)
    assert result["low"] < 0 < result["high"] and result["p"] > 0.05
    assert not holm([result])[0]["clear"]


def test_seed_spread_widens_the_interval() -> None:
    # the same mean gain (+2 points): steady (+2 / +2 per seed) or spread (−3 / +7)
    zero = [0] * 1000
    steady = paired_bootstrap({0: [1] * 20 + zero[20:], 1: [1] * 20 + zero[20:]}, {0: zero, 1: zero}, 2000)
    noisy = paired_bootstrap({0: zero, 1: [1] * 70 + zero[70:]}, {0: [1] * 30 + zero[30:], 1: zero}, 2000)
    assert steady["mean"] == pytest.approx(0.02) and noisy["mean"] == pytest.approx(0.02)
    assert steady["low"] > 0 and noisy["low"] < 0
    assert noisy["high"] - noisy["low"] > 2 * (steady["high"] - steady["low"])


def test_holm_adjusts_across_the_table() -> None:
    results = [{"p": 0.01}, {"p": 0.02}, {"p": 0.04}, {"p": None}]
    adjusted = holm(results)
    # Holm: sorted p times (m − rank): 0.01·3, 0.02·2, then max(0.04·1, 0.04)
    assert [r["p_holm"] for r in adjusted[:3]] == pytest.approx([0.03, 0.04, 0.04])
    assert [r["clear"] for r in adjusted] == [True, True, True, False]
    assert not holm([{"p": 0.03}, {"p": 0.04}])[1]["clear"]  # 0.04 alone would pass; Holm: 0.06


def test_one_seed_computes_no_interval_and_claims_nothing() -> None:
    result = paired_bootstrap({0: [1] * 100}, {0: [0] * 100})
    assert result["note"] == NO_INTERVAL and result["low"] is None and result["p"] is None
    assert result["mean"] == 1.0 and not holm([result])[0]["clear"]
    with pytest.raises(ValueError, match="different question sets"):
        paired_bootstrap({0: [1, 0], 1: [1, 0]}, {0: [1], 1: [1]})
