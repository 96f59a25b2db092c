"""Sampling a teacher as a resumable job: questions in, ``k`` candidate reasoning paths per question out.

    twt sample ...   # or, from Python:
    sample_teacher(teacher, "questions.jsonl", "runs/x/candidates")    # -> runs/x/candidates/<teacher>/
    merge_candidates("runs/x/candidates", teacher.name)               # -> .../<teacher>/candidates.jsonl

Layout of ``<out_dir>/<teacher>/``:
  PLAN.json            what is being sampled (questions digest, shard size, sampling fields); a restart with a
                       different plan is refused rather than mixing two runs
  shard-00000.jsonl    ``twt.core.records.Candidate`` rows of questions [0, shard_size), written atomically
  DONE.json            counts, written last; its presence means every shard is complete

Resuming: a shard is finished when its file exists and holds exactly the expected (id, sample) rows; the job
regenerates only the others. Shard ``s`` is sampled with seed ``stream_seed("twt-shard", teacher.seed, s)``
and the backends key every (question, sample) by that seed and the question's index in the shard, so an
interrupted and resumed run writes the same bytes as an uninterrupted one.

Every generation becomes a candidate, also one with no extractable answer (``answer=None`` and ``error`` says
why). Confidence, in this order:
  1. self-reported: when the solve template mentions "confidence", the last ``Confidence: 0.8`` (or ``80%``)
     line of the completion, clamped to [0, 1] (the line is removed from the reasoning);
  2. otherwise the per-token geometric-mean probability ``exp(logprob / tokens)`` of the completion under the
     teacher's raw distribution (comparable across sequence lengths);
  3. otherwise 0.5 (a backend that gives no log-probs and no self-report: uninformative).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twt.core.prompts import PromptTemplates, extract_answer
from twt.core.records import (
    Candidate,
    Question,
    RecordError,
    read_json,
    read_nonempty,
    read_rows,
    write_json,
    write_rows,
)
from twt.core.schema import TeacherConfig
from twt.method.teachers import BackendOptions, TeacherBackend, load_teacher
from twt.method.teachers.interface import Generation, stream_seed

PLAN_FILE, DONE_FILE, MERGED_FILE = "PLAN.json", "DONE.json", "candidates.jsonl"
NEUTRAL_CONFIDENCE = 0.5
_CONFIDENCE_RE = re.compile(r"^\s*confidence\s*[:=]\s*(\d*\.?\d+)\s*(%?)\s*$", re.IGNORECASE | re.MULTILINE)


class SamplingError(ValueError):
    """Inputs or an output directory that sampling cannot use (names the file)."""


def shard_path(teacher_dir: Path, index: int) -> Path:
    return teacher_dir / f"shard-{index:05d}.jsonl"


def shard_seed(seed: int, index: int) -> int:
    """The seed of shard ``index``: a pure function of (the teacher's seed, shard index)."""
    return stream_seed("twt-shard", seed, index)


def sample_teacher(
    teacher: TeacherConfig,
    questions_path: str | Path,
    out_dir: str | Path,
    *,
    shard_size: int = 256,
    progress: bool = True,
    backend: TeacherBackend | None = None,
    options: BackendOptions | None = None,
) -> Path:
    """Sample ``teacher.k`` candidates per question into shards under ``out_dir/<teacher.name>/``; resumable.

    ``backend`` defaults to ``load_teacher(teacher, options)``, loaded only when some shard still has to be
    sampled. Returns the teacher's directory.
    """
    from tqdm.auto import tqdm

    if shard_size < 1:
        raise SamplingError(f"shard_size must be >= 1, got {shard_size}")
    questions = read_questions(questions_path)
    teacher_dir = Path(out_dir) / teacher.name
    plan = {
        "questions": len(questions),
        "questions_sha256": _digest(questions),
        "shard_size": shard_size,
        "spec": sampling_fingerprint(teacher, options or BackendOptions()),
    }
    _claim(teacher_dir, plan)
    if (teacher_dir / DONE_FILE).exists():
        return teacher_dir
    shards = [questions[start : start + shard_size] for start in range(0, len(questions), shard_size)]
    todo = [
        s
        for s, shard in enumerate(shards)
        if not shard_is_complete(shard_path(teacher_dir, s), shard, teacher)
    ]
    bar = tqdm(
        total=len(questions),
        initial=len(questions) - sum(len(shards[s]) for s in todo),
        desc=f"sample {teacher.name}",
        unit="q",
        disable=not progress,
    )
    with bar:
        for index in todo:
            backend = backend or load_teacher(teacher, options)
            candidates = sample_shard(backend, teacher, shards[index], shard_seed(teacher.seed, index))
            write_rows(shard_path(teacher_dir, index), candidates)
            bar.update(len(shards[index]))
    summary = summarize(teacher_dir, len(shards), plan)
    write_json(teacher_dir / DONE_FILE, summary)
    return teacher_dir


def sampling_fingerprint(teacher: TeacherConfig, options: BackendOptions) -> dict[str, Any]:
    """The settings that decide what gets sampled (PLAN.json's "spec": a resume with others is refused)."""
    out: dict[str, Any] = {
        key: getattr(teacher, key)
        for key in ("name", "model", "backend", "temperature", "top_p", "max_new_tokens", "k", "seed")
    }
    out |= {"stop": list(options.stop), "openai_api": options.openai_api}
    out["solve_template"] = teacher.templates().solve
    return out


def read_questions(path: str | Path) -> list[Question]:
    questions = read_nonempty(path, Question, "questions")
    seen: set[str] = set()
    for number, question in enumerate(questions, start=1):
        if question.id in seen:
            raise SamplingError(f"{path}: question {number}: duplicate id {question.id!r}")
        seen.add(question.id)
    return questions


def sample_shard(
    backend: TeacherBackend, teacher: TeacherConfig, questions: Sequence[Question], seed: int
) -> list[Candidate]:
    """``teacher.k`` candidates for each question, question-major, sample index ascending."""
    templates = teacher.templates()
    prompts = [templates.render("solve", question=q.question) for q in questions]
    generations = backend.generate(
        prompts,
        n=teacher.k,
        temperature=teacher.temperature,
        seed=seed,
        max_new_tokens=teacher.max_new_tokens,
    )
    if len(generations) != len(questions) or any(len(g) != teacher.k for g in generations):
        raise SamplingError(
            f"teacher {teacher.name!r}: backend returned {[len(g) for g in generations]} "
            f"completions for {len(questions)} prompts, expected {teacher.k} each"
        )
    asks = asks_for_confidence(templates)
    return [
        to_candidate(q, teacher.name, j, gen, asks)
        for q, gens in zip(questions, generations, strict=True)
        for j, gen in enumerate(gens)
    ]


def asks_for_confidence(templates: PromptTemplates) -> bool:
    """Whether the solve prompt asks the teacher to report its confidence."""
    return "confidence" in templates.solve.casefold()


def to_candidate(
    question: Question, teacher: str, sample: int, generation: Generation, self_reported: bool
) -> Candidate:
    reasoning, answer, error = extract_answer(generation.text)
    if error and generation.finish_reason == "length":
        error += " (the generation hit max_new_tokens)"
    confidence = None
    if self_reported:
        confidence = parse_confidence(generation.text)
        reasoning = _CONFIDENCE_RE.sub("", reasoning).strip()
    if confidence is None:
        confidence = sequence_confidence(generation)
    return Candidate(
        id=question.id,
        teacher=teacher,
        sample=sample,
        reasoning=reasoning,
        answer=answer,
        confidence=confidence,
        tokens=generation.tokens,
        finish_reason=generation.finish_reason,
        error=error,
    )


def parse_confidence(text: str) -> float | None:
    """The last ``Confidence: x`` line as a number in [0, 1] (``80%`` and ``80`` read as 0.8)."""
    matches = _CONFIDENCE_RE.findall(text)
    if not matches:
        return None
    number, percent = matches[-1]
    value = float(number)
    if percent or value > 1:
        value /= 100
    return min(max(value, 0.0), 1.0)


def sequence_confidence(generation: Generation) -> float:
    """Per-token geometric-mean probability ``exp(logprob / tokens)``; 0.5 without a log-prob."""
    if generation.logprob is None or generation.tokens <= 0:
        return NEUTRAL_CONFIDENCE
    return min(max(math.exp(generation.logprob / generation.tokens), 0.0), 1.0)


def shard_is_complete(path: Path, questions: Sequence[Question], teacher: TeacherConfig) -> bool:
    """True when ``path`` holds exactly this teacher's (id, sample) rows of ``questions`` × ``teacher.k``."""
    if not path.exists():
        return False
    try:
        rows = [(row.id, row.sample, row.teacher) for row in read_rows(path, Candidate)]
    except RecordError:
        return False
    expected = [(q.id, j, teacher.name) for q in questions for j in range(teacher.k)]
    return rows == expected


def summarize(teacher_dir: Path, shards: int, plan: dict[str, Any]) -> dict[str, Any]:
    """Counts over every shard (DONE.json); deterministic, so reruns write the same bytes."""
    reasons: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    count = with_answer = tokens = 0
    confidence = 0.0
    for index in range(shards):
        for row in read_rows(shard_path(teacher_dir, index), Candidate):
            count += 1
            with_answer += row.answer is not None
            tokens += row.tokens
            confidence += row.confidence
            reasons[row.finish_reason] += 1
            if row.error:
                errors[row.error] += 1
    return {
        "teacher": plan["spec"]["name"],
        "shards": shards,
        "questions": plan["questions"],
        "candidates": count,
        "with_answer": with_answer,
        "without_answer": count - with_answer,
        "errors": dict(sorted(errors.items())),
        "finish_reasons": dict(sorted(reasons.items())),
        "tokens": tokens,
        "mean_tokens": round(tokens / count, 3) if count else 0.0,
        "mean_confidence": round(confidence / count, 6) if count else 0.0,
        "plan": plan,
    }


def merge_candidates(out_dir: str | Path, teacher: str) -> Path:
    """Concatenate a finished teacher's shards, in order, into ``out_dir/<teacher>/candidates.jsonl``."""
    teacher_dir = Path(out_dir) / teacher
    done = teacher_dir / DONE_FILE
    if not done.exists():
        raise SamplingError(f"{done}: missing; sampling of teacher {teacher!r} has not finished")
    shards = read_json(done)["shards"]
    rows = (row for index in range(shards) for row in read_rows(shard_path(teacher_dir, index), Candidate))
    target = teacher_dir / MERGED_FILE
    write_rows(target, rows)
    return target


def _digest(questions: Sequence[Question]) -> str:
    digest = hashlib.sha256()
    for q in questions:
        digest.update(json.dumps([q.id, q.question], ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def _claim(teacher_dir: Path, plan: dict[str, Any]) -> None:
    """Write PLAN.json, or check that an existing one describes the same job."""
    path = teacher_dir / PLAN_FILE
    if path.exists():
        try:
            existing = read_json(path, PLAN_FILE, dict)
        except RecordError as err:
            raise SamplingError(f"{err}; remove the directory to start over") from None
        if existing != json.loads(json.dumps(plan)):
            changed = sorted(k for k in plan if existing.get(k) != json.loads(json.dumps(plan[k])))
            raise SamplingError(
                f"{path}: {teacher_dir} holds a different sampling run (changed: {changed}); "
                f"use another out_dir or remove it"
            )
        return
    write_json(path, plan)


# --- evaluation-style answering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One greedy answer to one question."""

    id: str
    text: str
    reasoning: str
    answer: str | None
    error: str | None
    tokens: int
    finish_reason: str
    logprob: float | None


def answer_questions(
    backend: TeacherBackend,
    questions: Sequence[Question],
    *,
    instruction: str = "direct",
    templates: PromptTemplates | None = None,
    max_new_tokens: int | None = None,
    chunk_size: int = 1024,
    progress: bool = False,
) -> list[Answer]:
    """Greedy answers (temperature 0, one per question) with their token counts, in question order.

    ``instruction`` is "direct" (answer only) or "solve" (reasoning, then the answer).
    """
    from tqdm.auto import tqdm

    if instruction not in ("direct", "solve"):
        raise ValueError(f"instruction must be 'direct' or 'solve', got {instruction!r}")
    templates = templates or PromptTemplates()
    out: list[Answer] = []
    for start in tqdm(
        range(0, len(questions), chunk_size), desc=f"answer ({instruction})", disable=not progress
    ):
        chunk = questions[start : start + chunk_size]
        prompts = [templates.render(instruction, question=q.question) for q in chunk]
        generations = backend.generate(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens)
        for q, (gen,) in zip(chunk, generations, strict=True):
            reasoning, answer, error = extract_answer(gen.text)
            out.append(
                Answer(
                    id=q.id,
                    text=gen.text,
                    reasoning=reasoning,
                    answer=answer,
                    error=error,
                    tokens=gen.tokens,
                    finish_reason=gen.finish_reason,
                    logprob=gen.logprob,
                )
            )
    return out
