"""Paired comparison across seeds: a difference counts only when its 95% interval excludes 0."""

import pytest

from twt.compare import paired_difference, t_quantile


def test_a_consistent_difference_is_clear_and_a_noisy_one_is_not() -> None:
    clear = paired_difference({0: 0.40, 1: 0.42, 2: 0.41}, {0: 0.30, 1: 0.31, 2: 0.29})
    assert clear["differences"] == [0.1, 0.11, 0.12] and clear["clear"]
    assert clear["mean"] == pytest.approx(0.11) and clear["low"] > 0
    # the rerun: TwT final 31.3 ± 3.2 against answer-only 30.2 ± 2.5 does not separate
    noisy = paired_difference({0: 0.35, 1: 0.28, 2: 0.31}, {0: 0.29, 1: 0.33, 2: 0.285})
    assert not noisy["clear"] and noisy["low"] < 0 < noisy["high"]
    # with 3 seeds the mean must exceed t / √3 = 4.30 / 1.73 = 2.48 sd of the differences: 5 sd counts,
    # 1.7 sd (every seed positive, still) does not
    assert paired_difference({0: 2.0, 1: 2.5, 2: 3.0}, {0: 0, 1: 0, 2: 0})["clear"] is True
    assert paired_difference({0: 1.0, 1: 2.0, 2: 3.6}, {0: 0, 1: 0, 2: 0})["clear"] is False


def test_one_seed_shows_nothing_and_only_shared_seeds_count() -> None:
    one = paired_difference({0: 0.9, 1: 0.5}, {0: 0.1})
    assert one["seeds"] == [0] and one["mean"] == pytest.approx(0.8) and not one["clear"]
    assert paired_difference({}, {0: 1.0})["mean"] is None
    two = paired_difference({0: 0.02, 1: 0.02}, {0: 0.01, 1: 0.01})  # sd 0, but two seeds claim nothing
    assert two["sd"] == 0 and not two["clear"]
    assert t_quantile(2) == 4.303 and t_quantile(100) == 1.96
    with pytest.raises(ValueError):
        t_quantile(0)
