"""The three instructions every teacher follows (solve, rewrite, answer directly), the completion format
(reasoning, then Answer: <answer>) and the answer's extraction and normalisation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ANSWER_PREFIX = "Answer:"


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
