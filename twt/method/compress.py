"""Stage 2's input: compress each distillation row's reasoning, by token selection or a teacher's rewrite.

    report = run_compress("distill.jsonl", "compressed.jsonl", "compress_report.json",
                          CompressionConfig(method="cts", ratio=0.5), reference_model="runs/stage1")

Every output row is an input row with ``compressed_reasoning`` set. Three methods (``METHODS``):

**cts** — conditional token selection (arXiv 2505.17827). A reference causal LM scores each reasoning token
``x_i`` by how much more predictable the condition makes it:

    score_i = NLL(x_i | s, x_<i) − NLL(x_i | s, condition, x_<i)

where ``s`` is one start token (the tokenizer's BOS, else its EOS), so the first reasoning token is scored
too and the two passes differ by the condition only. The condition text precedes the reasoning:

    question_answer   templates.render("solve", question=q) + "Answer: {answer}\\n"
    question          templates.render("solve", question=q)

e.g. ``"Solve step by step: 7+5*3\\nAnswer: 2\\n"`` followed by the reasoning ``"7+5=2;2*3=6"``. The
condition and the reasoning are tokenized apart, without special tokens, and concatenated as ids; the
compressed text is ``tokenizer.decode`` of the kept reasoning ids (stripped).

**unconditional** — the TokenSkip / Selective Context baseline: ``score_i = NLL(x_i | s, x_<i)``, the token's
self-information (surprising tokens are kept). One forward pass per window instead of two.

Both keep (``selection="exact"``, the default) the top ``ratio`` (α) of a row's ``n`` tokens in their
original order, or (``"windowed"``, as the CTS paper's code does through LLMLingua's ``iterative_size``) the
top α of each consecutive segment of ``segment`` tokens. Exact: ``kept_count(n, α)`` =
``round(α·n)`` with Python's round-half-to-even (so at α = 0.5 odd lengths round up and down in turn and the
errors cancel over a set instead of all going up), at least 1 when n > 0; ties go to the earlier token.

Windowing (``window_plan``). A window is one sequence of at most ``window`` tokens. When
``1 + len(condition) + n ≤ window`` the row is one window. Otherwise the condition keeps its last
``min(len(condition), window // 2 − 1)`` tokens (the end carries the answer), ``R = window − 1 − c`` reasoning
tokens fit beside it and the reasoning is scored in chunks of ``S = max(1, R // 2)`` new tokens: the first
window scores tokens ``[0, R)``; every later one scores ``[e − S, e)`` (the last one fewer) and sees the
condition plus the ``R − S`` reasoning tokens before the chunk, i.e. exactly R reasoning tokens. The
unconditional pass of CTS uses the same reasoning slices (without the condition) so the two NLLs differ by
the condition alone. Sequences are right-padded with an attention mask (so positions need no care), sorted
by length and run ``batch_size`` at a time; results do not depend on the batch size (up to float noise).

**teacher** — a teacher backend rewrites each reasoning concisely (greedy), prompted with
``templates.render("rewrite", question, reasoning, answer, attempt)`` where ``attempt`` is the stage-1
student's own completion for that question id (``attempts``; missing → ""). A rewrite is rejected, in this
order, when it has no ``Answer:`` line (``no_answer``), its normalised answer differs from the row's
(``answer_changed``), its reasoning is empty (``empty``), or it is not shorter than the original
(``not_shorter``: lengths in ``tokenizer`` tokens when one is given — ``run_compress`` uses the teacher's own
tokenizer when the backend has one — else in characters). A rejected row keeps its original reasoning as
``compressed_reasoning`` (``on_reject="keep_original"``, so no question is lost) or is left out
(``"drop"``); both count it in ``report.rejected``. ``ratio`` is not used: the teacher decides the length.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from twt.core.prompts import PromptTemplates, completion, extract_answer, normalize_answer
from twt.core.records import Candidate, DistillRow, read_nonempty, read_rows, write_json, write_rows
from twt.core.schema import CompressionConfig, TeacherConfig
from twt.method.cts import (
    _model_device,
    condition_text,
    context_length,
    load_reference,
    select_top_ratio,
    select_windowed,
    token_scores,
)

METHODS = get_args(CompressionConfig.model_fields["method"].annotation)  # teacher, cts, unconditional, ...
TOKEN_METHODS = METHODS[1:]  # the methods that keep a share of the reasoning's tokens
ON_REJECT = ("keep_original", "drop")
REJECT_REASONS = ("no_answer", "answer_changed", "empty", "not_shorter")


@dataclass
class CompressionReport:
    """What one compression run did. Lengths count ``unit`` ("tokens" of the reference/teacher tokenizer, or
    "chars") over the rows written: ``length_in`` their original reasoning, ``length_out`` the compressed.

    ``details`` has one dict per input row, in order: ``{"id", "n_tokens", "n_kept"}`` for token selection,
    ``{"id", "length_in", "length_out", "generated_tokens", "status"}`` for the teacher (status "accepted"
    or a rejection reason). ``retokenized_out`` (token methods) re-tokenizes the compressed texts, which can
    differ a little from ``length_out`` where decoded tokens merge anew.
    """

    method: str
    rows_in: int
    rows_out: int
    unit: str
    length_in: int
    length_out: int
    target_ratio: float | None
    accepted: int
    rejected: dict[str, int]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    retokenized_out: int | None = None

    @property
    def achieved_ratio(self) -> float | None:
        return self.length_out / self.length_in if self.length_in else None

    def to_dict(self, details: bool = True) -> dict[str, Any]:
        out = asdict(self)
        out["achieved_ratio"] = None if self.achieved_ratio is None else round(self.achieved_ratio, 6)
        out["seconds"] = round(self.seconds, 4)
        if not details:
            del out["details"]
        return out


# --- selection ----------------------------------------------------------------------------------------------


# --- scoring ------------------------------------------------------------------------------------------------


# --- the three methods --------------------------------------------------------------------------------------


def compress_by_tokens(
    rows: Sequence[DistillRow],
    reference_model: str | os.PathLike | tuple[Any, Any],
    compression: CompressionConfig,
    *,
    batch_size: int = 32,
    device=None,
    dtype: str = "auto",
    templates: PromptTemplates | None = None,
    progress: bool = True,
) -> tuple[list[DistillRow], CompressionReport]:
    """CTS, the unconditional baseline or fixed-length truncation (``compression.method``, one of
    ``TOKEN_METHODS``; 'teacher' is refused) over ``rows``; ``reference_model`` is a model directory or a
    ``(model, tokenizer)`` pair (truncation uses only its tokenizer: the first ``kept_count`` tokens of each
    reasoning, TwT's fixed-length baseline). Every row comes back, with ``compressed_reasoning`` set.
    ``compression.selection``: "exact" keeps the top α of each row (``select_top_ratio``), "windowed" the
    top α of each ``segment`` tokens (``select_windowed``). A scoring ``window`` longer than the reference
    model's context is refused."""
    method, ratio, condition = compression.method, compression.ratio, compression.condition
    window, selection, segment = compression.window, compression.selection, compression.segment
    if method not in TOKEN_METHODS:
        raise ValueError(f"compression.method must be one of {TOKEN_METHODS} here, got {method!r}")
    started = time.perf_counter()
    if isinstance(reference_model, tuple):
        model, tokenizer = reference_model
    else:
        model, tokenizer = load_reference(reference_model, device, dtype)
    context = context_length(model)
    if context is not None and window > context:
        raise ValueError(
            f"window {window} is longer than the reference model's context ({context} tokens): "
            f"set compression.window to at most {context}"
        )
    rows = list(rows)
    reasoning_ids = (
        tokenizer([r.reasoning for r in rows], add_special_tokens=False)["input_ids"] if rows else []
    )
    if method == "truncate":  # position is the score: earlier tokens first
        scores = [-np.arange(len(ids), dtype=float) for ids in reasoning_ids]
    else:
        conditions = [condition_text(r, condition, templates) for r in rows] if method == "cts" else None
        scores = token_scores(
            model,
            tokenizer,
            conditions,
            [r.reasoning for r in rows],
            window=window,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
    out, details = [], []
    for row, ids, row_scores in zip(rows, reasoning_ids, scores, strict=True):
        keep = (
            select_top_ratio(row_scores, ratio)
            if selection == "exact" or method == "truncate"
            else select_windowed(row_scores, ratio, segment)
        )
        kept = [token for token, k in zip(ids, keep, strict=True) if k]
        text = tokenizer.decode(kept).strip() if kept else ""
        out.append(row.model_copy(update={"compressed_reasoning": text}))
        details.append({"id": row.id, "n_tokens": len(ids), "n_kept": len(kept)})
    compressed = [r.compressed_reasoning for r in out]
    retokenized = tokenizer(compressed, add_special_tokens=False)["input_ids"] if compressed else []
    report = CompressionReport(
        method=method,
        rows_in=len(rows),
        rows_out=len(out),
        unit="tokens",
        length_in=sum(d["n_tokens"] for d in details),
        length_out=sum(d["n_kept"] for d in details),
        target_ratio=ratio,
        accepted=len(out),
        rejected={},
        seconds=time.perf_counter() - started,
        settings={
            "condition": condition if method == "cts" else None,
            "window": window,
            "selection": selection,
            "segment": segment if selection == "windowed" else None,
            "batch_size": batch_size,
            "device": str(_model_device(model) if device is None else device),
        },
        details=details,
        retokenized_out=sum(len(ids) for ids in retokenized),
    )
    return out, report


def compress_by_teacher(
    rows: Sequence[DistillRow],
    backend,
    *,
    templates: PromptTemplates | None = None,
    attempts: Mapping[str, str] | None = None,
    on_reject: str = "keep_original",
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    tokenizer=None,
    progress: bool = True,
) -> tuple[list[DistillRow], CompressionReport]:
    """A teacher's greedy concise rewrite of every row, checked (see the module docstring)."""
    from tqdm.auto import tqdm

    if on_reject not in ON_REJECT:
        raise ValueError(f"on_reject must be one of {ON_REJECT}, got {on_reject!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    templates = templates or PromptTemplates()
    attempts = attempts or {}

    def length(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer else len(text)

    rows = list(rows)
    out, details = [], []
    rejected = dict.fromkeys(REJECT_REASONS, 0)
    length_in = length_out = 0
    for first in tqdm(range(0, len(rows), batch_size), desc="rewriting", unit="batch", disable=not progress):
        batch = rows[first : first + batch_size]
        prompts = [
            templates.render(
                "rewrite",
                question=r.question,
                reasoning=r.reasoning,
                answer=r.answer,
                attempt=attempts.get(r.id, ""),
            )
            for r in batch
        ]
        generations = backend.generate(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens)
        for row, samples in zip(batch, generations, strict=True):
            generation = samples[0]
            reasoning, answer, _ = extract_answer(generation.text)
            before, after = length(row.reasoning), length(reasoning)
            if answer is None:
                status = "no_answer"
            elif answer != normalize_answer(row.answer):
                status = "answer_changed"
            elif not reasoning:
                status = "empty"
            elif after >= before:
                status = "not_shorter"
            else:
                status = "accepted"
            details.append(
                {
                    "id": row.id,
                    "length_in": before,
                    "length_out": after,
                    "generated_tokens": generation.tokens,
                    "status": status,
                }
            )
            if status != "accepted":
                rejected[status] += 1
                if on_reject == "drop":
                    continue
                reasoning, after = row.reasoning, before
            out.append(row.model_copy(update={"compressed_reasoning": reasoning}))
            length_in += before
            length_out += after
    report = CompressionReport(
        method="teacher",
        rows_in=len(rows),
        rows_out=len(out),
        unit="tokens" if tokenizer else "chars",
        length_in=length_in,
        length_out=length_out,
        target_ratio=None,
        accepted=len(rows) - sum(rejected.values()),
        rejected=rejected,
        seconds=time.perf_counter() - started,
        settings={"on_reject": on_reject, "batch_size": batch_size, "max_new_tokens": max_new_tokens},
        details=details,
    )
    return out, report


# --- files in, files out ------------------------------------------------------------------------------------


def attempt_with_verdict(attempt: str, expected: str) -> str:
    """The student's attempt followed by whether its answer (``Answer:`` line) matches ``expected``."""
    answer = extract_answer(attempt)[1]
    verdict = "right" if answer is not None and answer == normalize_answer(expected) else "wrong"
    return f"{attempt.strip()}\n(the student's answer is {verdict})"


def load_attempts(path: str | os.PathLike) -> dict[str, str]:
    """The stage-1 student's attempts from a candidates JSONL (``twt.core.records.Candidate``, e.g. written by
    ``twt.method.sampling`` for the student): per id, the lowest-numbered sample as
    ``completion(reasoning, answer)`` (only the reasoning when no answer was extracted)."""
    best: dict[str, Candidate] = {}
    for candidate in read_rows(path, Candidate):
        if candidate.id not in best or candidate.sample < best[candidate.id].sample:
            best[candidate.id] = candidate
    return {
        qid: completion(c.reasoning, c.answer) if c.answer is not None else c.reasoning
        for qid, c in best.items()
    }


def run_compress(
    distill_path: str | os.PathLike,
    out_path: str | os.PathLike,
    report_path: str | os.PathLike,
    compression: CompressionConfig,
    *,
    reference_model: str | os.PathLike | tuple[Any, Any] | None = None,
    teacher=None,
    attempts: Mapping[str, str] | str | os.PathLike | None = None,
    templates: PromptTemplates | None = None,
    on_reject: str = "keep_original",
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    device=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compress the rows of ``distill_path`` into ``out_path`` (JSONL) by ``compression.method`` and write the
    report (JSON).

    cts/unconditional/truncate need ``reference_model`` (a directory or a ``(model, tokenizer)`` pair;
    default: ``compression.reference_model``); teacher needs ``teacher``: a ``twt.core.schema.TeacherConfig``
    (loaded here, its templates used unless ``templates`` is given) or a loaded backend (the section names
    the teacher; the caller resolves the name). ``attempts`` is a mapping id → text or a candidates JSONL
    (``load_attempts``). Returns the report, as written.
    """
    method = compression.method
    if reference_model is None:
        reference_model = compression.reference_model
    rows = read_nonempty(distill_path, DistillRow, "distillation rows")
    if method == "teacher":
        from twt.method.teachers import load_teacher

        if teacher is None or isinstance(teacher, str):
            raise ValueError(
                "method 'teacher' needs teacher= a TeacherConfig or a loaded backend"
                + (f" (got the name {teacher!r}; resolve it from the run config)" if teacher else "")
            )
        if isinstance(teacher, TeacherConfig):
            templates = templates or teacher.templates()
            teacher = load_teacher(teacher)
        if attempts is not None and not isinstance(attempts, Mapping):
            attempts = load_attempts(attempts)
        out, report = compress_by_teacher(
            rows,
            teacher,
            templates=templates,
            attempts=attempts,
            on_reject=on_reject,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            tokenizer=getattr(teacher, "tokenizer", None),
            progress=progress,
        )
    else:
        if reference_model is None:
            raise ValueError(f"method {method!r} needs reference_model= a model directory")
        out, report = compress_by_tokens(
            rows,
            reference_model,
            compression,
            batch_size=batch_size,
            device=device,
            templates=templates,
            progress=progress,
        )
    write_rows(out_path, out)
    result = report.to_dict()
    result["inputs"] = {"distill": str(distill_path)}
    if method != "teacher" and not isinstance(reference_model, tuple):
        result["inputs"]["reference_model"] = str(reference_model)
    result["outputs"] = {"compressed": str(out_path), "rows": len(out)}
    write_json(Path(report_path), result)
    return result
