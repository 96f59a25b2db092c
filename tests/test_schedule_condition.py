"""The stepwise 'cts' schedule scores with the configured compression.condition (it used to ignore it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from twt.core.load import default_config_path, parse_config
from twt.core.records import DistillRow, write_rows
from twt.steps import steps
from twt.steps.settings import StageSettings, stage_settings
from twt.training import internalize


def _config(condition: str):
    data = yaml.safe_load(default_config_path().read_text())
    data["internalize"] = {"schedule": "cts"}
    data["compression"] = {"method": "cts", "condition": condition}
    return parse_config(yaml.safe_dump(data), "c.yaml", base_dir=default_config_path().parent)


def _scored_with(step: StageSettings, rows: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The condition the 'cts' schedule's token scoring sees when stage 2 runs from these settings."""
    seen: list[str] = []

    def scores(rows, reference, tokenizer, condition, templates):
        seen.append(condition)
        raise RuntimeError("scored")

    monkeypatch.setattr(internalize, "cts_scores", scores)
    monkeypatch.setattr("twt.method.cts.load_reference", lambda model, device: (None, None))
    with pytest.raises(RuntimeError, match="scored"):
        steps.distill_stage(step, 2, rows, "base", rows.parent / "stage2", progress=False)
    return seen[0]


def test_the_cts_schedule_takes_the_compression_condition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = tmp_path / "rows.jsonl"
    write_rows(rows, [DistillRow(id="q", question="1+2", reasoning="1+2=3", answer="3", source="t")])
    for condition in ("question", "question_answer"):
        step = stage_settings(_config(condition), 2)
        assert step.condition == condition
        assert _scored_with(step, rows, monkeypatch) == condition
    assert stage_settings(_config("question"), 1).condition is None  # stage 1 trains once
