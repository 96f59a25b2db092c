"""Compression for stage 2: CTS scores checked by hand on a copy model, top-α selection, the achieved ratio,
windowing and batching on a tiny random Llama, the teacher rewrite's checks, and the file round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import save_tiny_llama

from twt.core.prompts import PromptTemplates
from twt.core.records import Candidate, DistillRow, RecordError, read_rows, write_rows
from twt.core.schema import CompressionConfig, TeacherConfig
from twt.embedded.task import STYLES, make_questions, reasoning_of, solve_steps
from twt.method.compress import (
    REJECT_REASONS,
    attempt_with_verdict,
    compress_by_teacher,
    compress_by_tokens,
    load_attempts,
    run_compress,
)
from twt.method.cts import (
    condition_text,
    kept_count,
    select_top_ratio,
    select_windowed,
    token_scores,
    window_plan,
)
from twt.method.teachers.interface import Generation

WINDOW = CompressionConfig().window  # the scoring window compress_by_tokens uses by default
WORDS = ["Solve", "step", "by", ":", "Answer", "mod", "a", "b", "c", "d", "x", "+", "-", "*", "=", ";"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_tokenizer():
    """Word-level: the words above and single digits (numbers split digit by digit), <eos> but no BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<unk>", "<pad>", "<eos>", *map(str, range(10)), *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama (hidden 32, 2 layers) with the word-level tokenizer, saved as a directory."""
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    return save_tiny_llama(tmp_path_factory.mktemp("reference"), tokenizer, max_positions=512)


@pytest.fixture(scope="module")
def tiny(tiny_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_path).eval(), AutoTokenizer.from_pretrained(tiny_path)


class CopyModel(torch.nn.Module):
    """Predicts "a token seen earlier in the sequence": logit B for every token at positions ≤ t, else 0.

    So with m distinct tokens seen, NLL(x) = log(m·e^B + V − m) − B·[x seen]: computable by hand.
    """

    def __init__(self, vocab: int, boost: float = 6.0):
        super().__init__()
        self.vocab, self.boost = vocab, boost

    def forward(self, input_ids, attention_mask=None):
        seen = torch.nn.functional.one_hot(input_ids, self.vocab).cumsum(dim=1).clamp(max=1)
        return SimpleNamespace(logits=self.boost * seen.float())


def copy_nll(ids: list[int], vocab: int, boost: float) -> list[float]:
    """NLL of ids[1:] under CopyModel, from the formula."""
    out = []
    for t in range(1, len(ids)):
        seen = set(ids[:t])
        m = len(seen)
        out.append(math.log(m * math.exp(boost) + vocab - m) - boost * (ids[t] in seen))
    return out


def row(i: int, question: str, reasoning: str, answer: str) -> DistillRow:
    return DistillRow(id=f"q{i}", question=question, reasoning=reasoning, answer=answer, source="t#0")


def task_rows(n: int, seed: int = 0) -> list[DistillRow]:
    """Embedded-task rows in every reasoning style, and every fifth one the bare step values: 1 to ~80
    tokens each."""

    def reasoning(i: int, question: str) -> str:
        if i % 5 == 0:
            return ";".join(str(s.value) for s in solve_steps(question))
        return reasoning_of(question, STYLES[i % len(STYLES)])

    return [
        row(i, q.question, reasoning(i, q.question), q.answer)
        for i, q in enumerate(make_questions(n, seed=seed))
    ]


# --- selection ---------------------------------------------------------------------------------------------


def test_select_top_ratio_counts_order_and_ties() -> None:
    scores = np.array([0.1, 3.0, -1.0, 3.0, 2.0, 0.5])
    keep = select_top_ratio(scores, 0.5)
    assert keep.tolist() == [False, True, False, True, True, False]  # 3 highest, in original order
    # ties go to the earlier position
    assert select_top_ratio(np.zeros(5), 0.4).tolist() == [True, True, False, False, False]
    assert select_top_ratio(np.array([1.0, 2.0, 2.0, 2.0]), 0.5).tolist() == [False, True, True, False]
    ties = np.tile([1.0, 0.0], 100)
    assert np.flatnonzero(select_top_ratio(ties, 0.25)).tolist() == list(range(0, 100, 2))
    assert select_top_ratio(scores, 1.0).all()
    assert select_top_ratio(np.array([np.nan, 0.0]), 0.5).tolist() == [False, True]
    assert select_top_ratio(np.array([]), 0.5).tolist() == []
    for n in range(0, 40):
        for ratio in (0.05, 0.3, 0.5, 0.7, 0.9, 1.0):
            assert select_top_ratio(np.random.default_rng(n).normal(size=n), ratio).sum() == kept_count(
                n, ratio
            )
    # round half to even (the errors cancel over a set), at least one token, float fuzz ignored
    assert [kept_count(n, 0.5) for n in (1, 3, 5, 7, 9)] == [1, 2, 2, 4, 4]
    assert kept_count(5, 0.7) == 4 and kept_count(10, 0.7) == 7 and kept_count(3, 0.01) == 1
    assert kept_count(0, 0.5) == 0
    with pytest.raises(ValueError, match="ratio"):
        select_top_ratio(scores, 0.0)


def test_window_plan_covers_every_token_once() -> None:
    assert window_plan(5, 10, 16) == (5, [(0, 0, 10)])  # 1 + 5 + 10 fits
    # R = 16 - 1 - 5 = 10 reasoning tokens per window, chunks of S = 5 after the first
    assert window_plan(5, 11, 16) == (5, [(0, 0, 10), (1, 10, 11)])
    assert window_plan(5, 22, 16) == (5, [(0, 0, 10), (5, 10, 15), (10, 15, 20), (12, 20, 22)])
    assert window_plan(12, 9, 16) == (7, [(0, 0, 8), (1, 8, 9)])  # condition cut to 16 // 2 - 1 tokens
    for n_cond, n, window in [(5, 11, 16), (40, 100, 32), (0, 300, 8), (3, 57, 20), (100, 3, 64)]:
        c, plan = window_plan(n_cond, n, window)
        assert c == min(n_cond, window // 2 - 1)
        span = window - 1 - c
        assert [s for _, s, _ in plan] == [0] + [e for _, _, e in plan[:-1]]  # chunks tile [0, n)
        assert plan[-1][2] == n
        for context, start, end in plan:
            assert 1 + c + (end - context) <= window
            assert context <= start < end
            assert end - context == min(end, span)  # as much preceding reasoning as fits
    assert window_plan(20, 0, 16)[1] == [(0, 0, 0)]
    with pytest.raises(ValueError, match="window"):
        window_plan(1, 1, 4)


# --- CTS by hand --------------------------------------------------------------------------------------------


def test_cts_scores_by_hand_on_a_copy_model() -> None:
    """Only the reasoning token '7' occurs in the condition (as the answer): it alone gains from it."""
    tokenizer = build_tokenizer()
    vocab, boost = len(tokenizer), 6.0
    model = CopyModel(vocab, boost)
    example = row(0, "x", "a b c 7 d", "7")
    cond = condition_text(example, "question_answer")
    assert cond == "Solve step by step: x\nAnswer: 7\n"
    [scores] = token_scores(model, tokenizer, [cond], [example.reasoning], window=WINDOW)
    eos = tokenizer.eos_token_id
    r_ids = tokenizer(example.reasoning, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(cond, add_special_tokens=False)["input_ids"]
    expected = np.array(copy_nll([eos, *r_ids], vocab, boost)) - np.array(
        copy_nll([eos, *c_ids, *r_ids], vocab, boost)[len(c_ids) :]
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    assert scores[3] > 4 and (scores[[0, 1, 2, 4]] < 0).all()  # '7' ≈ B − log(11/4); the rest slightly < 0

    cts = CompressionConfig(method="cts", ratio=0.2)
    out, report = compress_by_tokens([example], (model, tokenizer), cts, progress=False)
    assert out[0].compressed_reasoning == "7" and report.details == [{"id": "q0", "n_tokens": 5, "n_kept": 1}]
    # conditioned on the question alone, '7' is as unpredictable as the rest: the answer is no longer kept
    [question_only] = token_scores(
        model, tokenizer, [condition_text(example, "question")], [example.reasoning], window=WINDOW
    )
    assert question_only[3] < 0
    question = CompressionConfig(method="cts", ratio=0.2, condition="question")
    out, _ = compress_by_tokens([example], (model, tokenizer), question, progress=False)
    assert out[0].compressed_reasoning != "7"
    # unconditional: surprisal grows with every new distinct token, so the last token is the most surprising
    [plain] = token_scores(model, tokenizer, None, [example.reasoning], window=WINDOW)
    np.testing.assert_allclose(plain, copy_nll([eos, *r_ids], vocab, boost), rtol=1e-5)
    unconditional = CompressionConfig(method="unconditional", ratio=0.2)
    out, report = compress_by_tokens([example], (model, tokenizer), unconditional, progress=False)
    assert out[0].compressed_reasoning == "d" and report.method == "unconditional"


# --- a tiny random Llama ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.9])
def test_achieved_ratio_within_two_percent(tiny_path: Path, ratio: float) -> None:
    rows = task_rows(60, seed=int(ratio * 10))
    cts = CompressionConfig(method="cts", ratio=ratio, window=64)
    out, report = compress_by_tokens(rows, tiny_path, cts, device="cpu", progress=False)
    tokenizer = build_tokenizer()
    lengths = [len(tokenizer(r.reasoning, add_special_tokens=False)["input_ids"]) for r in rows]
    assert min(lengths) <= 3 and max(lengths) >= 25  # varied, and short rows make rounding matter
    assert report.length_in == sum(lengths) and report.rows_out == len(rows) == len(out)
    assert abs(report.achieved_ratio - ratio) <= 0.02
    assert abs(report.retokenized_out / report.length_in - ratio) <= 0.02  # decoded text re-tokenizes alike
    for original, compressed, detail in zip(rows, out, report.details, strict=True):
        kept = compressed.compressed_reasoning.split()
        assert len(kept) == detail["n_kept"] == kept_count(detail["n_tokens"], ratio)
        tokens = tokenizer.convert_ids_to_tokens(
            tokenizer(original.reasoning, add_special_tokens=False)["input_ids"]
        )
        it = iter(tokens)
        assert all(token in it for token in kept)  # a subsequence: order preserved
        assert compressed.model_copy(update={"compressed_reasoning": None}) == original


def test_truncation_keeps_the_first_tokens_at_the_ratio(tiny_path: Path) -> None:
    rows = task_rows(40, seed=3)
    truncate = CompressionConfig(method="truncate", ratio=0.4)
    out, report = compress_by_tokens(rows, tiny_path, truncate, progress=False)
    tokenizer = build_tokenizer()
    assert report.method == "truncate" and abs(report.achieved_ratio - 0.4) <= 0.02
    for original, compressed, detail in zip(rows, out, report.details, strict=True):
        ids = tokenizer(original.reasoning, add_special_tokens=False)["input_ids"]
        first = ids[: kept_count(len(ids), 0.4)]  # TwT's fixed-length baseline: a prefix, nothing scored
        assert compressed.compressed_reasoning == tokenizer.decode(first).strip()
        assert detail["n_kept"] == len(first)


def test_windowed_selection_keeps_the_ratio_in_every_segment(tiny_path: Path) -> None:
    # the best tokens all sit in the first half: exact top-α keeps only those, windowed keeps α per segment
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert select_top_ratio(scores, 0.5).nonzero()[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert select_windowed(scores, 0.5, 8).nonzero()[0].tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert select_windowed(scores, 0.5, 16).tolist() == select_top_ratio(scores, 0.5).tolist()
    assert (
        select_windowed(scores, 0.25, 5).sum() == 1 + 1 + 1 + 1
    )  # round(1.25), round(1.25), .., round(.25)→1
    with pytest.raises(ValueError, match="segment"):
        select_windowed(scores, 0.5, 0)
    rows = task_rows(30, seed=3)
    cts = CompressionConfig(method="cts", ratio=0.5, window=64)
    exact, _ = compress_by_tokens(rows, tiny_path, cts, device="cpu", progress=False)
    by_segment = CompressionConfig(method="cts", ratio=0.5, window=64, selection="windowed", segment=4)
    windowed, report = compress_by_tokens(rows, tiny_path, by_segment, device="cpu", progress=False)
    assert report.settings["selection"] == "windowed" and report.settings["segment"] == 4
    assert [r.compressed_reasoning for r in exact] != [r.compressed_reasoning for r in windowed]
    for detail in report.details:  # each segment of 4 keeps 2, a last partial one round(α · rest)
        n = detail["n_tokens"]
        assert detail["n_kept"] == 2 * (n // 4) + (kept_count(n % 4, 0.5) if n % 4 else 0)


def test_a_window_longer_than_the_reference_context_is_refused(tiny_path: Path) -> None:
    too_long = CompressionConfig(method="cts", ratio=0.5, window=1024)
    with pytest.raises(ValueError, match=r"window 1024 is longer than the reference model's context \(512"):
        compress_by_tokens(task_rows(2), tiny_path, too_long, device="cpu", progress=False)


def test_token_selection_refuses_the_teacher_method(tiny_path: Path) -> None:
    with pytest.raises(ValueError, match=r"compression.method must be one of \('cts', 'unconditional'"):
        compress_by_tokens(task_rows(2), tiny_path, CompressionConfig(method="teacher"), progress=False)


def test_windowing_scores_every_token_with_the_documented_context(tiny) -> None:
    import torch.nn.functional as F

    model, tokenizer = tiny
    example = row(0, "3+4*2", ";".join(f"{i % 10}+{(3 * i) % 10}={(4 * i) % 10}" for i in range(16)), "4")
    cond = condition_text(example, "question_answer")
    c_ids = tokenizer(cond, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(example.reasoning, add_special_tokens=False)["input_ids"]
    n = len(r_ids)
    [full] = token_scores(model, tokenizer, [cond], [example.reasoning], window=4096)

    def nll(prefix: list[int], piece: list[int], start: int) -> np.ndarray:
        ids = torch.tensor([[tokenizer.eos_token_id, *prefix, *piece]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        first = 1 + len(prefix) + start
        return F.cross_entropy(logits[first - 1 : -1], ids[0, first:], reduction="none").numpy()

    for window in (24, 32):  # 24: the 13-token condition is cut to its last 11 tokens; 32: it fits
        assert n > 2 * window
        [windowed] = token_scores(model, tokenizer, [cond], [example.reasoning], window=window)
        assert windowed.shape == full.shape == (n,) and np.isfinite(windowed).all()
        c, plan = window_plan(len(c_ids), n, window)
        assert len(plan) > 3 and c == min(13, window // 2 - 1) == min(len(c_ids), window // 2 - 1)
        for context, start, end in plan:
            piece = r_ids[context:end]
            expected = nll([], piece, start - context) - nll(c_ids[len(c_ids) - c :], piece, start - context)
            np.testing.assert_allclose(windowed[start:end], expected, atol=1e-5)
        assert not np.allclose(windowed, full, atol=1e-3)  # later tokens lost the early reasoning
    # with the whole condition, the first window sees the same context as the unwindowed path
    np.testing.assert_allclose(windowed[: plan[0][2]], full[: plan[0][2]], atol=1e-5)
    # a window that just fits gives the unwindowed result
    [fits] = token_scores(model, tokenizer, [cond], [example.reasoning], window=1 + len(c_ids) + n)
    np.testing.assert_allclose(fits, full, atol=1e-6)


def test_batch_size_does_not_change_scores(tiny) -> None:
    model, tokenizer = tiny
    rows = [*task_rows(13, seed=3), row(99, "1+1", "", "2")]
    conditions = [condition_text(r, "question_answer") for r in rows]
    reasonings = [r.reasoning for r in rows]
    one = token_scores(model, tokenizer, conditions, reasonings, batch_size=1, window=16)
    eight = token_scores(model, tokenizer, conditions, reasonings, batch_size=8, window=16)
    plain_one = token_scores(model, tokenizer, None, reasonings, batch_size=1, window=16)
    plain_eight = token_scores(model, tokenizer, None, reasonings, batch_size=8, window=16)
    assert one[-1].shape == (0,)
    for a, b, c, d in zip(one, eight, plain_one, plain_eight, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(c, d, atol=1e-5)
        assert a.shape == c.shape
    # the conditional scores are not the unconditional ones
    assert not np.allclose(np.concatenate(one), np.concatenate(plain_one))


# --- teacher rewrite ---------------------------------------------------------------------------------------


class FakeTeacher:
    """Answers each rewrite prompt from a table keyed by the question; records the prompts and arguments."""

    def __init__(self, replies: dict[str, str]):
        self.replies, self.prompts, self.calls = replies, [], []

    def generate(self, prompts, *, n=1, temperature=None, seed=None, max_new_tokens=None):
        self.prompts += prompts
        self.calls.append({"n": n, "temperature": temperature, "batch": len(prompts)})
        out = []
        for prompt in prompts:
            question = prompt.split("\n")[0].removeprefix("Rewrite concisely: ")
            text = self.replies[question]
            out.append([Generation(text=text, tokens=len(text.split()), finish_reason="stop", logprob=None)])
        return out


TEACHER_ROWS = [
    row(0, "7+5*3", "7+5=2;2*3=6", "6"),  # (a) shorter and right: accepted
    row(1, "1+2", "1+2=3", "3"),  # (b) the rewrite changes the answer
    row(2, "4*4", "4*4=6", "6"),  # (c) the rewrite is longer
    row(3, "9-1", "9-1=8", "8"),  # (d) no answer line
    row(4, "2+2", "2+2=4", "4"),  # (e) an empty reasoning
]
REPLIES = {
    "7+5*3": "2;6\nAnswer: 6",
    "1+2": "3\nAnswer: 4",
    "4*4": "4*4=16 mod 6, so the value is 6\nAnswer: 6",
    "9-1": "8",
    "2+2": "Answer: 4.0",
}


def test_teacher_rewrite_accepts_and_rejects() -> None:
    teacher = FakeTeacher(REPLIES)
    attempts = {"q0": "7+5=2;2*3=7\nAnswer: 7"}
    out, report = compress_by_teacher(TEACHER_ROWS, teacher, attempts=attempts, batch_size=2, progress=False)
    assert [c["temperature"] for c in teacher.calls] == [0.0] * 3 and [c["batch"] for c in teacher.calls] == [
        2,
        2,
        1,
    ]
    first = teacher.prompts[0]
    for part in ("7+5*3", "7+5=2;2*3=6", "Answer: 6", "Student: 7+5=2;2*3=7\nAnswer: 7"):
        assert part in first
    assert teacher.prompts[1].endswith("Student: \nConcise:\n")  # no attempt: empty
    assert report.rejected == {"no_answer": 1, "answer_changed": 1, "empty": 1, "not_shorter": 1}
    assert list(report.rejected) == list(REJECT_REASONS)
    assert [d["status"] for d in report.details] == [
        "accepted",
        "answer_changed",
        "not_shorter",
        "no_answer",
        "empty",
    ]
    assert report.accepted == 1 and report.rows_in == report.rows_out == 5 and report.unit == "chars"
    # rejected rows fall back to their original reasoning
    assert [r.compressed_reasoning for r in out] == ["2;6", "1+2=3", "4*4=6", "9-1=8", "2+2=4"]
    assert report.length_in == sum(len(r.reasoning) for r in TEACHER_ROWS)
    assert report.length_out == report.length_in - len("7+5=2;2*3=6") + len("2;6")

    dropped, report = compress_by_teacher(
        TEACHER_ROWS, FakeTeacher(REPLIES), on_reject="drop", progress=False
    )
    assert [r.id for r in dropped] == ["q0"] and dropped[0].compressed_reasoning == "2;6"
    assert report.rows_out == 1 and report.achieved_ratio == pytest.approx(3 / 11)
    assert sum(report.rejected.values()) == 4
    with pytest.raises(ValueError, match="on_reject"):
        compress_by_teacher(TEACHER_ROWS, FakeTeacher(REPLIES), on_reject="skip")


def test_teacher_lengths_in_tokens_when_a_tokenizer_is_given() -> None:
    # by characters "6;  6" would not be shorter than "4*4=6"; by tokens (3 < 5) it is
    rows = [row(0, "4*4", "4*4=6", "6")]
    out, report = compress_by_teacher(
        rows, FakeTeacher({"4*4": "6 ; 6\nAnswer: 6"}), tokenizer=build_tokenizer(), progress=False
    )
    assert report.unit == "tokens" and report.accepted == 1 and out[0].compressed_reasoning == "6 ; 6"
    assert (report.length_in, report.length_out) == (5, 3)
    _, by_chars = compress_by_teacher(rows, FakeTeacher({"4*4": "6 ; 6\nAnswer: 6"}), progress=False)
    assert by_chars.rejected["not_shorter"] == 1


# --- files --------------------------------------------------------------------------------------------------


def test_run_compress_files(tmp_path: Path, tiny_path: Path) -> None:
    rows = task_rows(20, seed=5)
    distill = tmp_path / "distill.jsonl"
    write_rows(distill, rows)
    report = run_compress(
        distill,
        tmp_path / "out" / "cts.jsonl",
        tmp_path / "out" / "cts_report.json",
        CompressionConfig(method="cts", ratio=0.6, window=32),
        reference_model=tiny_path,
        device="cpu",
        progress=False,
    )
    out = list(read_rows(tmp_path / "out" / "cts.jsonl", DistillRow))
    assert [r.id for r in out] == [r.id for r in rows] and all(
        r.compressed_reasoning is not None for r in out
    )
    on_disk = json.loads((tmp_path / "out" / "cts_report.json").read_text())
    assert (
        on_disk == report
        and on_disk["method"] == "cts"
        and on_disk["settings"]["condition"] == "question_answer"
    )
    assert on_disk["length_out"] == sum(d["n_kept"] for d in on_disk["details"])
    assert on_disk["inputs"]["reference_model"] == str(tiny_path) and on_disk["outputs"]["rows"] == 20
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind

    # teacher: attempts from the student's candidates file (lowest sample per id)
    candidates = tmp_path / "student.jsonl"
    common = {"teacher": "stage1", "confidence": 0.5, "tokens": 3, "finish_reason": "stop"}
    write_rows(
        candidates,
        [
            Candidate(id="q0", sample=1, reasoning="late", answer="1", **common),
            Candidate(id="q0", sample=0, reasoning="7+5=2;2*3=7", answer="7", **common),
            Candidate(id="q1", sample=0, reasoning="1+2=", answer=None, **common),
        ],
    )
    assert load_attempts(candidates) == {"q0": "7+5=2;2*3=7\nAnswer: 7", "q1": "1+2="}
    write_rows(distill, TEACHER_ROWS)
    teacher = FakeTeacher(REPLIES)
    report = run_compress(
        distill,
        tmp_path / "t.jsonl",
        tmp_path / "t.json",
        CompressionConfig(method="teacher"),
        teacher=teacher,
        attempts=candidates,
        templates=PromptTemplates(),
        on_reject="drop",
        progress=False,
    )
    assert "Student: 7+5=2;2*3=7\nAnswer: 7" in teacher.prompts[0]
    assert [r.id for r in read_rows(tmp_path / "t.jsonl", DistillRow)] == ["q0"]
    assert report["rows_out"] == 1 and report["rejected"]["answer_changed"] == 1
    with pytest.raises(ValueError, match="teacher"):
        run_compress(
            distill, tmp_path / "x.jsonl", tmp_path / "x.json", CompressionConfig(), teacher="teacher-large"
        )
    with pytest.raises(ValueError, match="reference_model"):
        run_compress(distill, tmp_path / "x.jsonl", tmp_path / "x.json", CompressionConfig(method="cts"))


def test_run_compress_names_the_bad_line(tmp_path: Path) -> None:
    distill = tmp_path / "distill.jsonl"
    good = TEACHER_ROWS[0].model_dump_json()
    distill.write_text(good + "\n" + '{"id": "q1", "question": "1+2"}\n', encoding="utf-8")
    with pytest.raises(RecordError, match=rf"{distill}:2: field 'reasoning'"):
        run_compress(
            distill,
            tmp_path / "o.jsonl",
            tmp_path / "r.json",
            CompressionConfig(),
            teacher=FakeTeacher(REPLIES),
        )
    assert not (tmp_path / "o.jsonl").exists()


def test_attempt_aware_rewrite_by_a_served_teacher() -> None:
    """The attempt and its verdict reach a served teacher through the configured rewrite prompt, so two
    attempts on one question give two compressions. The served model here is a test double that follows the
    example-cluster prompt literally: it keeps, with their operands, the steps the attempt got wrong."""
    from fake_openai_server import FakeOpenAIServer

    from twt.core.load import load_config
    from twt.method.teachers import load_teacher

    def follows_the_instruction(prompt: str, index: int) -> str:
        reasoning = prompt.split("Reasoning: ")[1].split("\n")[0]
        attempt = prompt.split("Student's attempt: ")[1].split("\n")[0]
        wrong = [s for s, t in zip(reasoning.split(";"), attempt.split(";"), strict=False) if s != t]
        return ";".join(wrong or reasoning.split(";")[-1:]) + "\nAnswer: " + prompt.split("Answer: ")[1][0]

    assert attempt_with_verdict("7+5=2;2*3=7\nAnswer: 7", "6").endswith("(the student's answer is wrong)")
    assert attempt_with_verdict("7+5=2;2*3=6\nAnswer: 6.0", "6").endswith("(the student's answer is right)")
    config = load_config(Path(__file__).parents[1] / "configs" / "example-cluster.yaml")
    assert config.compression.attempt_verdict
    templates = config.compression_teacher().templates()
    rows = [row(0, "7+5*3-4", "7+5=2;2*3=6;6-4=2", "2")]
    compressed = []
    with FakeOpenAIServer(reply=follows_the_instruction) as server:
        backend = load_teacher(
            TeacherConfig(name="served", model="m", backend="openai", base_url=server.base_url)
        )
        for attempt in ("7+5=2;2*3=7;7-4=3\nAnswer: 3", "7+5=2;2*3=6;6-4=3\nAnswer: 3"):
            attempts = {"q0": attempt_with_verdict(attempt, "2")}
            out, _ = compress_by_teacher(
                rows, backend, templates=templates, attempts=attempts, progress=False
            )
            compressed.append(out[0].compressed_reasoning)
        prompt = server.requests[0]["body"]["prompt"]
    assert compressed == ["2*3=6;6-4=2", "6-4=2"]  # operands kept with every result
    assert "Student's attempt: 7+5=2;2*3=7;7-4=3\nAnswer: 3\n(the student's answer is wrong)" in prompt


def test_the_compress_command_goes_through_the_step_with_the_config_settings(
    tmp_path: Path, tiny_path: Path, capsys
) -> None:
    """`twt compress` is the pipeline's compress step: another method than the configuration's keeps only
    the settings it uses (the demo's compression.teacher is dropped for cts), and a missing scoring model is
    one line before anything is written."""
    from twt.app.cli import main

    write_rows(tmp_path / "distill.jsonl", task_rows(12, seed=6))
    config = tmp_path / "run.yaml"  # the demo configuration (method teacher) with CTS selection settings
    from twt.core.load import default_config_path

    config.write_text(default_config_path().read_text())
    base = ["compress", "--config", str(config), "--data", str(tmp_path / "distill.jsonl"), "--quiet"]
    out, report = tmp_path / "cts.jsonl", tmp_path / "cts_report.json"
    assert main([*base, "--method", "cts", "--out", str(out), "--report", str(report)]) == 2
    assert capsys.readouterr().err.count("\n") == 1 and not out.exists()  # no --student, no --reference
    argv = [*base, "--method", "cts", "--ratio", "0.5", "--reference", str(tiny_path)]
    assert main([*argv, "--out", str(out), "--report", str(report)]) == 0
    on_disk = json.loads(report.read_text())
    assert on_disk["method"] == "cts" and on_disk["target_ratio"] == 0.5
    assert len(list(read_rows(out, DistillRow))) == 12
