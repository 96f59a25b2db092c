"""twt.core.records: schema'd JSONL rows — round trips, malformed lines, atomic writes, streaming."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from itertools import islice

import pytest

from twt.core.records import Candidate, DistillRow, Question, RecordError, read_rows, write_rows

QUESTIONS = [
    Question(id="q1", question="7+5*3-4", answer="2"),
    Question(id="q2", question="Combien font 3×4 ? «réponse»", answer=None),
]
CANDIDATES = [
    Candidate(
        id="q1",
        teacher="teacher-large",
        sample=0,
        reasoning="7+5=2;2*3=6;6-4=2",
        answer="2",
        confidence=0.875,
        tokens=17,
        finish_reason="stop",
    ),
    Candidate(
        id="q1",
        teacher="teacher-noisy",
        sample=3,
        reasoning="7+5=2;2*3=",
        answer=None,
        confidence=0.0,
        tokens=96,
        finish_reason="length",
        error="no 'Answer:' line in the output",
    ),
]
DISTILL = [
    DistillRow(
        id="q1", question="7+5*3-4", reasoning="7+5=2;2*3=6;6-4=2", answer="2", source="teacher-large"
    ),
    DistillRow(
        id="q1",
        question="7+5*3-4",
        reasoning="7+5=2;2*3=6;6-4=2",
        answer="2",
        source="teacher-large",
        compressed_reasoning="2;6;2",
    ),
]

GOOD_CANDIDATE = CANDIDATES[0].model_dump()


@pytest.mark.parametrize(
    ("schema", "rows"), [(Question, QUESTIONS), (Candidate, CANDIDATES), (DistillRow, DISTILL)]
)
def test_round_trip(tmp_path, schema, rows):
    path = tmp_path / "sub" / "rows.jsonl"
    assert write_rows(path, rows) == len(rows)
    assert list(read_rows(path, schema)) == rows
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(rows)
    assert [json.loads(line) for line in lines] == [r.model_dump() for r in rows]  # one JSON object a line


def test_write_accepts_dicts_and_keeps_non_ascii_readable(tmp_path):
    path = tmp_path / "q.jsonl"
    write_rows(path, [{"id": "a", "question": "«ça»", "answer": "1"}])
    assert "«ça»" in path.read_text(encoding="utf-8")
    assert list(read_rows(path, Question)) == [Question(id="a", question="«ça»", answer="1")]


def _candidate_line(**changes) -> bytes:
    row = {**GOOD_CANDIDATE, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not ...}).encode()


MALFORMED = {
    "bad JSON": (b'{"id": "q1", "teacher": ', "not valid JSON"),
    "missing field": (_candidate_line(tokens=...), "field 'tokens': Field required"),
    "wrong type": (_candidate_line(sample="first"), "field 'sample': Input should be a valid integer"),
    "extra field": (_candidate_line(score=0.3), "field 'score': Extra inputs are not permitted"),
    "confidence above 1": (_candidate_line(confidence=1.5), "field 'confidence': Input should be less than"),
    "confidence below 0": (_candidate_line(confidence=-0.1), "field 'confidence': Input should be greater"),
    "not an object": (b"[1, 2, 3]", "Input should be an object"),
    "not UTF-8": (_candidate_line(reasoning="7+5=2").replace(b"7+5", b"7\xff5"), "not UTF-8"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_line_names_file_and_line(tmp_path, case):
    bad, expected = MALFORMED[case]
    path = tmp_path / "candidates.jsonl"
    good = _candidate_line()
    path.write_bytes(good + b"\n\n" + good + b"\n" + bad + b"\n" + good + b"\n")  # the bad row is line 4
    rows = read_rows(path, Candidate)
    assert [next(rows), next(rows)] == [CANDIDATES[0]] * 2  # rows before the bad line still arrive
    with pytest.raises(RecordError) as caught:
        next(rows)
    message = str(caught.value)
    assert message.startswith(f"{path}:4: ")
    assert expected in message


def test_several_errors_in_one_line_are_counted(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "", "question": 3}\n')
    with pytest.raises(RecordError, match=r":1: field 'id': .* \(and 1 more\)"):
        list(read_rows(path, Question))


def test_missing_file(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        list(read_rows(tmp_path / "absent.jsonl", Question))


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        '\n   \n{"id": "a", "question": "1+1"}\r\n\t\n{"id": "b", "question": "2+2"}'
    )  # no final \n
    assert [q.id for q in read_rows(path, Question)] == ["a", "b"]


def _rows_then_failure(n_good: int):
    yield from QUESTIONS[:n_good]
    raise RuntimeError("producer failed")


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "q.jsonl"
    write_rows(path, QUESTIONS[:1])
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="producer failed"):
        write_rows(path, _rows_then_failure(2))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["q.jsonl"]


def test_unserialisable_row_keeps_the_old_file(tmp_path):
    path = tmp_path / "q.jsonl"
    write_rows(path, QUESTIONS)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_rows(path, [{"id": "a", "question": "x"}, {"id": "b", "question": {1, 2}}])
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["q.jsonl"]


def test_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        write_rows(tmp_path / "new.jsonl", _rows_then_failure(1))
    assert os.listdir(tmp_path) == []


N_LARGE = 200_000


@pytest.fixture(scope="module")
def large_file(tmp_path_factory):
    """200k valid question rows and a malformed last line (line 200001)."""
    path = tmp_path_factory.mktemp("large") / "questions.jsonl"
    body = b"".join(b'{"id": "q%06d", "question": "1+2*3-4+5", "answer": "5"}\n' % i for i in range(N_LARGE))
    path.write_bytes(body + b"{broken\n")
    return path


def test_reading_the_first_rows_does_not_read_the_whole_file(large_file):
    size = large_file.stat().st_size
    assert size > 10_000_000
    tracemalloc.start()
    try:
        first = list(islice(read_rows(large_file, Question), 3))  # never reaches the broken last line
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [q.id for q in first] == ["q000000", "q000001", "q000002"]
    assert peak < size / 20  # a whole-file read would hold at least `size` bytes at once


def test_the_whole_large_file_streams_to_its_bad_last_line(large_file):
    count = 0
    with pytest.raises(RecordError, match=rf":{N_LARGE + 1}: not valid JSON"):
        for _ in read_rows(large_file, Question):
            count += 1
    assert count == N_LARGE


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_rows_arrive_before_the_writer_has_finished(tmp_path):
    """Read from a pipe: the first row must be yielded while the writer still holds the rest back."""
    pipe = tmp_path / "rows.pipe"
    os.mkfifo(pipe)
    first_row_seen = threading.Event()
    released_by_reader = []

    def writer():
        with open(pipe, "wb") as out:
            out.write(b'{"id": "a", "question": "1+1"}\n')
            out.flush()
            released_by_reader.append(first_row_seen.wait(timeout=20))
            out.write(b'{"id": "b", "question": "2+2"}\n')

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        rows = read_rows(pipe, Question)
        assert next(rows).id == "a"
        first_row_seen.set()
        assert [q.id for q in rows] == ["b"]
    finally:
        first_row_seen.set()
        thread.join()
    assert released_by_reader == [True]


def test_write_json_is_atomic_and_keeps_the_old_file_on_failure(tmp_path):
    from twt.core.records import write_json

    path = tmp_path / "out" / "report.json"
    assert write_json(path, {"kept": 3, "where": tmp_path, "name": "Zoë"}) == path
    assert json.loads(path.read_text()) == {"kept": 3, "where": str(tmp_path), "name": "Zoë"}
    with pytest.raises(ValueError, match="Circular reference"):
        write_json(path, _circular())
    assert json.loads(path.read_text())["kept"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def _circular() -> dict:
    data: dict = {}
    data["self"] = data
    return data
