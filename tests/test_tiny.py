"""The tiny local models: reproducible training, and the committed teachers need their reasoning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twt.embedded_task import TaskSpec, make_questions
from twt.records import Question
from twt.tiny import DEFAULT_DIR, STUDENT, TEACHERS, BuildPlan, TinyModelSpec, build_all, greedy_accuracy

MICRO = TinyModelSpec("micro", hidden=32, layers=1, heads=2, steps=40, batch_size=8, lr=3e-3, seed=7)
HELD_OUT = 500


def _micro_build(out: Path) -> dict:
    plan = BuildPlan(models=(MICRO,), eval_questions=20)
    return build_all(out, plan, progress=False)


def test_the_build_is_bit_for_bit_reproducible_and_learns(tmp_path: Path) -> None:
    first, second = _micro_build(tmp_path / "a"), _micro_build(tmp_path / "b")
    assert first["sha256"] == second["sha256"] and set(first["sha256"]) == {"micro/model.safetensors"}
    info = json.loads((tmp_path / "a" / "micro" / "twt.json").read_text())
    assert info["kind"] == "tiny-model" and info["params"] > 0 and info["train_tokens"] > 0
    assert set(info["held_out"]) == {"solve", "direct"}
    # an untrained model of that vocabulary starts near ln(vocab) ≈ 5.7 nats per token
    assert info["initial_loss"] > 5.0 and info["final_loss"] < info["initial_loss"] - 1.5
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "a" / "micro").eos_token == "<|eos|>"
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "micro").config.hidden_size == 32


@pytest.fixture(scope="module")
def held_out() -> list[Question]:
    """The demo's held-out questions (configs/demo.yaml: 500, seed 0), never in any tiny model's training."""
    return make_questions(HELD_OUT, seed=0, split="eval", spec=TaskSpec())


@pytest.mark.parametrize("spec", TEACHERS, ids=lambda s: s.name)
def test_the_committed_teachers_need_their_reasoning(spec: TinyModelSpec, held_out: list[Question]) -> None:
    model = DEFAULT_DIR / spec.name
    if not (model / "model.safetensors").exists():
        pytest.fail(f"{model} is missing: run `twt task build --out twt/data/tiny`")
    solve = greedy_accuracy(model, held_out, "solve")
    direct = greedy_accuracy(model, held_out, "direct")
    print(f"{spec.name}: with reasoning {solve}, direct {direct}")
    assert solve["accuracy"] >= 0.90, solve
    assert solve["accuracy"] - direct["accuracy"] >= 0.30, (solve, direct)
    assert solve["mean_output_tokens"] > 3 * direct["mean_output_tokens"]


def test_the_committed_student_base_answers_but_cannot_reason(held_out: list[Question]) -> None:
    model = DEFAULT_DIR / STUDENT.name
    direct = greedy_accuracy(model, held_out[:200], "direct")
    assert direct["accuracy"] < 0.6  # room for the distillation stages to improve on
    assert direct["mean_output_tokens"] < 8  # it knows the answer format: "Answer: 7" and EOS
