"""The promotion gate: a policy from configuration decides whether a student may be published, and says why.

    verdict = decide(metrics, GateConfig(min_accuracy=0.5, drop_baseline="stage1", ...))
    verdict.passed, verdict.student, verdict.reasons

``metrics`` maps an evaluated model's name (``student-base``, ``stage1``, ``stage2``, ``stage3``, a teacher)
to its numbers (at least ``accuracy`` and ``mean_output_tokens``, as ``twt.method.evaluate`` writes them).

Rules (a rule set to None is not checked; "equal to the threshold" passes, within ``TOLERANCE`` for all):
  accuracy       candidate accuracy ≥ ``min_accuracy``
  drop           candidate accuracy ≥ baseline accuracy − ``max_accuracy_drop``   (baseline ``drop_baseline``)
  reduction      1 − candidate tokens / baseline tokens ≥ ``min_token_reduction`` (``reduction_baseline``)

Which student: every stage's student is a candidate (``candidates``, final stage first). The gate
takes the one with the fewest mean output tokens among those that pass the two accuracy rules (ties: the
later stage), then checks the reduction rule on it. So a run whose final, answer-only stage lost too much
accuracy still promotes its best compressed student, and the verdict says so. A missing baseline, or a
baseline with zero tokens, fails the rule that needs it, with the reason in words. Pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from twt.core.schema import GateConfig

# One edge rule for every threshold: a value within TOLERANCE of it counts as equal, so float noise in an
# accuracy or a token ratio (1 - 0.9 is 0.09999999999999998) never turns "equal" into a failure. Far below
# one question's worth of accuracy (1/n) or of a token mean, so no real difference is forgiven.
TOLERANCE = 1e-12


def at_least(value: float, threshold: float) -> bool:
    """``value >= threshold``, within ``TOLERANCE``."""
    return value >= threshold - TOLERANCE


def at_most(value: float, limit: float) -> bool:
    """``value <= limit``, within ``TOLERANCE``."""
    return value <= limit + TOLERANCE


@dataclass
class Verdict:
    """The gate's decision: which student (None when none qualifies), pass or fail, and every reason."""

    passed: bool
    student: str | None
    reasons: list[str]
    checked: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def accuracy_reasons(name: str, metrics: Mapping[str, Mapping], policy: GateConfig) -> tuple[bool, list[str]]:
    """Whether ``name`` passes the two accuracy rules, with one sentence per rule checked."""
    acc = metrics[name]["accuracy"]
    ok, reasons = True, []
    if policy.min_accuracy is not None:
        passed = at_least(acc, policy.min_accuracy)
        ok &= passed
        reasons.append(
            f"{name} accuracy {_pct(acc)} {'≥' if passed else '<'} the minimum {_pct(policy.min_accuracy)}"
        )
    if policy.max_accuracy_drop is not None:
        base = metrics.get(policy.drop_baseline)
        if base is None:
            ok = False
            reasons.append(
                f"baseline {policy.drop_baseline!r} was not evaluated: cannot check the accuracy drop"
            )
        else:
            drop = base["accuracy"] - acc
            passed = at_most(drop, policy.max_accuracy_drop)
            ok &= passed
            change = f"{100 * drop:.1f} points below" if drop > 0 else f"{-100 * drop:.1f} points above"
            if drop == 0:
                change = "level with"
            reasons.append(
                f"{name} accuracy is {change} {policy.drop_baseline} ({_pct(base['accuracy'])}); "
                f"a drop of at most {100 * policy.max_accuracy_drop:.1f} points is allowed"
                + ("" if passed else ": too large a drop")
            )
    return ok, reasons


def _failed_accuracy_rules(name: str, metrics: Mapping[str, Mapping], policy: GateConfig) -> list[str]:
    """The names of the accuracy rules ``name`` fails (the policy's field names)."""
    acc, failed = metrics[name]["accuracy"], []
    if policy.min_accuracy is not None and not at_least(acc, policy.min_accuracy):
        failed.append("min_accuracy")
    if policy.max_accuracy_drop is not None:
        base = metrics.get(policy.drop_baseline)
        if base is None or not at_most(base["accuracy"] - acc, policy.max_accuracy_drop):
            failed.append("max_accuracy_drop")
    return failed


# what a user can change when a rule fails: the setting (and its pipeline parameter) or the training
ADVICE = {
    "min_accuracy": "lower gate.min_accuracy (pipeline parameter gate_min_accuracy), or train longer "
    "(stages.*.updates; stageN_updates)",
    "max_accuracy_drop": "allow a larger drop with gate.max_accuracy_drop (gate_max_accuracy_drop), or keep "
    "more of stage 1 in later stages (stages.stageN.mix_previous, more updates)",
    "min_token_reduction": "lower gate.min_token_reduction (gate_min_token_reduction), or compress harder "
    "(compression.method cts with a smaller ratio) and train stage 3 longer",
}


def describe(verdict: Mapping) -> list[str]:
    """The verdict as a decision a person reads: promote or not, which students were considered, which
    rule each failed (with the numbers), and what can be changed."""
    checked, student = verdict.get("checked") or {}, verdict.get("student")
    head = f"gate: PROMOTE {student}" if verdict["passed"] else "gate: NOT PROMOTED"
    lines = [head]
    if not checked:
        return [*lines, *[f"  {reason}" for reason in verdict["reasons"]]]
    lines.append(f"  students considered, final stage first: {', '.join(checked)}")
    failed_rules: list[str] = []
    for name, check in checked.items():
        failed = check.get("failed", [])
        failed_rules += [rule for rule in failed if rule not in failed_rules]
        if failed:
            state = f"fails {', '.join(failed)}"
        elif name == student or student is None:
            state = "passes every rule checked"
        else:  # the token reduction is checked on the candidate only
            state = f"passes the accuracy rules; not the candidate ({student} writes fewer tokens)"
        chosen = " (the candidate: fewest output tokens among those passing the accuracy rules)"
        lines.append(f"  {name}: {state}{chosen if name == student else ''}")
        lines += [f"      {reason}" for reason in check.get("reasons", [])]
    if not verdict["passed"]:
        lines.append("  to change the outcome:")
        lines += [f"    - {rule}: {ADVICE[rule]}" for rule in failed_rules if rule in ADVICE]
    return lines


def reduction_reason(
    name: str, metrics: Mapping[str, Mapping], policy: GateConfig
) -> tuple[bool, str | None]:
    """Whether ``name`` cuts enough output tokens against the reduction baseline."""
    if policy.min_token_reduction is None:
        return True, None
    base = metrics.get(policy.reduction_baseline)
    if base is None:
        return (
            False,
            f"baseline {policy.reduction_baseline!r} was not evaluated: cannot check the token reduction",
        )
    base_tokens, tokens = base["mean_output_tokens"], metrics[name]["mean_output_tokens"]
    if base_tokens <= 0:
        return (
            False,
            f"baseline {policy.reduction_baseline!r} generated no tokens: the reduction is undefined",
        )
    cut = 1 - tokens / base_tokens
    passed = at_least(cut, policy.min_token_reduction)
    return passed, (
        f"{name} writes {tokens:.1f} tokens on average against {base_tokens:.1f} for "
        f"{policy.reduction_baseline}: {_pct(cut)} fewer, {'≥' if passed else 'below'} the required "
        f"{_pct(policy.min_token_reduction)}"
    )


def decide(metrics: Mapping[str, Mapping], policy: GateConfig | None = None) -> Verdict:
    """Pick the student to promote and judge it (see the module docstring)."""
    policy = policy or GateConfig()
    present = [c for c in policy.candidates if c in metrics]
    if not present:
        return Verdict(
            False, None, [f"no candidate student was evaluated (looked for {list(policy.candidates)})"]
        )
    checked, passing = {}, []
    for rank, name in enumerate(present):
        ok, reasons = accuracy_reasons(name, metrics, policy)
        failed = _failed_accuracy_rules(name, metrics, policy)
        checked[name] = {"accuracy_ok": ok, "reasons": reasons, "failed": failed}
        if ok:
            passing.append((metrics[name]["mean_output_tokens"], rank, name))
    if not passing:
        reasons = ["no student passes the accuracy policy"]
        reasons += [f"{name}: {'; '.join(checked[name]['reasons'])}" for name in present]
        return Verdict(False, None, reasons, checked)
    _, _, chosen = min(passing)
    reasons = list(checked[chosen]["reasons"])
    final = present[0]
    if chosen != final and not checked[final]["accuracy_ok"]:
        # every student passed over says why, not only the final one
        passed_over = [
            f"{name} did not pass the accuracy policy ({'; '.join(checked[name]['reasons'])})"
            for name in present
            if not checked[name]["accuracy_ok"]
        ]
        passed_over[-1] += f"; the candidate is {chosen}, the student with the fewest output tokens that does"
        reasons[:0] = passed_over
    elif chosen != final:
        reasons.insert(
            0,
            f"{final} passes the accuracy policy but {chosen} writes fewer tokens "
            f"({metrics[chosen]['mean_output_tokens']:.1f} against "
            f"{metrics[final]['mean_output_tokens']:.1f}); the candidate is {chosen}",
        )
    ok, reason = reduction_reason(chosen, metrics, policy)
    if reason:
        reasons.append(reason)
        checked[chosen]["reasons"] = [*checked[chosen]["reasons"], reason]
    checked[chosen]["reduction_ok"] = ok
    if not ok:
        checked[chosen]["failed"] = ["min_token_reduction"]
    return Verdict(ok, chosen, reasons, checked)
