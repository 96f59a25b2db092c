"""The embedded task: questions, reasoning styles, the three instructions, answer extraction."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from twt.core.prompts import PromptTemplates, completion, extract_answer, normalize_answer
from twt.embedded.task import (
    STYLES,
    VERBOSE_STYLES,
    WEIGHTS,
    answer_of,
    attempt_values,
    in_slip_slice,
    make_questions,
    parse_question,
    random_question,
    reasoning_of,
    solve_steps,
    strata,
)


def test_chains_are_evaluated_left_to_right_modulo_10() -> None:
    # 7+5=12→2; 2*3=6; 6-4=2
    assert answer_of("7+5*3-4") == "2"
    assert [s.value for s in solve_steps("7+5*3-4")] == [2, 6, 2]
    assert answer_of("0-7") == "3"  # negative raw values wrap around
    assert answer_of("9*9") == "1"


def test_reasoning_styles() -> None:
    assert reasoning_of("7+5*3-4") == "7+5=2;2*3=6;6-4=2"
    assert reasoning_of("7+5*3-4", "narrator") == (
        "Start with 7. Add 5 to get 12, which is 2 mod 10. Multiply by 3 to get 6. Subtract 4 to get 2. "
        "So the result is 2."
    )
    assert reasoning_of("7+5*3-4", "checker").startswith("7+5 is 12, mod 10 is 2. Check: correct. 2*3 is 6.")
    assert reasoning_of("7+5*3-4", "restater").startswith(
        "We need 7 plus 5 times 3 minus 4, left to right, mod 10. Step 1: 7 plus 5 makes 2."
    )
    with pytest.raises(ValueError, match="unknown reasoning style"):
        reasoning_of("1+1", "poetic")


def test_teachers_phrase_each_sample_their_own_way_and_the_values_read_back() -> None:
    rng = random.Random(0)
    for style in VERBOSE_STYLES:
        samples = {reasoning_of("7+5*3-4", style, rng=rng) for _ in range(20)}
        assert len(samples) > 3, style  # the synonym pools make k samples differ
        assert all(attempt_values(s) == [2, 6, 2] for s in samples)
    for q in make_questions(300, seed=1):
        for style in STYLES:
            text = reasoning_of(q.question, style, rng=rng)
            assert attempt_values(text) == [s.value for s in solve_steps(q.question)], (style, text)


def test_each_teacher_slips_on_its_own_slice_of_about_8_percent() -> None:
    questions = make_questions(3000, seed=0, split="eval")
    slices = {s: {q.id for q in questions if in_slip_slice(q.question, s)} for s in VERBOSE_STYLES}
    for style, ids in slices.items():
        assert 0.05 <= len(ids) / len(questions) <= 0.10, (style, len(ids))
    assert len(slices["narrator"] & slices["checker"]) < 0.15 * len(slices["narrator"])  # different slices
    assert answer_of("3-9", slip="narrator") == "6" and answer_of("3-9") == "4"  # 9-3 instead of 3-9
    assert answer_of("7*8", slip="checker") == "5" and answer_of("7*8") == "6"  # 7+8
    assert answer_of("7+6", slip="restater") == "2" and answer_of("7+6") == "3"  # 7+5
    assert reasoning_of("3-9", "narrator", slip=True).startswith("Start with 3. Subtract 9 to get 6.")


def test_a_stratified_draw_fills_every_chain_length_and_grows_by_subsets() -> None:
    small, large = (make_questions(n, 0, "eval", WEIGHTS, stratified=True) for n in (500, 1200))
    lengths = Counter(len(parse_question(q.question)[1]) for q in large)
    assert lengths == strata(1200, WEIGHTS) == {1: 180, 2: 300, 3: 360, 4: 360}
    assert {q.question for q in small} <= {q.question for q in large}
    with pytest.raises(ValueError, match="3 items cannot fill 4 strata"):
        make_questions(3, 0, "eval", WEIGHTS, stratified=True)
    with pytest.raises(ValueError, match="only 300 exist"):
        make_questions(1200, 0, "eval", (1.0, 1.0), stratified=True)


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
    assert {len(parse_question(random_question(rng, (0.0, 1.0)))[1]) for _ in range(50)} == {2}
    with pytest.raises(ValueError, match="cannot draw"):
        make_questions(1000, seed=0, weights=(1.0,))  # only 300 one-op chains exist


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


def test_the_rewrite_fits_the_students_attempt() -> None:
    from twt.embedded.task import attempt_steps, rewrite_for_student

    right = "7+5=2;2*3=6;6-4=2\nAnswer: 2\n(the student's answer is right)"
    first_wrong = "7+5=3;3*3=9;9-4=5\nAnswer: 5"
    assert attempt_steps(right) == ["7+5=2", "2*3=6", "6-4=2"]
    # a step the attempt got right becomes canonical; one it got wrong keeps its raw value (12 before 2)
    assert rewrite_for_student("7+5*3-4", right) == "7+5=2;2*3=6;6-4=2"
    assert rewrite_for_student("7+5*3-4", first_wrong) == "7+5=12=2;2*3=6;6-4=2"
    assert rewrite_for_student("7+5*3-4", "") == "7+5=2;2*3=6;6-4=2"  # no attempt: all canonical
    verbose = reasoning_of("7+5*3-4", "narrator")  # any style is read
    assert rewrite_for_student("7+5*3-4", verbose) == "7+5=2;2*3=6;6-4=2"
    wrong_later = "Start with 7. Add 5 to get 12, which is 2 mod 10. Multiply by 3 to get 5."
    assert rewrite_for_student("7+5*3-4", wrong_later) == "7+5=2;2*3=6;6-4=2"  # 2*3: raw equals result
    # a step never written counts as wrong: -2 is kept before its result
    assert rewrite_for_student("7+5*3-4", "7+5=2") == "7+5=2;2*3=6;6-4=2"
    assert rewrite_for_student("7+5*3-9", "7+5=2") == "7+5=2;2*3=6;6-9=-3=7"


def test_the_shortcut_floor_is_the_best_guess_from_the_last_two_operations() -> None:
    from twt.embedded.task import OPS, shortcut_floor

    # brute force for 3 operations: group every chain by its last two (operator, operand) pairs
    groups: dict[tuple, Counter] = {}
    for first in range(10):
        for op1, d1, op2, d2, op3, d3 in itertools.product(OPS, range(10), repeat=3):
            question = f"{first}{op1}{d1}{op2}{d2}{op3}{d3}"
            groups.setdefault((op2, d2, op3, d3), Counter())[answer_of(question)] += 1
    brute = sum(max(c.values()) for c in groups.values()) / 10 / 30**3
    assert shortcut_floor(3) == pytest.approx(brute)
    assert [round(shortcut_floor(n), 3) for n in (1, 2, 3, 4)] == [0.157, 0.212, 0.265, 0.28]
