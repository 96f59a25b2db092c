"""Stage 2's input: compress each distillation row's reasoning, by token selection or a teacher's rewrite.

    report = run_compress("distill.jsonl", "compressed.jsonl", "compress_report.json",
                          method="cts", ratio=0.5, reference_model="runs/stage1")

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
from typing import Any

import numpy as np

from twt.config import CompressionConfig, schema_default
from twt.embedded_task import ANSWER_PREFIX, PromptTemplates, completion, extract_answer, normalize_answer
from twt.records import Candidate, DistillRow, read_nonempty, read_rows, write_json, write_rows

METHODS = ("teacher", "cts", "unconditional", "truncate")
TOKEN_METHODS = METHODS[1:]  # the methods that keep a share of the reasoning's tokens
CONDITIONS = ("question_answer", "question")
ON_REJECT = ("keep_original", "drop")
SELECTIONS = ("exact", "windowed")
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


def kept_count(n: int, ratio: float) -> int:
    """How many of ``n`` tokens to keep: round-half-to-even(α·n), at least 1 when n > 0, at most n."""
    if n <= 0:
        return 0
    return min(n, max(1, round(round(ratio * n, 9))))  # round(·, 9) first: 0.7*5 must count as 3.5


def select_windowed(scores: np.ndarray, ratio: float, segment: int) -> np.ndarray:
    """Keep mask like LLMLingua's iterative compression, which the CTS paper's code runs (its
    ``iterative_size``): the reasoning is cut into consecutive segments of ``segment`` tokens and each keeps
    its own top ``ratio`` (``select_top_ratio`` per segment): the share holds locally, not just per row."""
    if segment < 1:
        raise ValueError(f"segment must be >= 1, got {segment}")
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.zeros(len(scores), dtype=bool)
    for start in range(0, len(scores), segment):
        keep[start : start + segment] = select_top_ratio(scores[start : start + segment], ratio)
    return keep


def context_length(model) -> int | None:
    """The longest sequence a causal LM takes (``max_position_embeddings`` or ``n_positions``), if known."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def select_top_ratio(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Boolean keep mask over ``scores`` (original order): the ``kept_count`` highest, ties to the earlier
    position; NaN scores rank last."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    keep = np.zeros(len(scores), dtype=bool)
    order = np.argsort(-scores, kind="stable")  # stable: equal scores stay in position order
    keep[order[: kept_count(len(scores), ratio)]] = True
    return keep


# --- scoring ------------------------------------------------------------------------------------------------


def condition_text(row: DistillRow, condition: str, templates: PromptTemplates | None = None) -> str:
    """The text before the reasoning: the solve prompt, plus ``Answer: <answer>`` for question_answer."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    text = (templates or PromptTemplates()).render("solve", question=row.question)
    return text + f"{ANSWER_PREFIX} {row.answer}\n" if condition == "question_answer" else text


def window_plan(n_condition: int, n_tokens: int, window: int) -> tuple[int, list[tuple[int, int, int]]]:
    """``(c, [(context_start, score_start, end), ...])``: keep the last ``c`` condition tokens; each window
    feeds ``start + condition[-c:] + x[context_start:end]`` and scores ``x[score_start:end]``."""
    if window < 8:
        raise ValueError(f"window must be >= 8, got {window}")
    if 1 + n_condition + n_tokens <= window:
        return n_condition, [(0, 0, n_tokens)]
    c = min(n_condition, window // 2 - 1)
    span = window - 1 - c  # reasoning tokens per window (R)
    stride = max(1, span // 2)  # new tokens per later window (S)
    end = min(n_tokens, span)
    plan = [(0, 0, end)]
    while end < n_tokens:
        start, end = end, min(n_tokens, end + stride)
        plan.append((max(0, end - span), start, end))
    return c, plan


@dataclass(frozen=True)
class _Sequence:
    ids: list[int]
    row: int
    conditioned: bool
    first: int  # index in ids of the first scored token
    start: int  # reasoning position of that token


def _start_token(tokenizer) -> int:
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    raise ValueError("the reference tokenizer has neither a BOS nor an EOS token to start a sequence with")


def _model_device(model):
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def score_token_ids(
    model,
    tokenizer,
    condition_ids: Sequence[list[int]] | None,
    reasoning_ids: Sequence[list[int]],
    *,
    window: int = schema_default(CompressionConfig, "window"),
    batch_size: int = 32,
    device=None,
    progress: bool = False,
) -> list[np.ndarray]:
    """``token_scores`` on token ids (see there)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if condition_ids is not None and len(condition_ids) != len(reasoning_ids):
        raise ValueError(f"{len(condition_ids)} conditions for {len(reasoning_ids)} reasonings")
    device = torch.device(device) if device is not None else _model_device(model)
    begin = _start_token(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else begin
    sequences: list[_Sequence] = []
    for row, ids in enumerate(reasoning_ids):
        if not ids:
            continue
        cond = list(condition_ids[row]) if condition_ids is not None else []
        c, plan = window_plan(len(cond), len(ids), window)
        cond = cond[len(cond) - c :]
        for context, start, end in plan:
            piece = list(ids[context:end])
            sequences.append(_Sequence([begin, *piece], row, False, 1 + start - context, start))
            if condition_ids is not None:
                sequences.append(_Sequence([begin, *cond, *piece], row, True, 1 + c + start - context, start))
    nll = {
        (row, flag): np.zeros(len(ids), dtype=np.float64)
        for row, ids in enumerate(reasoning_ids)
        for flag in ((False, True) if condition_ids is not None else (False,))
    }
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))  # similar lengths batch up
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.inference_mode():
        for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
            width = max(len(sequences[i].ids) for i in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, i in enumerate(batch):  # right padding: real tokens never attend to pads
                input_ids[b, : len(sequences[i].ids)] = torch.tensor(sequences[i].ids)
                mask[b, : len(sequences[i].ids)] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            # logits at position t predict token t + 1; one row at a time keeps the float32 copy small,
            # and one transfer per batch avoids a device sync per row
            pieces = [
                F.cross_entropy(
                    logits[b, sequences[i].first - 1 : len(sequences[i].ids) - 1].float(),
                    input_ids[b, sequences[i].first : len(sequences[i].ids)],
                    reduction="none",
                )
                for b, i in enumerate(batch)
            ]
            flat = torch.cat(pieces).cpu().numpy()
            offset = 0
            for i, piece in zip(batch, pieces, strict=True):
                seq, count = sequences[i], len(piece)
                nll[(seq.row, seq.conditioned)][seq.start : seq.start + count] = flat[offset : offset + count]
                offset += count
    if condition_ids is None:
        return [nll[(row, False)] for row in range(len(reasoning_ids))]
    return [nll[(row, False)] - nll[(row, True)] for row in range(len(reasoning_ids))]


def token_scores(
    model,
    tokenizer,
    conditions: Sequence[str] | None,
    reasonings: Sequence[str],
    *,
    window: int = schema_default(CompressionConfig, "window"),
    batch_size: int = 32,
    device=None,
    progress: bool = False,
) -> list[np.ndarray]:
    """One score per reasoning token (tokenized without special tokens), per row.

    With ``conditions`` the CTS score ``NLL(x_i | s, x_<i) − NLL(x_i | s, condition, x_<i)``; with None the
    unconditional ``NLL(x_i | s, x_<i)``. ``model(input_ids=, attention_mask=).logits`` is all that is used
    of the model; inputs go to ``device`` (default: the model's device).
    """
    reasoning_ids = tokenizer(list(reasonings), add_special_tokens=False)["input_ids"] if reasonings else []
    condition_ids = None
    if conditions is not None:
        condition_ids = (
            tokenizer(list(conditions), add_special_tokens=False)["input_ids"] if conditions else []
        )
    return score_token_ids(
        model,
        tokenizer,
        condition_ids,
        reasoning_ids,
        window=window,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )


def load_reference(path: str | os.PathLike, device=None, dtype: str = "auto"):
    """``(model, tokenizer)`` of a causal LM directory, in eval mode on ``device`` (default: CUDA when
    available); dtype "auto" = bfloat16 on CUDA, float32 elsewhere."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from twt.models import local_model

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    chosen = dtypes.get(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    path = local_model(str(path))  # s3:// and file:// through twt.store
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=chosen).to(device).eval()
    return model, tokenizer


# --- the three methods --------------------------------------------------------------------------------------


def compress_by_tokens(
    rows: Sequence[DistillRow],
    reference_model: str | os.PathLike | tuple[Any, Any],
    *,
    method: str = "cts",
    ratio: float = schema_default(CompressionConfig, "ratio"),
    condition: str = schema_default(CompressionConfig, "condition"),
    window: int = schema_default(CompressionConfig, "window"),
    batch_size: int = 32,
    device=None,
    dtype: str = "auto",
    templates: PromptTemplates | None = None,
    progress: bool = True,
    selection: str = schema_default(CompressionConfig, "selection"),
    segment: int = schema_default(CompressionConfig, "segment"),
) -> tuple[list[DistillRow], CompressionReport]:
    """CTS, the unconditional baseline or fixed-length truncation over ``rows``; ``reference_model`` is a
    model directory or a ``(model, tokenizer)`` pair (truncation uses only its tokenizer: the first
    ``kept_count`` tokens of each reasoning, TwT's fixed-length baseline). Every row comes back, with
    ``compressed_reasoning`` set. ``selection``:
    "exact" keeps the top α of each row (``select_top_ratio``), "windowed" the top α of each ``segment``
    tokens (``select_windowed``). A scoring ``window`` longer than the reference model's context is
    refused."""
    if method not in TOKEN_METHODS:
        raise ValueError(f"method must be one of {TOKEN_METHODS} here, got {method!r}")
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    started = time.perf_counter()
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
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
    """The stage-1 student's attempts from a candidates JSONL (``twt.records.Candidate``, e.g. written by
    ``twt.sampling`` for the student): per id, the lowest-numbered sample as ``completion(reasoning, answer)``
    (only the reasoning when no answer was extracted)."""
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
    *,
    method: str = schema_default(CompressionConfig, "method"),
    ratio: float = schema_default(CompressionConfig, "ratio"),
    condition: str = schema_default(CompressionConfig, "condition"),
    window: int = schema_default(CompressionConfig, "window"),
    reference_model: str | os.PathLike | tuple[Any, Any] | None = None,
    teacher=None,
    attempts: Mapping[str, str] | str | os.PathLike | None = None,
    templates: PromptTemplates | None = None,
    on_reject: str = "keep_original",
    batch_size: int = 32,
    max_new_tokens: int | None = None,
    device=None,
    progress: bool = True,
    selection: str = schema_default(CompressionConfig, "selection"),
    segment: int = schema_default(CompressionConfig, "segment"),
) -> dict[str, Any]:
    """Compress the rows of ``distill_path`` into ``out_path`` (JSONL) and write the report (JSON).

    cts/unconditional need ``reference_model`` (a directory or a ``(model, tokenizer)`` pair); teacher needs
    ``teacher``: a ``twt.teachers.TeacherSpec`` (loaded here, its templates used unless ``templates`` is
    given) or a loaded backend. ``attempts`` is a mapping id → text or a candidates JSONL (``load_attempts``).
    Returns the report, as written.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rows = read_nonempty(distill_path, DistillRow, "distillation rows")
    if method == "teacher":
        from twt.teachers import TeacherSpec, load_teacher

        if teacher is None or isinstance(teacher, str):
            raise ValueError(
                "method 'teacher' needs teacher= a TeacherSpec or a loaded backend"
                + (f" (got the name {teacher!r}; resolve it from the run config)" if teacher else "")
            )
        if isinstance(teacher, TeacherSpec):
            templates = templates or teacher.templates
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
            method=method,
            ratio=ratio,
            condition=condition,
            window=window,
            batch_size=batch_size,
            device=device,
            templates=templates,
            progress=progress,
            selection=selection,
            segment=segment,
        )
    write_rows(out_path, out)
    result = report.to_dict()
    result["inputs"] = {"distill": str(distill_path)}
    if method != "teacher" and not isinstance(reference_model, tuple):
        result["inputs"]["reference_model"] = str(reference_model)
    result["outputs"] = {"compressed": str(out_path), "rows": len(out)}
    write_json(Path(report_path), result)
    return result
