"""Habitual reasoning distillation: three SFT stages, each starting from the model the last one made.

    run_stage(1, "dcrs/distill.jsonl", "tiny/student-base", "stage1", SFTConfig())
    run_stage(2, "compress/rows.jsonl", "stage1", "stage2", SFTConfig(), mix_previous=0.2)
    run_stage(3, "compress/rows.jsonl", "stage2", "stage3", SFTConfig(), mix_previous=0.2)

Every stage asks the same question the same way (the teachers' ``solve`` prompt); only the target changes:
  stage 1  full reasoning, then ``Answer: <a>``         (``DistillRow.reasoning``)
  stage 2  compressed reasoning, then ``Answer: <a>``   (``DistillRow.compressed_reasoning``)
  stage 3  ``Answer: <a>`` alone
so the student keeps answering the question it was always asked, with less and less written reasoning: the
reasoning becomes habit. ``mix_previous`` adds ``round(share × n)`` examples of the previous stage's format
(drawn without replacement, seeded) to the ``n`` examples of this stage, as curricula do against forgetting.
Identical (prompt, target) pairs are trained once: several kept reasonings of one question give one stage-3
example, not several copies.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

from twt.core.prompts import PromptTemplates, completion
from twt.core.records import DistillRow, read_json, read_rows
from twt.core.schema import StageConfig, check_stage, schema_default
from twt.core.store import sha256_file
from twt.training.sft import SFTConfig, train_sft


class StageError(ValueError):
    """Rows that cannot feed a stage (e.g. stage 2 without compressed reasoning, or no rows at all)."""


def stage_target(row: DistillRow, stage: int) -> str:
    """The completion a stage trains on for one row."""
    if check_stage(stage) == 1:
        return completion(row.reasoning, row.answer)
    if stage == 2:
        if row.compressed_reasoning is None:
            raise StageError(f"row {row.id!r} has no compressed_reasoning: run `twt compress` before stage 2")
        return completion(row.compressed_reasoning, row.answer)
    return completion(None, row.answer)


def stage_pairs(
    rows: Sequence[DistillRow], stage: int, templates: PromptTemplates | None = None
) -> list[tuple[str, str]]:
    """Distinct (prompt, target) pairs of a stage, in row order."""
    templates = templates or PromptTemplates()
    pairs = ((templates.render("solve", question=row.question), stage_target(row, stage)) for row in rows)
    return list(dict.fromkeys(pairs))


def mixed_pairs(
    rows: Sequence[DistillRow],
    stage: int,
    mix_previous: float,
    seed: int = 0,
    templates: PromptTemplates | None = None,
) -> tuple[list[tuple[str, str]], int]:
    """This stage's n pairs plus ``round(mix_previous × n)`` of the previous stage's: (pairs, n mixed)."""
    pairs = stage_pairs(rows, stage, templates)
    if stage == 1 or mix_previous <= 0:
        return pairs, 0
    own = set(pairs)
    previous = [p for p in stage_pairs(rows, stage - 1, templates) if p not in own]
    n = min(len(previous), round(mix_previous * len(pairs)))
    extra = random.Random(f"mix:{stage}:{seed}").sample(previous, n)
    return pairs + extra, n


def parent_stages(model_dir: str | os.PathLike) -> list[dict]:
    """The stage records of the model a stage starts from (empty for a base model)."""
    record = Path(model_dir) / "twt.json"
    if not record.is_file():
        return []
    return list(read_json(record).get("stages", []))


def run_stage(
    stage: int,
    rows_path: str | os.PathLike,
    base_model: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: SFTConfig | None = None,
    *,
    mix_previous: float = schema_default(StageConfig, "mix_previous"),
    templates: PromptTemplates | None = None,
    extra_lineage: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train stage ``stage`` from ``base_model`` on the rows of ``rows_path``; the model goes to ``out_dir``.

    ``out_dir/twt.json`` records the lineage: every earlier stage of the parent, then this one (data file and
    its sha256, rows, pairs, share mixed in), plus ``extra_lineage`` (teachers, DCRS report, compression).
    """
    if check_stage(stage) == 1 and mix_previous:
        raise StageError("stage 1 has no previous stage to mix in (mix_previous must be 0)")
    config = config or SFTConfig()
    rows_path = Path(rows_path)
    rows = list(read_rows(rows_path, DistillRow))
    if not rows:
        raise StageError(f"{rows_path}: no rows to train stage {stage} on")
    pairs, mixed = mixed_pairs(rows, stage, mix_previous, config.seed, templates)
    record = {
        "stage": stage,
        "model": str(out_dir),
        "parent": str(base_model),
        "data": str(rows_path),
        "data_sha256": sha256_file(rows_path),
        "rows": len(rows),
        "pairs": len(pairs),
        "mixed_previous": mixed,
    }
    lineage = {**(extra_lineage or {}), "stage": stage, "stages": [*parent_stages(base_model), record]}
    summary = train_sft(pairs, base_model, out_dir, config, lineage=lineage, progress=progress)
    return {**record, "training": summary}
