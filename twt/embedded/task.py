"""The embedded reasoning task: mod-10 operation chains, written out by teachers in their own verbose styles.

A question is a chain of single-digit operations evaluated left to right modulo 10, for example
``7+5*3-4``. A small model cannot carry a long chain in one forward pass, so it fails to answer directly
but succeeds when it writes the steps first.

The canonical reasoning (``standard``) writes one step per operation, operands and result:
``7+5=2;2*3=6;6-4=2``. It is what a good compression reaches: it keeps every computation and drops only
words. The teachers, like real LLMs, write the same computation at length, each in its own style, with the
phrasing drawn from pools of synonyms (``PHRASES``), so that a teacher's k samples differ:

  narrator  ``Start with 7. Add 5 to get 12, which is 2 mod 10. Multiply by 3 to get 6. ...``
  checker   ``7+5 is 12, mod 10 is 2. Check: correct. 2*3 is 6. Verified. ...``
  restater  ``We need 7 plus 5 times 3 minus 4, left to right, mod 10. Step 1: 7 plus 5 makes 2. ...``

Each style comes with its own slip (``SLIPS``), a systematic error on its own slice of about 8% of the
questions, as real teachers are wrong on different questions: the narrator mishandles a subtraction of 9
that goes negative (writes ``9 - x``), the checker multiplies by 8 as if adding 8, the restater adds 5
where it should add 6. The teachers' vote, DCRS and several teachers have something to fix.

What the tiny compression teacher is trained to produce for "rewrite concisely" depends on the student
(``rewrite_for_student``): a step the student's own attempt got right becomes canonical (``2*3=6``); a step
it got wrong keeps its raw value (``7+5=12=2``), so the student sees the arithmetic it missed.

The answer format and its extraction (``extract_answer``) serve real teachers as well.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from twt.core.records import Question
from twt.core.schema import TaskConfig, schema_default

OPS = "+-*"
CANONICAL = "standard"
VERBOSE_STYLES = ("narrator", "checker", "restater")
STYLES = (CANONICAL, *VERBOSE_STYLES)
# Each verbose style's systematic error (``operate`` applies it), in words.
WEIGHTS = tuple(schema_default(TaskConfig, "weights"))  # share of chains of 1, 2, ... operations
SLIPS = {
    "narrator": "x-9 with x<9 written 9-x",
    "checker": "x*8 computed as x+8",
    "restater": "x+6 computed as x+5",
}


@dataclass(frozen=True)
class Step:
    left: int
    op: str
    right: int
    raw: int
    value: int


def parse_question(question: str) -> tuple[list[int], list[str]]:
    """Split ``7+5*3`` into operands ``[7, 5, 3]`` and operators ``['+', '*']``."""
    text = question.strip()
    if not re.fullmatch(r"\d([+\-*]\d)+", text):
        raise ValueError(f"not an operation chain: {question!r}")
    return [int(c) for c in text[0::2]], list(text[1::2])


def operate(left: int, op: str, right: int, slip: str | None = None) -> int:
    """One operation's raw value; ``slip`` (a style) applies that style's systematic error."""
    if slip == "narrator" and op == "-" and right == 9 and left < 9:
        return 9 - left
    if slip == "checker" and op == "*" and right == 8:
        return left + 8
    if slip == "restater" and op == "+" and right == 6:
        return left + 5
    return left + right if op == "+" else left - right if op == "-" else left * right


def solve_steps(question: str, modulus: int = 10, slip: str | None = None) -> list[Step]:
    """Evaluate the chain left to right, one ``Step`` per operation (with a style's ``slip``: its errors,
    which propagate)."""
    numbers, ops = parse_question(question)
    steps, acc = [], numbers[0]
    for op, right in zip(ops, numbers[1:], strict=True):
        raw = operate(acc, op, right, slip)
        steps.append(Step(acc, op, right, raw, raw % modulus))
        acc = raw % modulus
    return steps


def answer_of(question: str, modulus: int = 10, slip: str | None = None) -> str:
    return str(solve_steps(question, modulus, slip)[-1].value)


def in_slip_slice(question: str, style: str, modulus: int = 10) -> bool:
    """Whether ``style``'s slip changes the answer of ``question`` (its error slice)."""
    return answer_of(question, modulus, style) != answer_of(question, modulus)


@functools.cache
def shortcut_floor(n_ops: int, modulus: int = 10) -> float:
    """The accuracy of the best guess that sees only the last two operations (operator and operand), not the
    first number nor anything before them: what a reasoning-free student reaches without computing the
    chain. Exact: the accumulator's distribution before those operations (every first number and earlier
    operation equally likely), then the most likely answer for each pair of last operations."""
    seen = min(2, n_ops)
    before = [1] * modulus  # chains reaching each accumulator value, before the seen operations
    for _ in range(n_ops - seen):
        after = [0] * modulus
        for acc, ways in enumerate(before):
            for op, d in itertools.product(OPS, range(modulus)):
                after[operate(acc, op, d) % modulus] += ways
        before = after
    best = total = 0
    for tail in itertools.product(OPS, range(modulus), repeat=seen):
        answers: Counter = Counter()
        for acc, ways in enumerate(before):
            for op, d in zip(tail[0::2], tail[1::2], strict=True):
                acc = operate(acc, op, d) % modulus
            answers[acc] += ways
        best, total = best + max(answers.values()), total + sum(answers.values())
    return best / total


# --- the styles --------------------------------------------------------------------------------------------

_WORD = {"+": "plus", "-": "minus", "*": "times"}
# Pools of synonyms: a teacher draws one phrase per slot and sample. Index 0 is the default phrasing.
PHRASES: dict[str, tuple[str, ...]] = {
    "start": ("Start with {a}.", "Begin with {a}.", "First take {a}.", "We start from {a}."),
    "+": ("Add {b}", "Plus {b}", "Adding {b}"),
    "-": ("Subtract {b}", "Take away {b}", "Minus {b}"),
    "*": ("Multiply by {b}", "Times {b}", "Multiplying by {b}"),
    "get": (" to get {raw}", " gives {raw}", " makes {raw}"),
    "mod": (", which is {v} mod 10", ", that is {v} mod 10", ", so keep {v}"),
    "end": ("So the result is {v}.", "That leaves {v}.", "We end at {v}."),
    "is": ("{a}{op}{b} is {raw}", "{a}{op}{b} equals {raw}", "{a}{op}{b} comes to {raw}"),
    "check": ("Check: correct.", "Checked, that holds.", "Verified.", "Check: right."),
    "done": ("All steps check out.", "Every step is verified.", "Nothing to fix."),
    "need": ("We need {chain}, left to right, mod 10.", "The question asks for {chain}, in order, mod 10."),
    "step": (
        "Step {i}: {a} {word} {b} makes {v}.",
        "Step {i}: {a} {word} {b} gives {v}.",
        "Step {i}: {a} {word} {b} is {v}.",
    ),
}


def _pick(rng: random.Random | None, slot: str, **values: object) -> str:
    pool = PHRASES[slot]
    return (pool[0] if rng is None else rng.choice(pool)).format(**values)


def canonical_step(step: Step, keep_raw: bool = False) -> str:
    """One step in canonical form, ``7+5=2``; ``keep_raw`` writes a wrapped raw value too, ``7+5=12=2``."""
    raw = f"={step.raw}" if keep_raw and step.raw != step.value else ""
    return f"{step.left}{step.op}{step.right}{raw}={step.value}"


def write_steps(steps: list[Step], style: str = CANONICAL, rng: random.Random | None = None) -> str:
    """Steps (right or not) written in ``style``, phrasing drawn by ``rng`` (None: the first phrases)."""
    if style == CANONICAL:
        return ";".join(canonical_step(s) for s in steps)
    parts: list[str] = []
    if style == "narrator":
        parts.append(_pick(rng, "start", a=steps[0].left))
        for s in steps:
            mod = _pick(rng, "mod", v=s.value) if s.raw != s.value else ""
            parts.append(_pick(rng, s.op, b=s.right) + _pick(rng, "get", raw=s.raw) + mod + ".")
        parts.append(_pick(rng, "end", v=steps[-1].value))
    elif style == "checker":
        for s in steps:
            line = _pick(rng, "is", a=s.left, op=s.op, b=s.right, raw=s.raw)
            line += f", mod 10 is {s.value}." if s.raw != s.value else "."
            parts.append(line + " " + _pick(rng, "check", a=s.left, op=s.op, b=s.right, v=s.value))
        parts.append(_pick(rng, "done"))
    elif style == "restater":
        chain = " ".join([str(steps[0].left)] + [f"{_WORD[s.op]} {s.right}" for s in steps])
        parts.append(_pick(rng, "need", chain=chain))
        for i, s in enumerate(steps, 1):
            parts.append(_pick(rng, "step", i=i, a=s.left, word=_WORD[s.op], b=s.right, v=s.value))
    else:
        raise ValueError(f"unknown reasoning style {style!r}; expected one of {STYLES}")
    return " ".join(parts)


def reasoning_of(
    question: str,
    style: str = CANONICAL,
    modulus: int = 10,
    rng: random.Random | None = None,
    slip: bool = False,
) -> str:
    """The reasoning text for a question in one of ``STYLES``.

    ``rng`` draws the phrasing from the synonym pools (None: the first phrase of each pool); ``slip`` makes
    a verbose style commit its systematic error (``SLIPS``).
    """
    if style not in STYLES:
        raise ValueError(f"unknown reasoning style {style!r}; expected one of {STYLES}")
    return write_steps(solve_steps(question, modulus, style if slip else None), style, rng)


# Step values as each style writes them: the value after "mod 10" when there is one, else the raw value.
_STEP_PATTERNS = (
    re.compile(r"(\d)[+\-*](\d)=(-?\d+)(?:=(\d))?"),  # canonical, and the raw-kept form 7+5=12=2
    re.compile(
        r"(?:\bto get|\bgives|\bmakes|\bequals|\bcomes to|\d is) (-?\d+)"
        r"(?:(?:, which is|, that is|, mod 10 is) (\d)|, so keep (\d))?"
    ),
)


def _before_answer(attempt: str) -> str:
    """A completion's text before its first ``Answer:`` line."""
    return re.split(r"^\s*Answer:", attempt, maxsplit=1, flags=re.IGNORECASE | re.MULTILINE)[0]


def attempt_values(attempt: str) -> list[int]:
    """The step results a student's attempt wrote, in order (any style), before its ``Answer:`` line."""
    reasoning = _before_answer(attempt)
    canonical = _STEP_PATTERNS[0].findall(reasoning)
    if canonical:
        return [int(kept or raw) % 10 for _, _, raw, kept in canonical]
    return [int(mod or keep or raw) % 10 for raw, mod, keep in _STEP_PATTERNS[1].findall(reasoning)]


def attempt_steps(attempt: str) -> list[str]:
    """A canonical attempt's steps: the text before its first ``Answer:`` line, split on ``;``."""
    return [part.strip() for part in _before_answer(attempt).strip().split(";") if part.strip()]


def rewrite_for_student(question: str, attempt: str, modulus: int = 10) -> str:
    """The concise reasoning fitted to one student's attempt (what the tiny compression teacher learns).

    Every step canonical (``2*3=6``: operands with the result), except a step whose result the attempt got
    wrong (or never wrote): that one keeps its raw value before the result (``7+5=12=2``), so the student
    sees the arithmetic it missed. With no attempt at all, every step is canonical.
    """
    steps = solve_steps(question, modulus)
    wrote = attempt_values(attempt) if attempt.strip() else [s.value for s in steps]
    right = [i < len(wrote) and wrote[i] == s.value for i, s in enumerate(steps)]
    return ";".join(canonical_step(s, keep_raw=not ok) for s, ok in zip(steps, right, strict=True))


def random_question(rng: random.Random, weights: Sequence[float] = WEIGHTS, n_ops: int | None = None) -> str:
    """A chain whose length is drawn by ``weights`` (chains of 1, 2, ... operations), or of exactly
    ``n_ops``."""
    if n_ops is None:
        n_ops = rng.choices(range(1, len(weights) + 1), weights=weights)[0]
    text = str(rng.randrange(10))
    for _ in range(n_ops):
        text += rng.choice(OPS) + str(rng.randrange(10))
    return text


def chains_of_length(n_ops: int) -> int:
    """How many distinct chains of ``n_ops`` operations exist (10 digits, 3 operators)."""
    return 10 * 30**n_ops


def strata(n: int, weights: Sequence[float] = WEIGHTS) -> dict[int, int]:
    """Items per chain length for a stratified draw of ``n``: the weights' shares, rounded by largest
    remainder so that they add up to ``n``."""
    total = sum(weights)
    exact = [n * w / total for w in weights]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1
    return {k: c for k, c in enumerate(counts, 1) if c}


def stratum_error(n: int, weights: Sequence[float] = WEIGHTS, held: int = 0) -> str | None:
    """Why a stratified draw of ``n`` cannot fill its strata (None when it can); ``held`` chains of each
    length are reserved for another split."""
    positive = sum(1 for w in weights if w > 0)
    if n < positive:
        return f"{n} items cannot fill {positive} strata (one per chain length with a positive weight)"
    for k, count in strata(n, weights).items():
        if count > chains_of_length(k) - held:
            return f"{count} chains of {k} operation(s) asked, but only {chains_of_length(k)} exist"
    return None


def make_questions(
    n: int,
    seed: int,
    split: str = "train",
    weights: Sequence[float] = WEIGHTS,
    exclude: set[str] | frozenset[str] = frozenset(),
    stratified: bool = False,
) -> list[Question]:
    """``n`` distinct questions with gold answers, reproducible from ``seed``.

    ``exclude`` keeps splits apart (e.g. training questions never in the held-out set). ``stratified``
    draws exactly ``strata(n, weights)`` chains of each length (each length from its own random stream, so a
    smaller ``n`` draws a subset of a larger one's chains), shortest chains first.
    """
    if stratified:
        problem = stratum_error(n, weights)
        if problem:
            raise ValueError(f"cannot draw a stratified {split!r} set: {problem}")
        drawn: list[str] = []
        for k, count in strata(n, weights).items():
            rng, seen, mine = random.Random(f"{split}:{seed}:{k}"), set(exclude), []
            while len(mine) < count:
                q = random_question(rng, weights, n_ops=k)
                if q not in seen:
                    seen.add(q)
                    mine.append(q)
            drawn += mine
    else:
        rng = random.Random(f"{split}:{seed}")
        seen, drawn = set(exclude), []
        attempts = 0
        while len(drawn) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise ValueError(f"cannot draw {n} distinct questions for split {split!r}")
            q = random_question(rng, weights)
            if q in seen:
                continue
            seen.add(q)
            drawn.append(q)
    return [Question(id=f"{split}-{i:06d}", question=q, answer=answer_of(q)) for i, q in enumerate(drawn)]


# --- the three instructions --------------------------------------------------------------------------------
