"""Stepwise internalisation: each schedule's token counts per phase, smoothing, the optimiser hook, resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from twt.core.records import DistillRow, write_rows
from twt.core.schema import ConfigError, InternalizeConfig
from twt.embedded.task import make_questions, reasoning_of
from twt.training.internalize import (
    PHASES_LOG,
    InternalizeError,
    kept_positions,
    n_phases,
    phase_rows,
    removal_order,
    removed_count,
    run_internalize,
    smoothing_offset,
)
from twt.training.sft import SFTConfig


def test_left_schedule_removes_a_fixed_number_per_phase_from_the_left() -> None:
    config = InternalizeConfig(schedule="left", tokens_per_phase=4)
    ids = [list(range(10)), list(range(100, 103)), list(range(200, 208))]
    assert n_phases([len(r) for r in ids], config) == 3  # ceil(10 / 4): the last phase leaves nothing
    assert [len(r) for r in phase_rows(ids, 1, config)] == [6, 0, 4]
    assert [len(r) for r in phase_rows(ids, 2, config)] == [2, 0, 0]
    assert [len(r) for r in phase_rows(ids, 3, config)] == [0, 0, 0]
    assert phase_rows(ids, 1, config)[0] == [4, 5, 6, 7, 8, 9]  # from the left, order kept
    assert phase_rows(ids, 2, config)[2] == []


def test_cts_schedule_decays_the_ratio_and_drops_the_least_important_first() -> None:
    config = InternalizeConfig(schedule="cts", ratios=[0.75, 0.5, 0.25, 0.0])
    scores = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4]  # token i's importance
    ids = [list(range(8))]
    assert n_phases([8], config) == 4
    kept = [phase_rows(ids, p, config, [scores])[0] for p in (1, 2, 3, 4)]
    assert [len(k) for k in kept] == [6, 4, 2, 0]  # round(α · 8)
    assert kept[0] == [0, 2, 3, 4, 6, 7]  # 0.1 and 0.2 went first
    assert kept[1] == [0, 2, 4, 6]
    assert kept[2] == [0, 6]
    # every phase keeps a subset of the previous one: the least important tokens go first, for good
    assert all(set(b) <= set(a) for a, b in itertools.pairwise(kept))
    # ties remove the later token first, so a phase keeps what twt.method.cts.select_top_ratio keeps
    assert removal_order(4, "cts", [1.0, 1.0, 1.0, 1.0]) == [3, 2, 1, 0]
    assert [removed_count(5, p, config) for p in (1, 2, 3, 4)] == [1, 3, 4, 5]  # kept 4, 2 (2.5 → 2), 1, 0


def test_smoothing_removes_a_few_more_tokens_from_a_few_rows() -> None:
    smooth = InternalizeConfig(schedule="left", tokens_per_phase=2, smoothing=1.0)
    offsets = [smoothing_offset(smooth, 1, row, seed=3) for row in range(2000)]
    share_zero = offsets.count(0) / len(offsets)
    assert 0.58 < share_zero < 0.68  # P(0) = 1 − e^{−1} ≈ 0.632
    assert max(offsets) >= 3
    assert offsets == [smoothing_offset(smooth, 1, row, seed=3) for row in range(2000)]  # seeded
    assert offsets != [smoothing_offset(smooth, 1, row, seed=4) for row in range(2000)]
    # λ = 4 (the paper's): almost every row removes exactly the phase's count
    paper = InternalizeConfig(schedule="left", tokens_per_phase=2, smoothing=4.0)
    assert sum(smoothing_offset(paper, 1, row) == 0 for row in range(2000)) / 2000 > 0.97
    assert all(smoothing_offset(InternalizeConfig(schedule="left"), 1, row) == 0 for row in range(100))
    # capped at the row's length: a 3-token row removes 2 + its offset from the left, all 3 when that is more
    offset = {row: smoothing_offset(smooth, 1, row, seed=3) for row in range(200)}
    assert {row: kept_positions(3, 1, row, smooth, seed=3) for row in range(200)} == {
        row: list(range(min(3, 2 + o), 3)) for row, o in offset.items()
    }
    assert min(offset.values()) == 0 and max(offset.values()) >= 2  # rows on both sides of the cap
    assert min(len(kept_positions(10, 1, row, smooth, seed=3)) for row in range(2000)) < 8


def _with_internalize(section: dict):
    """The packaged configuration with this ``internalize`` section, loaded as a file would be."""
    import yaml

    from twt.core.load import default_config_path, parse_config

    data = yaml.safe_load(default_config_path().read_text())
    data["internalize"] = section
    return parse_config(yaml.safe_dump(data), "c.yaml", base_dir=default_config_path().parent)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"schedule": "right"}, r"internalize.schedule: Input should be 'none', 'left' or 'cts'"),
        (
            {"schedule": "cts", "ratios": [0.5, 0.25]},
            r"ratios: must lie in \[0, 1\) and end at 0, got \[0.5, 0.25\]",
        ),
        ({"schedule": "cts", "ratios": [0.5, 0.6, 0.0]}, r"internalize.ratios: must decrease strictly"),
        ({"schedule": "cts", "ratios": [1.0, 0.0]}, r"internalize.ratios: must lie in \[0, 1\)"),
        (
            {"tokens_per_phase": 0},
            r"internalize.tokens_per_phase: Input should be greater than or equal to 1",
        ),
        (
            {"updates_per_phase": 0},
            r"internalize.updates_per_phase: Input should be greater than or equal to 1",
        ),
        ({"smoothing": 0.0}, r"internalize.smoothing: Input should be greater than 0"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(section: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _with_internalize({"schedule": "left", **section})
    with pytest.raises(ValidationError):
        InternalizeConfig(**{"schedule": "left", **section})


def test_a_schedule_without_phases_is_not_run(tmp_path: Path) -> None:
    with pytest.raises(InternalizeError, match="schedule 'none' has no phases"):
        run_internalize(tmp_path / "rows.jsonl", tmp_path, tmp_path / "out", InternalizeConfig(), SFTConfig())


def _rows(n: int) -> list[DistillRow]:
    questions = make_questions(n, seed=5, split="train", weights=(0, 1))
    return [
        DistillRow(
            id=q.id, question=q.question, reasoning=reasoning_of(q.question), answer=q.answer, source="t"
        )
        for q in questions
    ]


def test_run_trains_every_phase_logs_it_and_resumes(tmp_path: Path, base_model: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    write_rows(rows, _rows(24))  # two operations: "a+b=c;c*d=e", 11 tokens
    config = InternalizeConfig(
        schedule="left", tokens_per_phase=6, updates_per_phase=2, reset_optimizer=False
    )
    sft = SFTConfig(batch_size=4, learning_rate=1e-3, device="cpu")
    seen: list[tuple[str, float, int]] = []
    out = tmp_path / "stage2"
    result = run_internalize(
        rows,
        base_model,
        out,
        config,
        sft,
        evaluate=lambda model: {"accuracy": 0.5, "mean_output_tokens": float(len(model.name))},
        log_metric=lambda name, value, step: seen.append((name, value, step)),
        progress=False,
    )
    phases = [json.loads(line) for line in (out / PHASES_LOG).read_text().splitlines()]
    assert [p["phase"] for p in phases] == [1, 2] == [p["phase"] for p in result["phases"]]
    assert [p["kept_tokens_mean"] for p in phases] == [5.0, 0.0]
    assert phases[-1]["rows_without_reasoning"] == 24 and phases[-1]["last"]
    assert all(p["training"]["updates"] == 2 for p in phases)
    assert [s for n, _, s in seen if n == "internalize_accuracy"] == [1, 2]  # one metric step per phase
    record = json.loads((out / "twt.json").read_text())
    assert record["internalize"]["phase"] == 2 and record["stage"] == 2
    assert (out / "model.safetensors").is_file() and not (out / ".phases").exists()
    # a finished run is not trained again
    again = run_internalize(rows, base_model, out, config, sft, progress=False)
    assert again["phases"] == result["phases"]


def test_optimizer_state_hook_carries_adam_moments(tmp_path: Path, base_model: Path) -> None:
    from twt.training.sft import train_sft

    pairs = [("Solve step by step: 1+2\n", "1+2=3\nAnswer: 3")] * 8
    state = tmp_path / "opt.pt"
    sft = SFTConfig(updates=2, batch_size=2, device="cpu")
    train_sft(pairs, base_model, tmp_path / "a", sft, progress=False, optimizer_state=state)
    first = torch.load(state, weights_only=False)["state"]
    assert first and all(int(s["step"]) == 2 for s in first.values())
    train_sft(pairs, tmp_path / "a", tmp_path / "b", sft, progress=False, optimizer_state=state)
    second = torch.load(state, weights_only=False)["state"]
    assert second.keys() == first.keys()
    assert all(int(s["step"]) == 4 for s in second.values())  # moments continued, not restarted


def test_stage_2_runs_the_configured_schedule(tmp_path: Path, base_model: Path) -> None:
    import yaml

    from twt.core.load import default_config_path, parse_config
    from twt.steps import steps
    from twt.steps.settings import stage_settings

    data = yaml.safe_load(default_config_path().read_text())
    data["internalize"] = {"schedule": "left", "tokens_per_phase": 8, "updates_per_phase": 1}
    data["stages"]["common"].update(batch_size=4)
    config = parse_config(yaml.safe_dump(data), "test", base_dir=default_config_path().parent)
    rows = tmp_path / "rows.jsonl"
    write_rows(rows, _rows(8))
    logged: dict[str, float] = {}
    result = steps.distill_stage(
        stage_settings(config, 2),
        2,
        rows,
        base_model,
        tmp_path / "stage2",
        progress=False,
        log_metric=logged.__setitem__,
    )
    assert [p["kept_tokens_mean"] for p in result["phases"]] == [3.0, 0.0]  # 11 tokens: 8 removed, then all
    assert logged["phases"] == 2 and "internalize_kept_tokens_phase2" in logged
    lineage = json.loads((tmp_path / "stage2" / "twt.json").read_text())
    assert [s["stage"] for s in lineage["stages"]] == [2] and lineage["internalize"]["schedule"] == "left"
    data["internalize"] = {"schedule": "cts", "ratios": [0.5, 0.25]}
    with pytest.raises(ConfigError, match="internalize"):
        parse_config(yaml.safe_dump(data), "test", base_dir=default_config_path().parent)


def test_the_cts_schedule_runs_with_its_condition_and_window_and_refuses_without(
    tmp_path: Path, base_model: Path
) -> None:
    rows = tmp_path / "rows.jsonl"
    write_rows(rows, _rows(8))
    config = InternalizeConfig(schedule="cts", ratios=[0.5, 0.0], updates_per_phase=1)
    sft = SFTConfig(batch_size=4, learning_rate=1e-3, device="cpu")
    with pytest.raises(InternalizeError, match="condition and window"):
        run_internalize(rows, base_model, tmp_path / "none", config, sft, progress=False)
    out = tmp_path / "stage2"
    result = run_internalize(
        rows, base_model, out, config, sft, condition="question", window=8, progress=False
    )
    assert [p["phase"] for p in result["phases"]] == [1, 2] and result["phases"][-1]["kept_tokens_mean"] == 0
    recorded = json.loads((out / "twt.json").read_text())["internalize"]
    assert (recorded["condition"], recorded["window"]) == ("question", 8)
