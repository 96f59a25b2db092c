"""CTS's own reference model: answer-conditioned pairs, training, the cache, and its use for scoring."""

from __future__ import annotations

import json
from pathlib import Path

from twt.core.records import DistillRow, read_rows, write_rows
from twt.core.schema import CompressionConfig, ReferenceConfig
from twt.embedded.task import make_questions, reasoning_of
from twt.method.compress import run_compress
from twt.training.reference import reference_pairs, train_reference


def _rows(n: int) -> list[DistillRow]:
    return [
        DistillRow(
            id=q.id, question=q.question, reasoning=reasoning_of(q.question), answer=q.answer, source="t"
        )
        for q in make_questions(n, seed=7, split="train")
    ]


def test_pairs_condition_on_question_and_answer() -> None:
    row = _rows(1)[0]
    twice = [row, row.model_copy(update={"source": "u"}), row.model_copy(update={"reasoning": ""})]
    assert reference_pairs(twice) == [
        (f"Solve step by step: {row.question}\nAnswer: {row.answer}\n", row.reasoning)
    ]


def test_trained_once_cached_by_data_and_settings_then_used_by_cts(
    tmp_path: Path,
    base_model: Path,
) -> None:
    rows = tmp_path / "distill.jsonl"
    write_rows(rows, _rows(16))
    settings = ReferenceConfig(updates=3, batch_size=2)
    out = train_reference(rows, base_model, tmp_path / "reference", settings, progress=False)
    record = json.loads((out / "twt.json").read_text())
    assert record["kind"] == "cts-reference" and record["training"]["updates"] == 3
    assert record["reference"]["updates"] == 3 and len(record["reference"]["data_sha256"]) == 64
    weights = (out / "model.safetensors").stat().st_mtime_ns
    assert train_reference(rows, base_model, out, settings, progress=False) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == weights  # cached: not trained again
    train_reference(rows, base_model, out, ReferenceConfig(updates=4, batch_size=2), progress=False)
    assert json.loads((out / "twt.json").read_text())["training"]["updates"] == 4  # settings changed
    report = run_compress(
        rows,
        tmp_path / "c.jsonl",
        tmp_path / "r.json",
        CompressionConfig(method="cts", window=64),
        reference_model=out,
        progress=False,
    )
    assert report["inputs"]["reference_model"] == str(out) and report["rows_out"] == 16
    assert all(r.compressed_reasoning for r in read_rows(tmp_path / "c.jsonl", DistillRow))


def test_settings_reach_the_reference_trainer(tmp_path: Path, base_model: Path) -> None:
    import yaml

    from twt.core.load import default_config_path, parse_config
    from twt.core.schema import ConfigError
    from twt.steps import steps
    from twt.steps.settings import compress_settings

    data = yaml.safe_load(default_config_path().read_text())
    data["compression"] = {"method": "cts", "selection": "windowed", "segment": 8}
    data["reference"] = {"train": True, "base_model": str(base_model), "updates": 2, "batch_size": 2}
    config = parse_config(yaml.safe_dump(data), "test", base_dir=default_config_path().parent)
    assert config.compression.selection == "windowed" and config.reference.train
    rows = tmp_path / "distill.jsonl"
    write_rows(rows, _rows(6))
    out = steps.train_reference_model(
        compress_settings(config).reference, rows, tmp_path / "ref", progress=False
    )
    assert json.loads((out / "twt.json").read_text())["reference"]["base_model"] == str(base_model)
    data["compression"]["selection"] = "lingua"
    try:
        parse_config(yaml.safe_dump(data), "test", base_dir=default_config_path().parent)
    except ConfigError as err:
        assert "compression.selection" in str(err)
    else:
        raise AssertionError("an unknown selection was accepted")
