"""The three distillation stages: targets, mixing, lineage across stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import distill_rows

from twt.core.records import write_rows
from twt.training.sft import SFTConfig
from twt.training.stages import StageError, mixed_pairs, run_stage, stage_pairs


def test_each_stage_keeps_the_prompt_and_shortens_the_target() -> None:
    row = distill_rows(1)[0]
    (p1, t1), (p2, t2), (p3, t3) = (stage_pairs([row], s)[0] for s in (1, 2, 3))
    assert p1 == p2 == p3 == f"Solve step by step: {row.question}\n"
    assert t1 == f"{row.reasoning}\nAnswer: {row.answer}"
    assert t2 == f"{row.compressed_reasoning}\nAnswer: {row.answer}"
    assert t3 == f"Answer: {row.answer}"
    assert len(t1) > len(t2) > len(t3)


def test_duplicates_are_trained_once_and_mixing_adds_the_previous_format() -> None:
    rows = distill_rows(20)
    twice = rows + [r.model_copy(update={"source": "teacher-verbose#1"}) for r in rows]
    assert len(stage_pairs(twice, 3)) == 20
    pairs, mixed = mixed_pairs(rows, 3, 0.25, seed=0)
    assert mixed == 5 and len(pairs) == 25
    assert sum(not t.startswith("Answer:") for _, t in pairs) == 5  # the extra ones are stage-2 targets
    assert mixed_pairs(rows, 3, 0.25, seed=0) == (pairs, 5)
    assert mixed_pairs(rows, 1, 0.0) == (stage_pairs(rows, 1), 0)


def test_stage_2_needs_compressed_reasoning(tmp_path: Path, base_model: Path) -> None:
    rows = [r.model_copy(update={"compressed_reasoning": None}) for r in distill_rows(3)]
    write_rows(tmp_path / "rows.jsonl", rows)
    with pytest.raises(StageError, match=r"no compressed_reasoning.*twt compress"):
        run_stage(2, tmp_path / "rows.jsonl", base_model, tmp_path / "s2", progress=False)
    with pytest.raises(ValueError, match="no stage 4; stages are 1, 2, 3"):
        run_stage(4, tmp_path / "rows.jsonl", base_model, tmp_path / "s4", progress=False)


def test_three_stages_chain_with_lineage(tmp_path: Path, base_model: Path) -> None:
    write_rows(tmp_path / "rows.jsonl", distill_rows())
    config = SFTConfig(epochs=2, batch_size=4, max_length=64, learning_rate=3e-3)
    parent = base_model
    for stage in (1, 2, 3):
        result = run_stage(
            stage,
            tmp_path / "rows.jsonl",
            parent,
            tmp_path / f"stage{stage}",
            config,
            mix_previous=0.2 if stage > 1 else 0.0,
            extra_lineage={"teachers": ["teacher-large"]},
            progress=False,
        )
        assert result["training"]["final_loss"] < result["training"]["first_loss"]
        parent = tmp_path / f"stage{stage}"
    lineage = json.loads((tmp_path / "stage3" / "twt.json").read_text())
    assert [s["stage"] for s in lineage["stages"]] == [1, 2, 3]
    assert [s["parent"] for s in lineage["stages"]] == [
        str(base_model),
        *(str(tmp_path / f"stage{i}") for i in (1, 2)),
    ]
    assert lineage["stages"][2]["mixed_previous"] == round(0.2 * 48)
    assert lineage["teachers"] == ["teacher-large"] and len(lineage["stages"][0]["data_sha256"]) == 64
