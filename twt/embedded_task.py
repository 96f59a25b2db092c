"""The embedded reasoning task: mod-10 operation chains, with reasoning in several styles.

A question is a chain of single-digit operations evaluated left to right modulo 10, for example
``7+5*3-4``. The full reasoning writes one step per operation (``7+5=2;2*3=6;6-4=2``) and ends with
``Answer: 2``. A small model cannot carry a long chain in one forward pass, so it fails to answer directly
but succeeds when it writes the steps first; chains of one or two operations stay learnable directly, which
gives the later, reasoning-free stages something to internalise (the difficulty mix is ``TaskSpec.weights``).

Styles of reasoning (what the tiny teachers were trained to write):
  standard  ``7+5=2;2*3=6;6-4=2``
  verbose   ``7+5=12 mod 2;2*3=6 mod 6;6-4=-2 mod 8``-like (every step shows the raw value, then mod 10)
  concise   ``2;6;2`` (the values only; what the tiny teachers' rewrite wrote before it saw the attempt)

What the tiny teachers are trained to produce for "rewrite concisely" depends on the student
(``rewrite_for_student``): the
standard steps, operands always with their results, minus the first step when the student's own attempt
wrote that step right (it does it reliably, so it may do it in its head); a step the student got wrong is
always kept.

The answer format and its extraction (``extract_answer``) serve real teachers as well.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from twt.records import Question

OPS = "+-*"
STYLES = ("standard", "verbose", "concise")
ANSWER_PREFIX = "Answer:"


@dataclass(frozen=True)
class TaskSpec:
    """How questions are drawn.

    Attributes:
        modulus: results are taken modulo this (default 10, so every value is one digit).
        weights: probability of a chain of 1, 2, ... operations (default leans towards 3–4 steps).
    """

    modulus: int = 10
    weights: tuple[float, ...] = (0.15, 0.25, 0.3, 0.3)

    @property
    def max_ops(self) -> int:
        return len(self.weights)


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


def solve_steps(question: str, modulus: int = 10) -> list[Step]:
    """Evaluate the chain left to right, one ``Step`` per operation."""
    numbers, ops = parse_question(question)
    steps, acc = [], numbers[0]
    for op, right in zip(ops, numbers[1:], strict=True):
        raw = acc + right if op == "+" else acc - right if op == "-" else acc * right
        steps.append(Step(acc, op, right, raw, raw % modulus))
        acc = raw % modulus
    return steps


def answer_of(question: str, modulus: int = 10) -> str:
    return str(solve_steps(question, modulus)[-1].value)


def reasoning_of(question: str, style: str = "standard", modulus: int = 10) -> str:
    """The reasoning text for a question in one of ``STYLES``."""
    steps = solve_steps(question, modulus)
    if style == "standard":
        parts = [f"{s.left}{s.op}{s.right}={s.value}" for s in steps]
    elif style == "verbose":
        parts = [f"{s.left}{s.op}{s.right}={s.raw} mod {s.value}" for s in steps]
    elif style == "concise":
        parts = [str(s.value) for s in steps]
    else:
        raise ValueError(f"unknown reasoning style {style!r}; expected one of {STYLES}")
    return ";".join(parts)


def attempt_steps(attempt: str) -> list[str]:
    """A student completion's reasoning steps: the text before its first ``Answer:`` line, split on ``;``."""
    reasoning = re.split(r"^\s*Answer:", attempt, maxsplit=1, flags=re.IGNORECASE | re.MULTILINE)[0]
    return [part.strip() for part in reasoning.strip().split(";") if part.strip()]


def rewrite_for_student(question: str, attempt: str, modulus: int = 10) -> str:
    """The concise reasoning fitted to one student's attempt (what the tiny teachers' rewrite is trained on).

    Every step in standard form (``2*3=6``: operands with the result), except the first one when the attempt
    wrote it exactly right and the chain has more steps. With no attempt, or a wrong first step, every step
    is kept. Two attempts on one question, one right and one wrong at the first step, give different
    rewrites.
    """
    written = reasoning_of(question, "standard", modulus).split(";")
    wrote = attempt_steps(attempt)
    if len(written) > 1 and wrote and wrote[0] == written[0]:
        written = written[1:]
    return ";".join(written)


def random_question(rng: random.Random, spec: TaskSpec = TaskSpec()) -> str:
    n_ops = rng.choices(range(1, spec.max_ops + 1), weights=spec.weights)[0]
    text = str(rng.randrange(10))
    for _ in range(n_ops):
        text += rng.choice(OPS) + str(rng.randrange(10))
    return text


def make_questions(
    n: int,
    seed: int,
    split: str = "train",
    spec: TaskSpec = TaskSpec(),
    exclude: set[str] | frozenset[str] = frozenset(),
) -> list[Question]:
    """``n`` distinct questions with gold answers, reproducible from ``seed``.

    ``exclude`` keeps splits apart (e.g. training questions never in the held-out set).
    """
    rng = random.Random(f"{split}:{seed}")
    seen, out = set(exclude), []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct questions for split {split!r}")
        q = random_question(rng, spec)
        if q in seen:
            continue
        seen.add(q)
        out.append(Question(id=f"{split}-{len(out):06d}", question=q, answer=answer_of(q, spec.modulus)))
    return out


# --- the three instructions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptTemplates:
    """Prompt templates for the three instructions every teacher follows.

    ``solve`` asks for reasoning then the answer, ``rewrite`` asks to rewrite a given reasoning concisely
    (it sees the question, the reasoning, the answer and the student's own attempt), ``direct`` asks for the
    answer alone. Completions end with ``Answer: <answer>``. Placeholders: {question}, {reasoning},
    {answer}, {attempt}.
    """

    solve: str = "Solve step by step: {question}\n"
    rewrite: str = (
        "Rewrite concisely: {question}\nReasoning: {reasoning}\nAnswer: {answer}\n"
        "Student: {attempt}\nConcise:\n"
    )
    direct: str = "Answer directly: {question}\n"
    fields: tuple[str, ...] = field(default=("solve", "rewrite", "direct"), repr=False)

    def render(self, instruction: str, **values: str) -> str:
        if instruction not in self.fields:
            raise ValueError(f"unknown instruction {instruction!r}; expected one of {self.fields}")
        return getattr(self, instruction).format(**{"reasoning": "", "answer": "", "attempt": "", **values})


def completion(reasoning: str | None, answer: str) -> str:
    """The target text: the reasoning on its own line (when any), then ``Answer: <answer>``."""
    return f"{reasoning}\n{ANSWER_PREFIX} {answer}" if reasoning else f"{ANSWER_PREFIX} {answer}"


_ANSWER_RE = re.compile(r"Answer:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_answer(answer: str) -> str:
    """Canonical form for comparing answers.

    Trimmed and case-folded; numbers lose thousands separators and trailing zeros.
    """
    text = answer.strip().strip(".").strip()
    text = re.sub(r"^\\boxed\{(.*)\}$", r"\1", text)
    plain = text.replace(",", "")
    if re.fullmatch(r"-?\d+(?:\.\d+)?", plain):
        if "." in plain:
            plain = plain.rstrip("0").rstrip(".")
        return str(int(plain)) if re.fullmatch(r"-?\d+", plain) else plain
    return " ".join(text.casefold().split())


def extract_answer(text: str) -> tuple[str, str | None, str | None]:
    """Split a completion into ``(reasoning, answer, error)``.

    The answer is the last ``Answer: ...`` line, normalised; the reasoning is everything before it. With
    no such line the answer is None and ``error`` says why (the candidate is kept, not dropped).
    """
    matches = list(_ANSWER_RE.finditer(text))
    if not matches:
        return text.strip(), None, "no 'Answer:' line in the output"
    last = matches[-1]
    answer = normalize_answer(last.group(1))
    if not answer:
        return text[: last.start()].strip(), None, "empty answer after 'Answer:'"
    return text[: last.start()].strip(), answer, None
