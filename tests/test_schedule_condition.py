"""The stepwise 'cts' schedule scores with the configured compression.condition and compression.window
(it used to ignore both: the twin it read them from kept its own defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from twt.core.load import default_config_path, parse_config
from twt.core.records import DistillRow, write_rows
from twt.steps import steps
from twt.steps.settings import StageSettings, stage_settings
from twt.training import internalize


def _config(condition: str, window: int = 512):
    data = yaml.safe_load(default_config_path().read_text())
    data["internalize"] = {"schedule": "cts"}
    data["compression"] = {"method": "cts", "condition": condition, "window": window}
    return parse_config(yaml.safe_dump(data), "c.yaml", base_dir=default_config_path().parent)


def _scored_with(step: StageSettings, rows: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int]:
    """The condition and window the 'cts' schedule's token scoring sees when stage 2 runs from these
    settings."""
    seen: list[tuple[str, int]] = []

    def scores(rows, reference, tokenizer, condition, window, templates):
        seen.append((condition, window))
        raise RuntimeError("scored")

    monkeypatch.setattr(internalize, "cts_scores", scores)
    monkeypatch.setattr("twt.method.cts.load_reference", lambda model, device: (None, None))
    with pytest.raises(RuntimeError, match="scored"):
        steps.distill_stage(step, 2, rows, "base", rows.parent / "stage2", progress=False)
    return seen[0]


def test_the_cts_schedule_takes_the_compression_condition_and_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = tmp_path / "rows.jsonl"
    write_rows(rows, [DistillRow(id="q", question="1+2", reasoning="1+2=3", answer="3", source="t")])
    for condition, window in (("question", 64), ("question_answer", 256)):
        step = stage_settings(_config(condition, window), 2)
        assert (step.condition, step.window) == (condition, window)
        assert _scored_with(step, rows, monkeypatch) == (condition, window)
    first = stage_settings(_config("question"), 1)
    assert first.condition is None and first.window is None  # stage 1 trains once
