"""`twt demo`, `twt sample` and `twt dcrs` end to end on the committed tiny models (small question counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twt.app.cli import main
from twt.core.records import Candidate, DistillRow, read_rows


def demo_args(config: Path, work: Path) -> list[str]:
    """``twt demo`` in this process (the resumable runner) on ``config``, artifacts in ``work``."""
    return ["demo", "--runner", "direct", "--config", str(config), "--workdir", str(work)]


@pytest.fixture(scope="module")
def demo_run(small_config: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo run once on the small configuration: (work directory, what it printed)."""
    import contextlib
    import io

    work = tmp_path_factory.mktemp("demo") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(demo_args(small_config, work)) == 0
    return work, printed.getvalue()


def test_demo_end_to_end_and_resumes(small_config: Path, demo_run: tuple[Path, str]) -> None:
    work, out = demo_run
    assert "acc. reasoning" in out and "DCRS" in out
    assert "gate: PROMOTE stage" in out and "students considered" in out
    summary = json.loads((work / "demo.json").read_text())
    assert summary["trained_tiny_models"] == []  # the committed package data was used
    for name in ("teacher-large", "teacher-verbose", "teacher-noisy"):
        scores = summary["teachers"][name]
        assert scores["solve"]["accuracy"] > scores["direct"]["accuracy"]
        assert scores["solve"]["mean_output_tokens"] > scores["direct"]["mean_output_tokens"]
    totals = summary["dcrs"]["candidates"]
    assert totals["in"] == 3 * 40 * 2
    assert totals["in"] == totals["rejected_quality"] + totals["rejected_diversity"] + totals["kept"]
    rows = list(read_rows(work / "dcrs" / "distill.jsonl", DistillRow))
    assert len(rows) == totals["kept"] > 0
    gold = {q["id"]: q["answer"] for q in map(json.loads, (work / "questions" / "train.jsonl").open())}
    # unsupervised: the vote outvotes each teacher's own slips (measured 99.8% of kept rows right at 2,000)
    assert sum(row.answer == gold[row.id] for row in rows) >= 0.95 * len(rows)

    for stage in (1, 2, 3):
        lineage = json.loads((work / f"stage{stage}" / "twt.json").read_text())
        assert [s["stage"] for s in lineage["stages"]] == list(range(1, stage + 1))
    assert set(summary["evaluation"]) == {"stage1", "stage2", "stage3", "student-base"} | {
        "teacher-large",
        "teacher-verbose",
        "teacher-noisy",
    }
    assert summary["gate"]["passed"] and summary["promoted"]["verified"]
    pulled = Path(summary["promoted"]["pulled_to"])
    student = work / summary["gate"]["student"]
    assert (pulled / "model.safetensors").read_bytes() == (student / "model.safetensors").read_bytes()
    assert "## Gate: PASSED" in (work / "eval" / "report.md").read_text()

    # a second run finds every step finished: sampling, training and evaluation are not redone
    outputs = [*(work / "candidates").rglob("shard-*.jsonl"), *work.glob("stage*/model.safetensors")]
    before = {p: p.stat().st_mtime_ns for p in [*outputs, *(work / "eval" / "models").iterdir()]}
    assert len(before) > 6
    assert main(demo_args(small_config, work)) == 0
    assert before == {p: p.stat().st_mtime_ns for p in before}


def test_eval_gate_and_registry_commands(small_config: Path, demo_run, tmp_path: Path, capsys) -> None:
    work, _ = demo_run
    run = ["--config", str(small_config), "--workdir", str(work)]
    assert main(["eval", *run, "--quiet"]) == 0 and "| stage3 | student |" in capsys.readouterr().out
    assert main(["gate", *run]) == 0 and capsys.readouterr().out.startswith("PASSED: stage")
    root = str(work / "registry")
    assert main(["registry", "list", "--root", root]) == 0 and capsys.readouterr().out == "twt-student\n"
    assert main(["registry", "list", "twt-student", "--root", root]) == 0
    assert capsys.readouterr().out.startswith("twt-student@1 ")
    assert main(["registry", "show", "twt-student@latest", "--root", root]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "1" and shown["gate"]["passed"] and "stage1" in shown["metrics"]
    assert main(["registry", "pull", "twt-student@1", "--root", root, "--to", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "README.md").read_text().count("twt-student") >= 1
    # publishing the same version again is refused in one line
    student = work / shown["gate"]["student"]
    code = main(
        ["registry", "publish", str(student), "--root", root, "--name", "twt-student", "--version", "1"]
    )
    assert code == 2 and "already exists" in capsys.readouterr().err


def test_sample_and_dcrs_commands(small_config: Path, tmp_path: Path, capsys) -> None:
    assert main(["task", "questions", "--out", str(tmp_path / "q"), "--train", "12", "--eval", "5"]) == 0
    questions = tmp_path / "q" / "train.jsonl"
    common = ["--config", str(small_config), "--questions", str(questions)]
    teachers = ["--teacher", "teacher-large", "teacher-noisy"]
    code = main(["sample", *common, "--out", str(tmp_path / "c"), *teachers, "--shard-size", "5", "--quiet"])
    assert code == 0
    merged = [tmp_path / "c" / name / "candidates.jsonl" for name in ("teacher-large", "teacher-noisy")]
    assert [len(list(read_rows(p, Candidate))) for p in merged] == [24, 24]
    assert not (tmp_path / "c" / "teacher-verbose").exists()
    capsys.readouterr()
    outputs = ["--out", str(tmp_path / "d.jsonl"), "--report", str(tmp_path / "r.json")]
    code = main(["dcrs", *common, "--candidates", *map(str, merged), *outputs, "--max-per-question", "1"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidates"]["in"] == 48 and set(report["teachers"]) == {"teacher-large", "teacher-noisy"}
    assert report["candidates"]["kept"] <= 12  # at most one per question
    assert json.loads((tmp_path / "r.json").read_text())["thresholds"]["max_per_question"] == 1


def test_bad_input_is_one_line_without_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a", "question": "1+2"}\n{"id": "b", "question": 3}\n')
    code = main(["sample", "--questions", str(bad), "--out", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("twt: error: ") and f"{bad}:2" in err and "Traceback" not in err
    assert main(["demo", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_model_loading_draws_no_progress_bar_in_the_demo(capfd) -> None:
    """transformers' "Loading weights" bars stay out of the demo's console (and its kfp.local tasks' output,
    through the environment); warnings are not touched, and both switches are restored afterwards."""
    import os
    import warnings

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from twt.app.demo import HUB_BARS_ENV, quiet_model_loading
    from twt.core.load import data_dir

    before = (hf_logging.is_progress_bar_enabled(), os.environ.get(HUB_BARS_ENV))
    with quiet_model_loading(), pytest.warns(UserWarning, match="still shown"):
        assert os.environ[HUB_BARS_ENV] == "1"
        AutoModelForCausalLM.from_pretrained(data_dir() / "tiny" / "student-base")
        warnings.warn("still shown", UserWarning, stacklevel=1)
    assert "Loading weights" not in capfd.readouterr().err
    assert (hf_logging.is_progress_bar_enabled(), os.environ.get(HUB_BARS_ENV)) == before
