"""JSONL rows with a schema: questions, candidates and distillation rows.

The formats are the contracts between pipeline steps. Reading streams row by row and a
malformed line fails with ``RecordError`` naming the file and the line; writing is atomic (a temporary file
in the same directory, then ``os.replace``), so a reader never sees half a file.

    rows = list(read_rows("questions.jsonl", Question))
    write_rows("out.jsonl", rows)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RecordError(ValueError):
    """A row that does not match its schema, with the file and line it came from."""


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Question(_Row):
    """One question; ``answer`` is the gold answer when known (optional: twt works unsupervised)."""

    id: str = Field(min_length=1)
    question: str
    answer: str | None = None


class Candidate(_Row):
    """One teacher generation for one question.

    ``answer`` is None when no answer could be extracted; ``error`` then says why. ``confidence`` is in
    [0, 1] (self-reported or the sequence probability); ``tokens`` counts the generated tokens.
    """

    id: str = Field(min_length=1)
    teacher: str = Field(min_length=1)
    sample: int = Field(ge=0)
    reasoning: str
    answer: str | None
    confidence: float = Field(ge=0.0, le=1.0)
    tokens: int = Field(ge=0)
    finish_reason: str
    error: str | None = None


class DistillRow(_Row):
    """One training example for the student; stage 2 adds ``compressed_reasoning``."""

    id: str = Field(min_length=1)
    question: str
    reasoning: str
    answer: str
    source: str
    compressed_reasoning: str | None = None


Row = TypeVar("Row", bound=_Row)


def read_rows(path: str | os.PathLike, schema: type[Row]) -> Iterator[Row]:
    """Stream the rows of a JSONL file, validating each; blank lines are skipped."""
    path = Path(path)
    handle = _open(path)  # bytes, decoded line by line, so a bad byte is reported on its own line
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise RecordError(f"{path}:{number}: not UTF-8 ({err.reason})") from None
            if not line.strip():
                continue
            try:
                yield schema.model_validate_json(line)
            except ValidationError as err:
                raise RecordError(f"{path}:{number}: {_describe(err)}") from None


def _open(path: Path) -> BinaryIO:
    """Open an input file for reading; a missing, unreadable or directory path is one ``RecordError``."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordError(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise RecordError(f"{path}: permission denied (cannot read it)") from None
    except OSError as err:
        raise RecordError(f"{path}: cannot read ({err.strerror or err})") from None


def read_nonempty(path: str | os.PathLike, schema: type[Row], what: str = "rows") -> list[Row]:
    """All rows of a JSONL file (``read_rows``); a file without any is a ``RecordError``, raised before the
    caller writes anything."""
    rows = list(read_rows(path, schema))
    if not rows:
        raise RecordError(f"{path}: no {what} (the file is empty); refusing to go on with nothing")
    return rows


def read_json(path: str | os.PathLike, what: str = "JSON file", kind: type | None = None) -> Any:
    """One JSON document; a missing/unreadable file or bad JSON is a ``RecordError`` naming ``what``, the
    file and the line (``kind``: the type the top level must have, e.g. ``dict``)."""
    path = Path(path)
    with _open(path) as handle:
        raw = handle.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: {what}: not UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise RecordError(
            f"{path}:{err.lineno}: {what}: not valid JSON ({err.msg}, column {err.colno})"
        ) from None
    except RecursionError:
        raise RecordError(f"{path}: {what}: nested too deeply") from None
    if kind is not None and not isinstance(data, kind):
        raise RecordError(f"{path}:1: {what}: expected a JSON {_KIND_NAMES.get(kind, kind.__name__)}")
    return data


_KIND_NAMES = {dict: "object", list: "array"}


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    if first["type"] == "json_invalid":
        return f"not valid JSON ({first['msg']})"
    field = ".".join(str(part) for part in first["loc"]) or "row"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"field '{field}': {first['msg']}{more}"


def write_rows(path: str | os.PathLike, rows: Iterable[_Row | dict]) -> int:
    """Write rows atomically as JSONL; returns how many were written. Rows stream to a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in rows:
                data = row.model_dump(exclude_none=False) if isinstance(row, BaseModel) else row
                out.write(json.dumps(data, ensure_ascii=False) + "\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def write_json(path: str | os.PathLike, data: object) -> Path:
    """Write one JSON document atomically (temporary file in the same directory, then rename); returns
    the path. Values JSON cannot hold (paths, dates) are written as strings."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically: a reader (or a crash) sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
