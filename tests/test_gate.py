"""The promotion gate: every rule, the edge cases, and which stage's student it picks."""

from __future__ import annotations

import pytest

from twt.core.schema import GateConfig
from twt.method.gate import TOLERANCE, decide


def m(accuracy: float, tokens: float) -> dict:
    return {"accuracy": accuracy, "mean_output_tokens": tokens}


BASE = {"student-base": m(0.25, 4), "stage1": m(0.90, 40), "stage2": m(0.88, 12), "stage3": m(0.87, 4)}


def test_the_final_student_passes_when_it_keeps_accuracy_with_few_tokens() -> None:
    verdict = decide(BASE, GateConfig(min_accuracy=0.5, max_accuracy_drop=0.05, min_token_reduction=0.5))
    assert verdict.passed and verdict.student == "stage3"
    text = " ".join(verdict.reasons)
    assert "stage3 accuracy 87.0% ≥ the minimum 50.0%" in text
    assert "3.0 points below stage1" in text and "90.0% fewer" in text


def test_a_final_stage_that_lost_accuracy_gives_way_to_the_best_compressed_student() -> None:
    metrics = {**BASE, "stage3": m(0.60, 4)}
    verdict = decide(metrics, GateConfig(max_accuracy_drop=0.05))
    assert verdict.passed and verdict.student == "stage2"
    assert verdict.reasons[0].startswith("stage3 did not pass the accuracy policy")
    assert "the candidate is stage2" in verdict.reasons[0] and "too large a drop" in verdict.reasons[0]


def test_every_student_passed_over_says_why() -> None:
    metrics = {**BASE, "stage3": m(0.40, 5), "stage2": m(0.55, 16), "stage1": m(1.0, 26)}
    verdict = decide(metrics, GateConfig(min_accuracy=0.5, max_accuracy_drop=0.05, min_token_reduction=0.5))
    assert not verdict.passed and verdict.student == "stage1"
    assert verdict.reasons[0].startswith("stage3 did not pass the accuracy policy (stage3 accuracy 40.0% <")
    assert verdict.reasons[1].startswith("stage2 did not pass the accuracy policy (stage2 accuracy 55.0% ≥")
    assert "45.0 points below stage1" in verdict.reasons[1]
    assert verdict.reasons[1].endswith(
        "the candidate is stage1, the student with the fewest output tokens that does"
    )
    assert (
        verdict.reasons[-1].startswith("stage1 writes 26.0 tokens")
        and "below the required 50.0%" in verdict.reasons[-1]
    )


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (GateConfig(min_accuracy=0.87, max_accuracy_drop=None, min_token_reduction=None), "min_accuracy"),
        (GateConfig(min_accuracy=None, max_accuracy_drop=0.03, min_token_reduction=None), "drop"),
        (GateConfig(min_accuracy=None, max_accuracy_drop=None, min_token_reduction=0.9), "reduction"),
    ],
)
def test_a_value_equal_to_the_threshold_passes(policy: GateConfig, field: str) -> None:
    verdict = decide(BASE, policy)
    assert verdict.passed and verdict.student == "stage3", (field, verdict.reasons)


def test_each_rule_fails_on_its_own_with_a_reason() -> None:
    low = decide(BASE, GateConfig(min_accuracy=0.95, max_accuracy_drop=None, min_token_reduction=None))
    assert not low.passed and low.student is None
    assert low.reasons[0] == "no student passes the accuracy policy"
    assert any("stage3 accuracy 87.0% < the minimum 95.0%" in r for r in low.reasons)
    assert any(r.startswith("stage1:") for r in low.reasons)  # every candidate is accounted for

    drop = decide(BASE, GateConfig(min_accuracy=None, max_accuracy_drop=0.01, min_token_reduction=None))
    # stage3 dropped 3 points and stage2 2 (> 1 allowed), so only stage1 (0 points) qualifies
    assert drop.passed and drop.student == "stage1"
    assert drop.checked["stage2"]["accuracy_ok"] is False and "too large a drop" in drop.reasons[0]


def test_reduction_fails_when_the_tokens_do_not_fall_enough() -> None:
    verdict = decide(BASE, GateConfig(min_accuracy=None, max_accuracy_drop=None, min_token_reduction=0.95))
    assert not verdict.passed and verdict.student == "stage3"
    assert "90.0% fewer, below the required 95.0%" in verdict.reasons[-1]


def test_missing_baseline_and_zero_tokens() -> None:
    no_stage1 = {k: v for k, v in BASE.items() if k != "stage1"}
    verdict = decide(no_stage1, GateConfig())
    assert not verdict.passed
    assert any("baseline 'stage1' was not evaluated" in r for r in verdict.reasons)

    zero = {**BASE, "stage1": m(0.90, 0)}
    verdict = decide(zero, GateConfig(max_accuracy_drop=None))
    assert not verdict.passed and "generated no tokens" in verdict.reasons[-1]

    silent = {**BASE, "stage3": m(0.9, 0)}
    verdict = decide(silent, GateConfig())
    assert verdict.passed and "100.0% fewer" in verdict.reasons[-1]

    assert not decide({"teacher": m(1.0, 30)}).passed
    assert "no candidate student" in decide({}).reasons[0]


def test_ties_prefer_the_later_stage_and_the_policy_comes_from_the_config() -> None:
    tied = {**BASE, "stage2": m(0.88, 4)}
    assert decide(tied, GateConfig()).student == "stage3"
    policy = GateConfig(**GateConfig(min_accuracy=0.8, reduction_baseline="stage2").model_dump())
    assert policy.reduction_baseline == "stage2" and policy.min_accuracy == 0.8
    assert decide(BASE, policy).to_dict()["student"] == "stage3"


def test_the_drop_is_worded_by_its_direction() -> None:
    better = decide({**BASE, "stage3": m(0.95, 4)}, GateConfig())
    assert "stage3 accuracy is 5.0 points above stage1" in better.reasons[1]
    level = decide({"stage1": m(0.9, 40)}, GateConfig(min_token_reduction=None))
    assert "stage1 accuracy is level with stage1" in level.reasons[1]


def test_a_passing_final_stage_gives_way_only_to_a_shorter_student_and_says_so() -> None:
    verdict = decide({**BASE, "stage2": m(0.88, 3)}, GateConfig())
    assert verdict.passed and verdict.student == "stage2"
    assert verdict.reasons[0] == (
        "stage3 passes the accuracy policy but stage2 writes fewer tokens (3.0 against 4.0); "
        "the candidate is stage2"
    )


def test_the_verdict_reads_as_a_decision() -> None:
    from twt.method.gate import describe

    metrics = {**BASE, "stage3": m(0.2, 2), "stage2": m(0.88, 27), "stage1": m(0.9, 27)}
    verdict = decide(metrics, GateConfig(min_accuracy=0.5, max_accuracy_drop=0.05, min_token_reduction=0.5))
    lines = describe(verdict.to_dict())
    text = "\n".join(lines)
    assert lines[0] == "gate: NOT PROMOTED"
    assert "students considered, final stage first: stage3, stage2, stage1" in text
    assert "stage3: fails min_accuracy, max_accuracy_drop" in text and "20.0%" in text
    assert "stage2: fails min_token_reduction (the candidate" in text
    assert "min_token_reduction: lower gate.min_token_reduction (gate_min_token_reduction)" in text
    assert "min_accuracy: lower gate.min_accuracy" in text
    passed = describe(decide(metrics, GateConfig(min_accuracy=0.5, min_token_reduction=None)).to_dict())
    assert passed[0] == "gate: PROMOTE stage2" and "to change the outcome:" not in "\n".join(passed)


# One edge rule for all three thresholds: each is met at the threshold, within TOLERANCE of it, and not
# beyond. Each case puts the one rule checked at ``threshold + offset`` (in the direction that fails).
THRESHOLDS = {"min_accuracy": 0.7, "max_accuracy_drop": 0.1, "min_token_reduction": 0.6}


def at_edge(rule: str, offset: float) -> tuple[dict, GateConfig]:
    """Metrics whose stage3 is ``offset`` beyond ``rule``'s threshold (0: on it; > 0: on the failing side)."""
    only = {r: None for r in THRESHOLDS} | {rule: THRESHOLDS[rule]}
    policy = GateConfig(**only, candidates=["stage3"])
    if rule == "min_accuracy":
        return {"stage3": m(0.7 - offset, 4)}, policy
    if rule == "max_accuracy_drop":
        return {"stage1": m(0.9, 40), "stage3": m(0.9 - 0.1 - offset, 4)}, policy
    return {"stage1": m(0.9, 40), "stage3": m(0.9, 40 * (1 - 0.6 + offset))}, policy


@pytest.mark.parametrize("rule", THRESHOLDS)
@pytest.mark.parametrize(
    ("offset", "passes"),
    [(0.0, True), (TOLERANCE / 2, True), (-TOLERANCE, True), (2 * TOLERANCE, False), (1e-4, False)],
)
def test_one_tolerance_rule_at_each_threshold(rule: str, offset: float, passes: bool) -> None:
    metrics, policy = at_edge(rule, offset)
    verdict = decide(metrics, policy)
    assert verdict.passed is passes, (rule, offset, verdict.reasons)
    assert (rule in verdict.checked["stage3"]["failed"]) is not passes


def test_float_noise_at_a_threshold_passes_every_rule() -> None:
    """Numbers a run produces exactly on a threshold, off by float rounding in the last bit."""
    assert 0.8 - 0.7 > 0.1 and 1 - 9 / 10 < 0.1 and 0.7 - 1e-16 < 0.7
    assert decide({"stage3": m(0.7 - 1e-16, 4)}, GateConfig(min_accuracy=0.7, max_accuracy_drop=None,
                  min_token_reduction=None, candidates=["stage3"])).passed  # fmt: skip
    drop = GateConfig(
        min_accuracy=None, max_accuracy_drop=0.1, min_token_reduction=None, candidates=["stage3"]
    )
    assert decide({"stage1": m(0.8, 40), "stage3": m(0.7, 4)}, drop).passed  # 10 points, in floats
    cut = GateConfig(
        min_accuracy=None, max_accuracy_drop=None, min_token_reduction=0.1, candidates=["stage3"]
    )
    assert decide({"stage1": m(0.8, 10), "stage3": m(0.8, 9)}, cut).passed  # 10% fewer tokens, in floats
