"""The embedded task: questions, reasoning styles, the three instructions, answer extraction."""

from __future__ import annotations

import random

import pytest

from twt.embedded_task import (
    PromptTemplates,
    TaskSpec,
    answer_of,
    completion,
    extract_answer,
    make_questions,
    normalize_answer,
    parse_question,
    random_question,
    reasoning_of,
    solve_steps,
)


def test_chains_are_evaluated_left_to_right_modulo_10() -> None:
    # 7+5=12→2; 2*3=6; 6-4=2
    assert answer_of("7+5*3-4") == "2"
    assert [s.value for s in solve_steps("7+5*3-4")] == [2, 6, 2]
    assert answer_of("0-7") == "3"  # negative raw values wrap around
    assert answer_of("9*9") == "1"


def test_reasoning_styles() -> None:
    assert reasoning_of("7+5*3-4") == "7+5=2;2*3=6;6-4=2"
    assert reasoning_of("7+5*3-4", "verbose") == "7+5=12 mod 2;2*3=6 mod 6;6-4=2 mod 2"
    assert reasoning_of("7+5*3-4", "concise") == "2;6;2"
    with pytest.raises(ValueError, match="unknown reasoning style"):
        reasoning_of("1+1", "poetic")


@pytest.mark.parametrize("bad", ["", "7", "7+", "12+3", "7/2", "7+5 ", "a+b"])
def test_parse_rejects_what_is_not_a_chain(bad: str) -> None:
    if bad == "7+5 ":  # surrounding space is tolerated
        assert parse_question(bad) == ([7, 5], ["+"])
        return
    with pytest.raises(ValueError, match="not an operation chain"):
        parse_question(bad)


def test_questions_are_reproducible_distinct_and_splits_do_not_overlap() -> None:
    evalq = make_questions(300, seed=0, split="eval")
    again = make_questions(300, seed=0, split="eval")
    train = make_questions(500, seed=0, split="train", exclude={q.question for q in evalq})
    assert evalq == again
    assert len({q.question for q in evalq}) == 300
    assert not {q.question for q in train} & {q.question for q in evalq}
    assert all(q.answer == answer_of(q.question) for q in train)
    assert [q.id for q in train[:2]] == ["train-000000", "train-000001"]


def test_the_difficulty_mix_follows_the_weights() -> None:
    rng = random.Random(0)
    spec = TaskSpec(weights=(0.0, 1.0))
    assert {len(parse_question(random_question(rng, spec))[1]) for _ in range(50)} == {2}
    with pytest.raises(ValueError, match="cannot draw"):
        make_questions(1000, seed=0, spec=TaskSpec(weights=(1.0,)))  # only 300 one-op chains exist


def test_templates_render_the_three_instructions() -> None:
    templates = PromptTemplates()
    assert templates.render("solve", question="1+2") == "Solve step by step: 1+2\n"
    assert templates.render("direct", question="1+2") == "Answer directly: 1+2\n"
    rewrite = templates.render("rewrite", question="1+2", reasoning="1+2=3", answer="3")
    assert "Reasoning: 1+2=3" in rewrite and "Student: \n" in rewrite  # a missing attempt renders empty
    with pytest.raises(ValueError, match="unknown instruction"):
        templates.render("summarise", question="1+2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7+5=2;2*3=6\nAnswer: 6", ("7+5=2;2*3=6", "6", None)),
        ("Answer: 6", ("", "6", None)),
        ("a\nAnswer: 1\nb\nanswer:  1,000.50 ", ("a\nAnswer: 1\nb", "1000.5", None)),  # the last one wins
        ("Answer: \\boxed{42}.", ("", "42", None)),
        ("Answer: Paris", ("", "paris", None)),
        ("7+5=2;2*3=", ("7+5=2;2*3=", None, "no 'Answer:' line in the output")),
    ],
)
def test_extract_answer(text: str, expected: tuple) -> None:
    assert extract_answer(text) == expected


def test_normalize_answer() -> None:
    assert normalize_answer(" 007 ") == "7"
    assert normalize_answer("3.10") == "3.1"
    assert normalize_answer("-2.0") == "-2"
    assert normalize_answer("New   York.") == "new york"
    assert completion(None, "3") == "Answer: 3"
    assert extract_answer(completion("1+2=3", "3"))[1:] == ("3", None)


def test_the_rewrite_fits_the_students_attempt_and_keeps_operands() -> None:
    from twt.embedded_task import attempt_steps, rewrite_for_student

    right = "7+5=2;2*3=6;6-4=2\nAnswer: 2\n(the student's answer is right)"
    first_wrong = "7+5=3;3*3=9;9-4=5\nAnswer: 5"
    assert attempt_steps(right) == ["7+5=2", "2*3=6", "6-4=2"]
    assert rewrite_for_student("7+5*3-4", right) == "2*3=6;6-4=2"  # the step it does reliably is dropped
    assert rewrite_for_student("7+5*3-4", first_wrong) == "7+5=2;2*3=6;6-4=2"  # the wrong step is kept
    assert rewrite_for_student("7+5*3-4", "") == "7+5=2;2*3=6;6-4=2"  # no attempt: every step
    assert rewrite_for_student("7+5", "7+5=2\nAnswer: 2") == "7+5=2"  # a one-step chain keeps its step
