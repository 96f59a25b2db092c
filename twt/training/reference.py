"""CTS's reference model: a causal LM trained apart on answer-conditioned reasoning, cached by its inputs.

    model_dir = train_reference("dcrs/distill.jsonl", "tiny/student-base", "reference", ReferenceConfig())

The CTS paper (arXiv 2505.17827) scores reasoning tokens with a reference model fine-tuned on high-quality
reasoning *given the answer*, so that ``NLL(x_i | x_<i) − NLL(x_i | question, answer, x_<i)`` singles out
the tokens the answer makes predictable. Here it is trained on the DCRS-selected rows, one pair per row:

    prompt   twt.method.cts.condition_text(row, "question_answer")  "Solve step by step: 7+5*3\\nAnswer: 6\\n"
    target   the row's reasoning                                   "7+5=2;2*3=6"

with its own settings (``twt.core.schema.ReferenceConfig``: updates, learning rate, seed, ...), through
``twt.training.sft.train_sft``. The result is an artifact: ``out_dir/twt.json`` records the data's sha256
and the settings, and a second call with the same data and settings returns the cached model without
training.
"""

from __future__ import annotations

import os
from pathlib import Path

from twt.core.prompts import PromptTemplates
from twt.core.records import DistillRow, read_json, read_rows
from twt.core.schema import ReferenceConfig
from twt.core.store import sha256_file
from twt.method.cts import condition_text


def reference_pairs(
    rows: list[DistillRow], templates: PromptTemplates | None = None
) -> list[tuple[str, str]]:
    """Distinct (question + answer, reasoning) pairs, in row order."""
    return list(
        dict.fromkeys(
            (condition_text(r, "question_answer", templates), r.reasoning) for r in rows if r.reasoning
        )
    )


def cache_key(rows_path: str | os.PathLike, base_model: str | os.PathLike, settings: ReferenceConfig) -> dict:
    """What the cached model was trained from: the data's sha256, the base model, the training settings."""
    training = settings.model_dump(exclude={"train", "base_model"})
    return {"data_sha256": sha256_file(rows_path), "base_model": str(base_model), **training}


def train_reference(
    rows_path: str | os.PathLike,
    base_model: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: ReferenceConfig | None = None,
    *,
    templates: PromptTemplates | None = None,
    progress: bool = True,
) -> Path:
    """The reference model for ``rows_path`` in ``out_dir``: trained from ``base_model`` (the caller resolves
    ``settings.base_model``), or reused when ``out_dir`` already holds one trained on the same data with the
    same settings."""
    from twt.training.sft import SFTConfig, TrainError, train_sft

    settings = settings or ReferenceConfig()
    out = Path(out_dir)
    key = cache_key(rows_path, base_model, settings)
    record = out / "twt.json"
    cached = (out / "model.safetensors").is_file() and record.is_file()
    if cached and read_json(record, "reference model record", dict).get("reference") == key:
        return out
    pairs = reference_pairs(list(read_rows(rows_path, DistillRow)), templates)
    if not pairs:
        raise TrainError(f"{rows_path}: no rows with reasoning to train the reference model on")
    sft = SFTConfig(
        updates=settings.updates,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
        seed=settings.seed,
    )
    train_sft(
        pairs, base_model, out, sft, lineage={"kind": "cts-reference", "reference": key}, progress=progress
    )
    return out
