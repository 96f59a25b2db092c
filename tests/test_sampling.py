"""Sampling as a resumable job: shards, resume after a crash, kept failures, confidence, merge."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fake_openai_server import TOKEN_LOGPROB, FakeOpenAIServer
from helpers import build_tiny_llama

from twt.core.records import Candidate, Question, read_rows, write_rows
from twt.core.schema import TeacherConfig
from twt.embedded.task import make_questions
from twt.method.sampling import (
    DONE_FILE,
    SamplingError,
    answer_questions,
    merge_candidates,
    parse_confidence,
    sample_teacher,
    shard_path,
)
from twt.method.teachers import load_teacher
from twt.method.teachers.interface import Generation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Crash(RuntimeError):
    pass


class CountingBackend:
    """Delegates to a real backend, counts calls, crashes on call number ``crash_at`` (a simulated kill)."""

    def __init__(self, inner, crash_at: int | None = None):
        self.inner, self.crash_at, self.calls = inner, crash_at, 0

    def generate(self, prompts: list[str], **kwargs) -> list[list[Generation]]:
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash("killed while sampling")
        return self.inner.generate(prompts, **kwargs)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> TeacherConfig:
    model = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    return TeacherConfig(
        name="tiny", model=str(model), k=2, max_new_tokens=6, temperature=1.0, batch_size=4, seed=3
    )


@pytest.fixture(scope="module")
def tiny_teacher(tiny_config: TeacherConfig):
    return load_teacher(tiny_config)


@pytest.fixture
def questions_path(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    write_rows(path, make_questions(11, seed=0))
    return path


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_after_a_crash_gives_identical_candidates(
    tiny_config, tiny_teacher, questions_path, tmp_path
) -> None:
    whole = sample_teacher(
        tiny_config, questions_path, tmp_path / "whole", shard_size=4, progress=False, backend=tiny_teacher
    )
    crashing = CountingBackend(tiny_teacher, crash_at=3)
    with pytest.raises(Crash):
        sample_teacher(
            tiny_config, questions_path, tmp_path / "resumed", shard_size=4, progress=False, backend=crashing
        )
    resumed_dir = tmp_path / "resumed" / "tiny"
    assert shard_path(resumed_dir, 1).exists() and not shard_path(resumed_dir, 2).exists()
    assert not (resumed_dir / DONE_FILE).exists()

    rerun = CountingBackend(tiny_teacher)
    sample_teacher(
        tiny_config, questions_path, tmp_path / "resumed", shard_size=4, progress=False, backend=rerun
    )
    assert rerun.calls == 1  # only the missing shard was sampled
    assert tree_bytes(resumed_dir) == tree_bytes(whole)
    rows = list(read_rows(shard_path(whole, 0), Candidate))
    assert [(r.id, r.sample) for r in rows] == [(f"train-{i:06d}", j) for i in range(4) for j in range(2)]
    assert len({r.reasoning for r in rows}) > 1


def test_generations_without_answer_are_kept_with_their_error(
    tiny_config, tiny_teacher, questions_path, tmp_path
) -> None:
    # the word-level tiny model writes "Answer : 2" at best, never an "Answer:" line
    teacher_dir = sample_teacher(
        tiny_config, questions_path, tmp_path, shard_size=8, progress=False, backend=tiny_teacher
    )
    merged = list(read_rows(merge_candidates(tmp_path, "tiny"), Candidate))
    assert len(merged) == 22 and all(
        row.answer is None and "no 'Answer:' line" in row.error for row in merged
    )
    for row in merged:
        assert 0 < row.confidence < 1 and 1 <= row.tokens <= 6
        if row.finish_reason == "length":
            assert "max_new_tokens" in row.error
    done = (teacher_dir / DONE_FILE).read_text()
    assert '"without_answer": 22' in done and '"candidates": 22' in done


def test_finished_run_does_not_touch_the_backend(tiny_config, tiny_teacher, questions_path, tmp_path) -> None:
    sample_teacher(tiny_config, questions_path, tmp_path, shard_size=6, progress=False, backend=tiny_teacher)
    untouched = CountingBackend(tiny_teacher, crash_at=1)
    sample_teacher(tiny_config, questions_path, tmp_path, shard_size=6, progress=False, backend=untouched)
    assert untouched.calls == 0


def test_a_corrupted_shard_is_sampled_again(tiny_config, tiny_teacher, questions_path, tmp_path) -> None:
    teacher_dir = sample_teacher(
        tiny_config, questions_path, tmp_path / "a", shard_size=6, progress=False, backend=tiny_teacher
    )
    expected = tree_bytes(teacher_dir)
    (teacher_dir / DONE_FILE).unlink()
    shard = shard_path(teacher_dir, 1)
    shard.write_bytes(shard.read_bytes()[:40])  # a truncated file
    counting = CountingBackend(tiny_teacher)
    sample_teacher(
        tiny_config, questions_path, tmp_path / "a", shard_size=6, progress=False, backend=counting
    )
    assert counting.calls == 1 and tree_bytes(teacher_dir) == expected


def test_a_different_run_in_the_same_directory_is_refused(
    tiny_config, tiny_teacher, questions_path, tmp_path
) -> None:
    sample_teacher(tiny_config, questions_path, tmp_path, shard_size=6, progress=False, backend=tiny_teacher)
    with pytest.raises(SamplingError, match=r"PLAN\.json.*changed: \['shard_size'\]"):
        sample_teacher(
            tiny_config, questions_path, tmp_path, shard_size=5, progress=False, backend=tiny_teacher
        )


def test_duplicate_question_ids_are_an_error(tiny_config, tmp_path) -> None:
    path = tmp_path / "q.jsonl"
    write_rows(path, [Question(id="a", question="1+1"), Question(id="a", question="2+2")])
    with pytest.raises(SamplingError, match=r"q\.jsonl: question 2: duplicate id 'a'"):
        sample_teacher(tiny_config, path, tmp_path / "out", progress=False)


def test_merge_before_done_is_an_error(tmp_path) -> None:
    with pytest.raises(SamplingError, match="has not finished"):
        merge_candidates(tmp_path, "nobody")


def reply(prompt: str, index: int) -> str:
    """Sample 0 answers and reports a confidence; sample 1 rambles without an answer."""
    return "2;6\nConfidence: 80%\nAnswer: 6" if index == 0 else "hmm"


def test_confidence_self_reported_or_from_logprobs(questions_path, tmp_path) -> None:
    with FakeOpenAIServer(reply=reply) as server:
        base = {"model": "m", "backend": "openai", "base_url": server.base_url, "k": 2}
        asks = TeacherConfig(name="asks", prompts={"solve": "{question}\nConfidence?\n"}, **base)
        plain = TeacherConfig(name="plain", **base)
        for teacher in (asks, plain):
            sample_teacher(teacher, questions_path, tmp_path, shard_size=5, progress=False)
    asked = list(read_rows(merge_candidates(tmp_path, "asks"), Candidate))
    assert [(r.sample, r.answer, r.confidence) for r in asked[:2]] == [
        (0, "6", 0.8),
        (1, None, pytest.approx(math.exp(TOKEN_LOGPROB))),
    ]  # no self-report in sample 1: its sequence probability
    assert asked[0].reasoning == "2;6" and asked[1].error == "no 'Answer:' line in the output"
    rows = list(read_rows(merge_candidates(tmp_path, "plain"), Candidate))
    assert rows[0].confidence == pytest.approx(math.exp(TOKEN_LOGPROB)) and rows[0].tokens == 3
    assert rows[1].answer is None and rows[1].confidence == pytest.approx(math.exp(TOKEN_LOGPROB))


def test_parse_confidence_forms() -> None:
    assert parse_confidence("x\nConfidence: 0.35\n") == 0.35
    assert parse_confidence("confidence = 90") == 0.9
    assert parse_confidence("Confidence: 1.7") == pytest.approx(0.017)
    assert parse_confidence("I am confident") is None


def test_answer_questions_greedy_with_token_counts(tiny_teacher) -> None:
    questions = make_questions(5, seed=1)
    answers = answer_questions(tiny_teacher, questions, instruction="direct", max_new_tokens=4, chunk_size=2)
    again = answer_questions(tiny_teacher, questions, instruction="direct", max_new_tokens=4, chunk_size=5)
    assert [a.id for a in answers] == [q.id for q in questions]
    assert [a.text for a in answers] == [a.text for a in again]
    assert all(1 <= a.tokens <= 4 and a.answer is None and a.error for a in answers)
    with pytest.raises(ValueError, match="instruction"):
        answer_questions(tiny_teacher, questions, instruction="rewrite")
