"""The stepwise 'cts' schedule scores with the configured compression.condition (it used to ignore it)."""

from __future__ import annotations

import yaml

from twt.core.load import default_config_path, parse_config
from twt.steps.settings import stage_settings


def _config(condition: str):
    data = yaml.safe_load(default_config_path().read_text())
    data["internalize"] = {"schedule": "cts"}
    data["compression"] = {"method": "cts", "condition": condition}
    return parse_config(yaml.safe_dump(data), "c.yaml", base_dir=default_config_path().parent)


def test_the_cts_schedule_takes_the_compression_condition() -> None:
    for condition in ("question", "question_answer"):
        step = stage_settings(_config(condition), 2)
        assert step.condition == condition
        assert step.internalize.schedule_config(step.training.seed, step.condition).condition == condition
    assert stage_settings(_config("question"), 1).condition is None  # stage 1 trains once
