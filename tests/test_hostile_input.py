"""Hostile and careless input, generated with hypothesis: names, references, manifests, configurations and
JSONL rows. The CLI answers each with one ``twt: error:`` line and a non-zero exit, and writes nothing."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from helpers import write_model_dir
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from twt.app import cli
from twt.core import names, store
from twt.core.load import default_config_path, load_config, parse_config
from twt.core.records import Question
from twt.core.schema import ConfigError
from twt.registry import models as registry

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DEMO = yaml.safe_load(default_config_path().read_text())


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(result: tuple[int, str, str], *needles: str) -> str:
    code, _, err = result
    assert code == 2, result
    assert err.startswith("twt: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def fresh(base: Path, name: str) -> Path:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---- names and references ----------------------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
ascii_names = st.text("abcxyz019._-@/ \n\t\0", max_size=70)


@given(st.one_of(texts, ascii_names, st.sampled_from(["student\n", "a..b", "", "-x", "Student", "a" * 64])))
@example("student\n")
def test_name_rules_are_full_matches(text):
    valid = names.is_model_name(text)
    assert valid == (names.MODEL_NAME.fullmatch(text) is not None and ".." not in text)
    assert not names.is_model_name(text + "\n") and not names.is_version(text + "\n")
    assert not names.is_tag(text + "\n")
    if not valid:
        with pytest.raises(registry.RegistryNameError, match="invalid model name"):
            registry.check_model_name(text)


@given(st.one_of(texts, st.sampled_from(["1\n", "01", "1.2.3.4", "1..2", "1.", "1e3", "١"])))
def test_versions_are_one_to_three_plain_numbers(text):
    valid = names.is_version(text)
    parts = text.split(".")
    plain = all(p.isascii() and p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts)
    assert valid == (1 <= len(parts) <= 3 and plain and all(len(p) <= 9 for p in parts))


@FAST
@given(
    ref=st.one_of(texts, ascii_names, st.sampled_from(["m@1\n", "m@", "@1", "m@1@2", "../m@1", "m@latest\n"]))
)
@example(ref="m@1\n")
@example(ref="0@a")
def test_cli_refuses_bad_references_in_one_line_and_writes_nothing(tmp_path, ref):
    assume(not (names.is_model_name(ref.partition("@")[0]) and names.is_version(ref.partition("@")[2])))
    assume(ref.partition("@")[2] != "latest" or not names.is_model_name(ref.partition("@")[0]))
    work = fresh(tmp_path, "w")
    for argv in (
        ["registry", "pull", "--root", str(work / "reg"), "--to", str(work / "out"), "--", ref],
        ["registry", "show", "--root", str(work / "reg"), "--", ref],
        ["pipeline", "pull", "--root", str(work / "reg"), "--to", str(work / "out.yaml"), "--", ref],
    ):
        assume("\0" not in ref or argv[0] == "registry")
        name, _, which = ref.partition("@")
        if argv[0] == "pipeline" and names.is_model_name(name) and names.is_tag(which):
            continue  # NAME@TAG is a valid pipeline reference (its tag is looked up, not refused)
        assert_one_line_error(run_cli(*argv), "invalid")
    assert list(work.iterdir()) == []


@FAST
@given(name=st.one_of(texts, ascii_names), version=st.one_of(st.just("1"), texts))
def test_cli_refuses_bad_names_and_versions_before_reading_the_model(tmp_path, name, version):
    assume(not names.is_model_name(name) or (version != "auto" and not names.is_version(version)))
    work = fresh(tmp_path, "w")
    model = work / "model"  # never read: the names are checked first
    result = run_cli(
        "registry",
        "publish",
        str(model),
        "--root",
        str(work / "reg"),
        f"--name={name}",
        f"--version={version}",
    )
    assert_one_line_error(result, "invalid")
    assert list(work.iterdir()) == []


@FAST
@given(tag=st.one_of(texts, st.sampled_from(["stable\n", "Stable", "1x", ""])))
def test_cli_refuses_bad_tags(tmp_path, tag):
    assume(not names.is_tag(tag))
    work = fresh(tmp_path, "w")
    assert_one_line_error(run_cli("pipeline", "tag", "--root", str(work), "p@1", "--", tag), "invalid")
    assert list(work.iterdir()) == []


# ---- manifests ---------------------------------------------------------------------------------------------

GOOD_SHA = "a" * 64
bad_entries = st.one_of(
    st.sampled_from(
        [
            "",
            ".",
            "..",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a/",
            "a\0b",
            "a\\b",
            "MANIFEST.json",
        ]
    ),
    st.builds(
        lambda a, b: f"{a}/{b}", st.sampled_from(["", ".", ".."]), st.text("ab", min_size=1, max_size=3)
    ),
    st.builds(lambda a: "/" + a, st.text("abc/", max_size=8)),
)


def _manifest_text(entries: list[tuple[str, object]]) -> str:
    """A manifest written by hand, so duplicate keys survive."""
    body = ", ".join(f"{json.dumps(rel)}: {json.dumps(e)}" for rel, e in entries)
    meta = {"kind": registry.KIND, "model": "m", "version": "1"}
    return f'{{"format": 1, "created": "", "files": {{{body}}}, "metadata": {json.dumps(meta)}}}'


def _plant(root: Path, text: str) -> None:
    version = root / "m" / "1"
    version.mkdir(parents=True)
    (version / "MANIFEST.json").write_text(text)
    (version / "a").write_bytes(b"x")


hostile_manifests = st.one_of(
    bad_entries.map(
        lambda rel: [("ok.txt", {"sha256": GOOD_SHA, "size": 1}), (rel, {"sha256": GOOD_SHA, "size": 1})]
    ),
    st.just([("a", {"sha256": GOOD_SHA, "size": 1}), ("a", {"sha256": GOOD_SHA, "size": 1})]),  # duplicate
    st.just(
        [("a", {"sha256": GOOD_SHA, "size": 1}), ("a/b", {"sha256": GOOD_SHA, "size": 1})]
    ),  # file and dir
    st.sampled_from(
        [
            {"sha256": "xyz", "size": 1},
            {"sha256": GOOD_SHA, "size": -1},
            {"sha256": GOOD_SHA, "size": True},
            {"size": 1},
            [],
            "x",
        ]
    ).map(lambda e: [("a", e)]),
)


@FAST
@given(entries=hostile_manifests)
def test_pull_refuses_a_hostile_manifest_in_one_line_and_writes_nothing(tmp_path, entries):
    work = fresh(tmp_path, "w")
    _plant(work / "reg", _manifest_text(entries))
    before = tree(work)
    result = run_cli("registry", "pull", "m@1", "--root", str(work / "reg"), "--to", str(work / "out"))
    assert_one_line_error(result, "malformed manifest")
    assert tree(work) == before and sorted(p.name for p in work.iterdir()) == ["reg"]


@given(st.lists(st.text("abc.-_", min_size=1, max_size=4), min_size=1, max_size=4))
def test_normalised_relative_paths_are_accepted(parts):
    rel = "/".join(parts)
    assume(all(p not in (".", "..") for p in parts) and rel != "MANIFEST.json")
    assert store.check_entry(rel) == rel


@pytest.mark.parametrize(
    "entries",
    [
        [("", {"sha256": GOOD_SHA, "size": 1})],
        [("../x", {"sha256": GOOD_SHA, "size": 1})],
        [("a", {"sha256": GOOD_SHA, "size": 1})] * 2,
        [("/abs", {"sha256": GOOD_SHA, "size": 1})],
    ],
    ids=["empty", "dotdot", "duplicate", "absolute"],
)
def test_s3_pull_refuses_a_hostile_manifest(s3, tmp_path, entries):
    body = _manifest_text(entries).encode()
    s3.client.put_object(s3.bucket, "reg/m/1/MANIFEST.json", io.BytesIO(body), len(body))
    result = run_cli("registry", "pull", "m@1", "--root", s3.uri("reg"), "--to", str(tmp_path / "out"))
    assert_one_line_error(result, "malformed manifest")
    assert list(tmp_path.iterdir()) == []


def test_publishing_a_file_name_with_a_backslash_is_refused(tmp_path):
    write_model_dir(tmp_path / "model")
    (tmp_path / "model" / "a\\b").write_text("x")
    with pytest.raises(store.StoreError, match=r"cannot publish .*not a normalised relative path"):
        registry.publish(tmp_path / "model", tmp_path / "reg", "m", "1")
    assert registry.list_versions(tmp_path / "reg", "m") == []


# ---- configurations ----------------------------------------------------------------------------------------

NUMERIC_FIELDS = [
    ("task", "train_questions"),
    ("task", "seed"),
    ("teachers", 0, "k"),
    ("teachers", 1, "temperature"),
    ("teachers", 2, "max_new_tokens"),
    ("dcrs", "quality_threshold"),
    ("compression", "ratio"),
    ("stages", "common", "learning_rate"),
    ("stages", "stage3", "updates"),
    ("task", "weights", 1),
]


def _with(path: tuple, value: object) -> dict:
    data = copy.deepcopy(DEMO)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


def _config_cli(work: Path, text: str) -> tuple[tuple[int, str, str], float]:
    (work / "c.yaml").write_text(text)
    started = time.perf_counter()
    result = run_cli(
        "sample",
        "--config",
        str(work / "c.yaml"),
        "--questions",
        str(work / "q.jsonl"),
        "--out",
        str(work / "out"),
    )
    return result, time.perf_counter() - started


@FAST
@given(
    field=st.sampled_from(NUMERIC_FIELDS),
    value=st.sampled_from([True, False, float("nan"), float("inf"), float("-inf")]),
)
def test_config_numbers_are_strict_and_errors_name_file_and_field(tmp_path, field, value):
    work = fresh(tmp_path, "w")
    result, _ = _config_cli(work, yaml.safe_dump(_with(field, value)))
    dotted = ".".join(str(p) for p in field if not isinstance(p, int))
    err = assert_one_line_error(result, f"{work / 'c.yaml'}: ")
    assert all(part in err for part in dotted.split(".")), err
    assert sorted(p.name for p in work.iterdir()) == ["c.yaml"]


def _nested(depth: int, flow: bool) -> str:
    if flow:
        return "name: x\nextra: " + "[" * depth + "]" * depth + "\n"
    return "name: x\n" + "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"


def _bomb(fanout: int, levels: int) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def _keys(n: int) -> str:
    return "".join(f"k{i}: {i}\n" for i in range(n))


# (builder, arguments): the documents are built in the test, so that hypothesis reports them briefly
hostile_yaml = st.one_of(
    st.tuples(st.just(_nested), st.tuples(st.integers(65, 20_000), st.just(True))),
    st.tuples(
        st.just(_nested), st.tuples(st.integers(65, 900), st.just(False))
    ),  # 900 indented levels: 0.8 MB
    st.tuples(st.just(_bomb), st.tuples(st.integers(2, 12), st.integers(1, 12))).filter(
        lambda spec: spec[1][0] ** spec[1][1] > 10_000
    ),
    st.tuples(st.just(_keys), st.tuples(st.integers(5_001, 40_000))),  # 10,000 nodes and more
    st.tuples(st.just(str), st.sampled_from([("a: &a [*a]\n",), ("a: 1\na: 2\n",)])),
)


@FAST
@given(spec=hostile_yaml)
def test_hostile_yaml_is_refused_in_one_line_within_a_second(tmp_path, spec):
    build, arguments = spec
    text = build(*arguments)
    work = fresh(tmp_path, "w")
    result, _ = _config_cli(work, text)
    assert_one_line_error(result, str(work / "c.yaml"))
    assert sorted(p.name for p in work.iterdir()) == ["c.yaml"]
    # the refusal itself (the CLI adds the interpreter's start-up), in CPU seconds: the machine is shared
    started = time.process_time()
    with pytest.raises(ConfigError):
        load_config(work / "c.yaml")
    assert time.process_time() - started < 1.0


@FAST
@given(text=st.one_of(texts, st.text("{}[]:&*!|>-'\"# \n\tab1", max_size=200)))
def test_any_text_as_a_configuration_is_one_line(tmp_path, text):
    work = fresh(tmp_path, "w")
    result, _ = _config_cli(work, text)
    assert_one_line_error(result)
    assert sorted(p.name for p in work.iterdir()) == ["c.yaml"]


def test_model_name_in_the_config_follows_the_registry_rule():
    with pytest.raises(ConfigError, match=r"registry\.model_name: invalid model name 'a\.\.b'"):
        parse_config(yaml.safe_dump(_with(("registry", "model_name"), "a..b")), "c.yaml", base_dir="configs")


# ---- JSONL rows and data files -----------------------------------------------------------------------------

GOOD_Q = [json.dumps({"id": f"q{i}", "question": f"{i}+1", "answer": str((i + 1) % 10)}) for i in range(5)]


def _is_bad_row(line: str) -> bool:
    if not line.strip():
        return False
    try:
        Question.model_validate_json(line)
    except Exception:
        return True
    return False


bad_rows = st.one_of(
    texts.filter(lambda t: "\n" not in t and "\r" not in t),
    st.sampled_from(
        [
            '{"id": "", "question": "x"}',
            '{"question": "x"}',
            '{"id": "a"}',
            "[1, 2]",
            "null",
            '{"id": "a", "question": "x", "extra": 1}',
            '{"id": 1, "question": "x"}',
            "{",
            '"x"',
        ]
    ),
    st.dictionaries(
        st.sampled_from(["id", "question", "answer", "z"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=3), st.booleans()),
    ).map(json.dumps),
)


def _dcrs(work: Path, questions: Path, candidates: Path) -> tuple[int, str, str]:
    return run_cli(
        "dcrs",
        "--questions",
        str(questions),
        "--candidates",
        str(candidates),
        "--out",
        str(work / "distill.jsonl"),
        "--report",
        str(work / "report.json"),
    )


@FAST
@given(bad=bad_rows, position=st.integers(0, len(GOOD_Q)))
def test_a_bad_question_row_names_file_and_line_and_writes_nothing(tmp_path, bad, position):
    assume(_is_bad_row(bad))
    work = fresh(tmp_path, "w")
    lines = [*GOOD_Q[:position], bad, *GOOD_Q[position:]]
    (work / "q.jsonl").write_text("\n".join(lines) + "\n")
    (work / "c.jsonl").write_text("")
    (work / "distill.jsonl").write_text("previous output\n")
    assert_one_line_error(
        _dcrs(work, work / "q.jsonl", work / "c.jsonl"), f"{work / 'q.jsonl'}:{position + 1}: "
    )
    assert (work / "distill.jsonl").read_text() == "previous output\n"
    assert sorted(p.name for p in work.iterdir()) == ["c.jsonl", "distill.jsonl", "q.jsonl"]


@FAST
@given(bad=bad_rows.map(str.encode) | st.binary(min_size=1, max_size=20).filter(lambda b: b"\n" not in b))
def test_a_bad_candidate_row_names_its_file_and_line(tmp_path, bad):
    with contextlib.suppress(UnicodeDecodeError):
        assume(_is_bad_row(bad.decode("utf-8")))
    work = fresh(tmp_path, "w")
    (work / "q.jsonl").write_text("\n".join(GOOD_Q) + "\n")
    (work / "c.jsonl").write_bytes(b"\n" + bad + b"\n")
    assert_one_line_error(_dcrs(work, work / "q.jsonl", work / "c.jsonl"), f"{work / 'c.jsonl'}:2: ")
    assert sorted(p.name for p in work.iterdir()) == ["c.jsonl", "q.jsonl"]


@pytest.mark.parametrize("which", ["questions", "candidates"])
@pytest.mark.parametrize("kind", ["empty", "blank lines", "directory", "missing"])
def test_dcrs_refuses_empty_directory_and_missing_inputs(tmp_path, which, kind):
    q, c = tmp_path / "q.jsonl", tmp_path / "c.jsonl"
    q.write_text("\n".join(GOOD_Q) + "\n")
    c.write_text(
        json.dumps(
            {
                "id": "q0",
                "teacher": "t",
                "sample": 0,
                "reasoning": "r",
                "answer": "1",
                "confidence": 1.0,
                "tokens": 3,
                "finish_reason": "stop",
            }
        )
        + "\n"
    )
    target = q if which == "questions" else c
    target.unlink()
    if kind == "empty":
        target.write_text("")
    elif kind == "blank lines":
        target.write_text("\n  \n")
    elif kind == "directory":
        target.mkdir()
    (tmp_path / "distill.jsonl").write_text("previous output\n")
    expected = {
        "empty": "empty",
        "blank lines": "empty",
        "directory": "is a directory",
        "missing": "no such file",
    }
    assert_one_line_error(_dcrs(tmp_path, q, c), str(target), expected[kind])
    assert (tmp_path / "distill.jsonl").read_text() == "previous output\n"
    assert not (tmp_path / "report.json").exists()


def drop_root_file_access() -> None:
    """In a child before exec: drop the capabilities by which root reads any file whatever its mode
    (CAP_DAC_OVERRIDE 1, CAP_DAC_READ_SEARCH 2 in linux/capability.h) from the bounding set, so the program
    it runs, still uid 0, has them no more (prctl(PR_CAPBSET_DROP = 24); capabilities(7): root's permitted
    set after execve is its bounding set)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


def run_cli_unprivileged(*argv: str) -> tuple[int, str, str]:
    """The CLI in a child process; as root (CI), without root's power to read files whatever their mode."""
    import subprocess
    import sys

    code = "import sys; from twt.app import cli; sys.exit(cli.main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=drop_root_file_access if os.geteuid() == 0 else None,
    )
    return result.returncode, result.stdout, result.stderr


def test_an_unreadable_input_is_one_line(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text("\n".join(GOOD_Q) + "\n")
    q.chmod(0)
    out = ("--out", str(tmp_path / "distill.jsonl"), "--report", str(tmp_path / "report.json"))
    result = run_cli_unprivileged("dcrs", "--questions", str(q), "--candidates", str(q), *out)
    assert_one_line_error(result, str(q), "permission denied")
    assert [p.name for p in tmp_path.iterdir()] == ["q.jsonl"]  # nothing written


def test_sample_on_an_empty_question_file_keeps_the_candidates_it_had(tmp_path):
    out = tmp_path / "candidates"
    (out / "teacher-large").mkdir(parents=True)
    (out / "teacher-large.jsonl").write_text("previous candidates\n")
    before = tree(tmp_path)
    (tmp_path / "q.jsonl").write_text("")
    result = run_cli("sample", "--questions", str(tmp_path / "q.jsonl"), "--out", str(out), "--quiet")
    assert_one_line_error(result, str(tmp_path / "q.jsonl"), "empty")
    assert tree(tmp_path) == {**before, "q.jsonl": b""}


@pytest.mark.parametrize("flag", ["--metrics", "--gate"])
@pytest.mark.parametrize(
    "text,where",
    [
        ('{"models": {}\n,,\n}', ":2: "),
        ("[1, 2]", ":1: "),
        ("", ":1: "),
        ("\n\n{\n", ":4: "),
        (None, "is a directory"),
    ],
)
def test_publish_json_options_name_the_file_and_line(tmp_path, flag, text, where):
    write_model_dir(tmp_path / "model")
    bad = tmp_path / "bad.json"
    bad.mkdir() if text is None else bad.write_text(text)
    result = run_cli(
        "registry",
        "publish",
        str(tmp_path / "model"),
        "--root",
        str(tmp_path / "reg"),
        "--name",
        "m",
        flag,
        str(bad),
    )
    err = assert_one_line_error(result, str(bad))
    assert where in err and (text is None or flag in err), err
    assert not (tmp_path / "reg").exists()


def test_task_inputs_name_file_and_line(tmp_path):
    from twt.core.records import RecordError
    from twt.steps import steps

    (tmp_path / "report.json").write_text('{\n  "a": 1,\n  "b": nope\n}')
    with pytest.raises(RecordError, match=rf"{tmp_path / 'report.json'}:3: task input: not valid JSON"):
        steps._read_json(tmp_path / "report.json")
    with pytest.raises(RecordError, match="is a directory"):
        steps._read_json(tmp_path)


# ---- teacher backends ---------------------------------------------------------------------------------

SECRET = "sk-test-SECRET-4242"


def _teacher_config(tmp_path: Path, teacher: dict) -> Path:
    data = copy.deepcopy(DEMO)
    data["teachers"] = [{"name": "remote", "k": 1, **teacher}]
    data["compression"] = {"method": "teacher", "teacher": "remote"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "q.jsonl").write_text("\n".join(GOOD_Q) + "\n")
    return tmp_path / "c.yaml"


def _sample(tmp_path: Path, teacher: dict) -> tuple[int, str, str]:
    config = _teacher_config(tmp_path, teacher)
    return run_cli(
        "sample",
        "--config",
        str(config),
        "--questions",
        str(tmp_path / "q.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    )


def test_missing_local_teacher_model_is_one_line(tmp_path):
    err = assert_one_line_error(
        _sample(tmp_path, {"model": "./no-such-model"}), "teacher 'remote'", "no-such-model"
    )
    assert "cannot load" in err


def test_unset_api_key_variable_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("TWT_UNSET_KEY", raising=False)
    teacher = {
        "model": "m",
        "backend": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "TWT_UNSET_KEY",
    }
    assert_one_line_error(_sample(tmp_path, teacher), "teacher 'remote'", "TWT_UNSET_KEY", "not set")


def test_http_401_is_one_line_without_the_key(tmp_path, monkeypatch):
    from fake_openai_server import FakeOpenAIServer

    monkeypatch.setenv("TWT_KEY", SECRET)
    with FakeOpenAIServer() as server:
        server.script = ["401"] * 100
        teacher = {"model": "m", "backend": "openai", "base_url": server.base_url, "api_key_env": "TWT_KEY"}
        err = assert_one_line_error(_sample(tmp_path, teacher), "teacher 'remote'", "HTTP 401")
        assert server.requests and server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
        assert SECRET not in err and "***" in err
        monkeypatch.setenv("TWT_DEBUG", "1")  # the traceback is shown, the key still is not
        from twt.method.teachers import TeacherRequestError

        with pytest.raises(TeacherRequestError) as raised:
            _sample(tmp_path, teacher)
        assert SECRET not in "".join(traceback_lines(raised.value))


def traceback_lines(err: BaseException) -> list[str]:
    import traceback

    return traceback.format_exception(err)


def test_nobody_listening_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = {"model": "m", "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "timeout_s": 2}
    assert_one_line_error(_sample(tmp_path, teacher), "teacher 'remote'", "cannot reach", f"127.0.0.1:{port}")


def test_a_damaged_state_file_names_itself_and_its_line(tmp_path):
    (tmp_path / "q.jsonl").write_text("\n".join(GOOD_Q) + "\n")
    plan = tmp_path / "out" / "teacher-large" / "PLAN.json"
    plan.parent.mkdir(parents=True)
    plan.write_text('{\n  "k": 4,\n  oops\n}')
    result = run_cli(
        "sample",
        "--questions",
        str(tmp_path / "q.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--teacher",
        "teacher-large",
        "--quiet",
    )
    assert_one_line_error(result, f"{plan}:3: PLAN.json: not valid JSON", "start over")
    assert sorted(p.name for p in plan.parent.iterdir()) == ["PLAN.json"]


@pytest.mark.parametrize(
    "argv",
    [
        ["nope"],
        ["registry", "publish", "m"],
        ["registry", "pull", "-x", "--root", "r", "--to", "d"],
        ["sample", "--questions"],
        ["dcrs", "--max-per-question", "many"],
    ],
)
def test_usage_errors_are_one_line_too(tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli(*argv), "--help")
    assert list(tmp_path.iterdir()) == []
