"""Evaluation: exact metrics on a scripted backend, a real tiny teacher, resume, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twt.core.records import Question
from twt.core.schema import EvaluationConfig
from twt.embedded.task import in_slip_slice, make_questions
from twt.embedded.tiny import DEFAULT_DIR
from twt.method.evaluate import EvalTarget, answer_accuracy, evaluate_model, evaluate_models
from twt.method.metrics_markdown import render_report
from twt.method.teachers import TeacherBackendError
from twt.method.teachers.interface import Generation


class ScriptedBackend:
    """Answers from a list, in order: (text, tokens, finish_reason)."""

    def __init__(self, script: list[tuple[str, int, str]]):
        self.script, self.prompts = script, []

    def generate(self, prompts, *, n=1, temperature=None, seed=None, max_new_tokens=None):
        self.prompts += prompts
        return [
            [Generation(text, tokens, reason, None)] for text, tokens, reason in self.script[: len(prompts)]
        ]


QUESTIONS = [Question(id=f"q{i}", question="1+1", answer=a) for i, a in enumerate(["2", "2", "2", "5"])]


def test_metrics_are_exact_on_scripted_answers(tmp_path: Path) -> None:
    backend = ScriptedBackend(
        [
            ("1+1=2\nAnswer: 2", 10, "stop"),
            ("Answer: 3", 4, "stop"),
            ("1+1=", 20, "length"),
            ("Answer: 5", 6, "stop"),
        ]
    )
    result = evaluate_model(
        EvalTarget("s", "unused", role="student"),
        QUESTIONS,
        backend=backend,
        answers_path=tmp_path / "a.jsonl",
    )
    assert backend.prompts[0] == "Solve step by step: 1+1\n"
    assert (result["accuracy"], result["correct"], result["no_answer"], result["cut_by_budget"]) == (
        0.5,
        2,
        1,
        1,
    )
    assert result["mean_output_tokens"] == 10.0 and result["p50_output_tokens"] == 8.0
    assert result["p95_output_tokens"] == pytest.approx(18.5)
    assert result["tokens_per_correct"] == 20.0  # 40 tokens for 2 right answers
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, False, True]

    wrong = ScriptedBackend([("Answer: 9", 3, "stop")] * 4)
    assert evaluate_model(EvalTarget("w", "unused"), QUESTIONS, backend=wrong)["tokens_per_correct"] is None


def test_the_metric_module_normalises_and_counts_missing_answers_wrong() -> None:
    assert answer_accuracy(["7", None, "3.0", " 1,000"], ["7", "3", "3", "1000"]) == {
        "accuracy": 0.75,
        "correct": 3,
        "total": 4,
    }


def test_questions_without_gold_are_refused() -> None:
    with pytest.raises(ValueError, match="need gold answers"):
        evaluate_model(EvalTarget("s", "m"), [Question(id="x", question="1+1")], backend=ScriptedBackend([]))


def test_a_real_teacher_with_and_without_reasoning_and_resume(tmp_path: Path) -> None:
    # off the checker's slip slice (where it is wrong on purpose), with room for its verbose reasoning
    questions = [
        q for q in make_questions(60, seed=0, split="eval") if not in_slip_slice(q.question, "checker")
    ]
    questions = questions[:40]
    model = str(DEFAULT_DIR / "teacher-verbose")
    targets = [
        EvalTarget("verbose-solve", model, "solve", role="teacher"),
        EvalTarget("verbose-direct", model, "direct", role="baseline"),
    ]
    budget = EvaluationConfig(max_new_tokens=128, batch_size=16)
    metrics = evaluate_models(targets, questions, tmp_path, budget, progress=False)
    solve, direct = metrics["models"]["verbose-solve"], metrics["models"]["verbose-direct"]
    assert solve["accuracy"] >= 0.9 and solve["accuracy"] > direct["accuracy"] + 0.3
    assert solve["mean_output_tokens"] > 4 * direct["mean_output_tokens"]
    assert (tmp_path / "accuracy_vs_tokens.png").stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "| verbose-solve | teacher |" in report and "accuracy_vs_tokens.png" in report

    # a second call with the same models and settings reuses every finished model
    answers = (tmp_path / "answers" / "verbose-solve.jsonl").stat().st_mtime_ns
    again = evaluate_models(targets, questions, tmp_path, budget, progress=False)
    assert again["models"] == metrics["models"]
    assert (tmp_path / "answers" / "verbose-solve.jsonl").stat().st_mtime_ns == answers
    # a model whose path changed is not the model that was evaluated: it is evaluated again (and fails here)
    broken = [EvalTarget(t.name, str(tmp_path / "nowhere"), t.instruction, role=t.role) for t in targets]
    with pytest.raises(TeacherBackendError, match=r"cannot load .*nowhere"):
        evaluate_models(broken, questions, tmp_path, budget, progress=False)
    with pytest.raises(ValueError, match="distinct names"):
        evaluate_models([targets[0], targets[0]], questions, tmp_path / "x", progress=False)


def test_a_target_named_by_a_free_form_label_is_evaluated() -> None:
    """Benchmarks label their rows in words ("stage 1 (full reasoning) (seed 0)"); such a label is not a
    teacher name, and must not stop the evaluation."""
    questions = make_questions(4, seed=0, split="eval")
    target = EvalTarget(
        "TwT stage 1 (full reasoning) (seed 0)", str(DEFAULT_DIR / "teacher-verbose"), "direct"
    )
    result = evaluate_model(target, questions, EvaluationConfig(max_new_tokens=8, batch_size=4))
    assert 0 <= result["accuracy"] <= 1 and result["mean_output_tokens"] > 0


def test_a_stage_retrained_in_the_same_directory_is_evaluated_afresh(tmp_path: Path) -> None:
    """Reuse is keyed by the model's content, not its path: a retrained stage (here: another model's
    files copied over the first's) gets fresh numbers in metrics.json, which the gate reads."""
    import shutil

    from twt.core.records import read_json

    questions = make_questions(40, seed=0, split="eval")
    stage = tmp_path / "stage1"
    shutil.copytree(DEFAULT_DIR / "teacher-verbose", stage)
    target = [EvalTarget("stage1", str(stage), "solve", role="student")]
    budget = EvaluationConfig(max_new_tokens=64)
    first = evaluate_models(target, questions, tmp_path / "eval", budget, progress=False)
    shutil.rmtree(stage)
    shutil.copytree(DEFAULT_DIR / "teacher-large", stage)
    second = evaluate_models(target, questions, tmp_path / "eval", budget, progress=False)
    direct = [EvalTarget("stage1", str(DEFAULT_DIR / "teacher-large"), "solve", role="student")]
    fresh = evaluate_models(direct, questions, tmp_path / "direct", budget, progress=False)

    def numbers(result: dict) -> dict:  # what the gate reads; not the path or the wall time
        return {k: v for k, v in result.items() if k not in ("model", "seconds", "seconds_per_question")}

    old, new = numbers(first["models"]["stage1"]), numbers(second["models"]["stage1"])
    assert new == numbers(fresh["models"]["stage1"]) and new != old
    assert numbers(read_json(tmp_path / "eval" / "metrics.json")["models"]["stage1"]) == new


class CountingEvaluation:
    """Stands in for ``evaluate_model`` and counts the models actually evaluated."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, target, questions, evaluation: EvaluationConfig, *, answers_path) -> dict:
        self.calls.append(target.name)
        return {"name": target.name, "model": target.model, "role": target.role, "accuracy": 0.5,
                "mean_output_tokens": float(evaluation.max_new_tokens)}  # fmt: skip


def test_reuse_needs_the_same_content_and_settings(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from twt.method import evaluate

    counting = CountingEvaluation()
    monkeypatch.setattr(evaluate, "evaluate_model", counting)
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")

    def run(target: EvalTarget | None = None, questions=QUESTIONS, **settings) -> list[str]:
        counting.calls.clear()
        target = target or EvalTarget("s", str(model))
        evaluate_models([target], questions, tmp_path / "eval", EvaluationConfig(**settings), progress=False)
        return counting.calls

    assert run() == ["s"]
    assert run() == []  # same content, same settings
    shutil.copytree(model, tmp_path / "moved")
    assert run(EvalTarget("s", str(tmp_path / "moved"))) == []  # same content elsewhere
    assert run(max_new_tokens=7) == ["s"]
    assert run(max_new_tokens=7, batch_size=3) == ["s"]
    assert run(max_new_tokens=7, batch_size=3, questions=QUESTIONS[:2]) == ["s"]
    assert run(
        EvalTarget("s", str(model), "direct"), max_new_tokens=7, batch_size=3, questions=QUESTIONS[:2]
    ) == ["s"]
    (model / "model.safetensors").write_bytes(b"retrained")
    assert run() == ["s"]
    (model / "tokenizer.json").write_text("{}")
    assert run() == ["s"]
    (tmp_path / "eval" / "models" / "s.json").write_text('{"name": "s", "accuracy": 1.0}')  # no key: old
    assert run() == ["s"]


def test_the_report_states_the_gate_verdict() -> None:
    metrics = {
        "questions": 2,
        "max_new_tokens": 8,
        "models": {
            "stage3": {
                "name": "stage3",
                "role": "student",
                "accuracy": 1.0,
                "mean_output_tokens": 3.0,
                "p50_output_tokens": 3,
                "p95_output_tokens": 3,
                "tokens_per_correct": 3.0,
                "no_answer": 0,
                "seconds_per_question": 0.01,
            }
        },
    }
    verdict = {"passed": False, "student": None, "reasons": ["no student passes the accuracy policy"]}
    text = render_report(metrics, verdict=verdict)
    assert "## Gate: FAILED" in text and "- no student passes the accuracy policy" in text
    assert "| stage3 | student | 100.0% | 3.0 |" in text


def test_one_metrics_table_for_runs_and_cards():
    """The run report's table and the model card's are one renderer: columns follow the numbers given,
    the chosen model comes first and is marked, a missing number reads as told, tokens per correct is
    derived where it was not recorded."""
    from twt.method.metrics_markdown import metrics_table

    full = {
        "t": {"name": "teacher-large", "role": "teacher", "accuracy": 1.0, "mean_output_tokens": 20.0,
              "p50_output_tokens": 20, "p95_output_tokens": 22, "tokens_per_correct": 20.0, "no_answer": 0,
              "seconds_per_question": 0.02},
        "s": {"name": "stage3", "role": "student", "accuracy": 0.0, "mean_output_tokens": 5.0,
              "p50_output_tokens": 5, "p95_output_tokens": 6, "tokens_per_correct": None, "no_answer": 3,
              "seconds_per_question": 0.01},
    }  # fmt: skip
    lines = metrics_table(full).splitlines()
    assert lines[0] == (
        "| model | role | accuracy | mean output tokens | p50 | p95 | tokens per correct | no answer "
        "| s/question |"
    )
    assert lines[2] == "| stage3 | student | 0.0% | 5.0 | 5 | 6 | – | 3 | 0.0100 |"  # students first
    assert lines[3].startswith("| teacher-large | teacher | 100.0% |")

    card = {"stage1": {"accuracy": 0.9, "mean_output_tokens": 36.0}, "a|b": {"accuracy": 0.5}}
    lines = metrics_table(
        card, chosen="a|b", missing="not recorded", always=("tokens_per_correct",)
    ).splitlines()
    assert lines[0] == "| model | accuracy | mean output tokens | tokens per correct |"
    assert lines[2] == "| **a\\|b** (this model) | 50.0% | not recorded | not recorded |"
    assert lines[3] == "| stage1 | 90.0% | 36.0 | 40.0 |"


def test_a_model_card_table_of_full_evaluation_rows_keeps_its_three_columns():
    from twt.registry import card as model_card

    numbers = {
        "role": "student",
        "accuracy": 0.8,
        "mean_output_tokens": 8.0,
        "p50_output_tokens": 8,
        "p95_output_tokens": 9,
        "tokens_per_correct": 10.0,
        "no_answer": 0,
        "seconds_per_question": 0.01,
    }
    metrics = {"models": {"s3": {**numbers, "name": "stage3"}, "stage1": {**numbers, "accuracy": 0.9}}}
    card = model_card.render_card({"metrics": metrics, "gate": {"student": "s3"}}, {}, "u")
    table = [line for line in card.split("## Metrics")[1].splitlines() if line.startswith("|")]
    assert table[0] == "| model | accuracy | mean output tokens | tokens per correct |"
    assert table[2] == "| **stage3** (this model) | 80.0% | 8.0 | 10.0 |"  # chosen by its key, shown by name
    assert table[3] == "| stage1 | 90.0% | 8.0 | 10.0 |"
