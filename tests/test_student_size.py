"""Student depth and width as settings: a fresh tiny student of the configured size trains stage 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from twt.core.load import default_config_path, parse_config
from twt.core.records import DistillRow, write_rows
from twt.core.schema import ConfigError
from twt.embedded.task import make_questions, reasoning_of
from twt.steps import steps
from twt.steps.settings import stage_settings


def _config(**student):
    data = yaml.safe_load(default_config_path().read_text())
    data["student"].update(student)
    data["stages"]["common"].update(batch_size=2)
    data["stages"]["stage1"] = {"updates": 2}
    return parse_config(yaml.safe_dump(data), "test", base_dir=default_config_path().parent)


@pytest.mark.slow  # builds the student with the packaged recipe: 300 steps (~2 min on 2 busy cores)
def test_stage_1_builds_and_trains_a_student_of_the_configured_size(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    questions = make_questions(6, seed=3, split="train")
    write_rows(
        rows,
        [
            DistillRow(
                id=q.id, question=q.question, reasoning=reasoning_of(q.question), answer=q.answer, source="t"
            )
            for q in questions
        ],
    )
    settings = stage_settings(_config(hidden=32, layers=3), 1)
    steps.distill_stage(settings, 1, rows, None, tmp_path / "stage1", progress=False)
    built = json.loads((tmp_path / "student-base-32x3" / "twt.json").read_text())
    assert (built["spec"]["hidden"], built["spec"]["layers"]) == (32, 3)
    trained = json.loads((tmp_path / "stage1" / "config.json").read_text())
    assert (trained["hidden_size"], trained["num_hidden_layers"]) == (32, 3)
    lineage = json.loads((tmp_path / "stage1" / "twt.json").read_text())
    assert lineage["stages"][0]["parent"] == str(tmp_path / "student-base-32x3")


def test_size_needs_both_settings() -> None:
    with pytest.raises(ConfigError, match="hidden and layers go together"):
        _config(layers=4)
    assert _config().student.layers is None
