"""Fixtures shared by the end-to-end tests (tests/test_demo.py, tests/test_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from twt.config import default_config_path


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/demo.yaml with 40 training questions, 2 samples per teacher, one epoch per stage and a gate
    that lets any student through (a tiny budget teaches little: this checks the plumbing, not the method)."""
    data = yaml.safe_load(default_config_path().read_text())
    data["task"].update(train_questions=40, eval_questions=60)
    for teacher in data["teachers"]:
        teacher.update(k=2, max_new_tokens=48)
    data["stages"]["common"].update(epochs=1, batch_size=4, max_length=128)
    for stage in ("stage1", "stage2", "stage3"):
        data["stages"][stage].pop("epochs", None)
    data["gate"] = {"min_accuracy": 0.0, "max_accuracy_drop": None, "min_token_reduction": None}
    path = tmp_path_factory.mktemp("config") / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
