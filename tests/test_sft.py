"""Supervised fine-tuning: packing is exact, loss falls, checkpoints resume to the same weights, LoRA."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from twt.training.sft import (
    IGNORE,
    SFTConfig,
    TrainError,
    collate,
    pack_rows,
    plan_batches,
    tokenize_pairs,
    train_sft,
)


def _sha(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_pack_rows_and_plan() -> None:
    assert pack_rows([5, 4, 3, 2], [0, 1, 2, 3], max_length=8) == [[0, 2], [1, 3]]
    config = SFTConfig(epochs=1.5, batch_size=2, max_length=8, seed=3)
    plan = plan_batches([5, 4, 3, 2, 6, 1], config)
    assert plan == plan_batches([5, 4, 3, 2, 6, 1], config)  # a pure function of its inputs
    first_epoch = plan_batches([5, 4, 3, 2, 6, 1], SFTConfig(epochs=1, batch_size=2, max_length=8, seed=3))
    assert plan[: len(first_epoch)] == first_epoch and len(plan) > len(first_epoch)
    for batch in plan:
        for row in batch:
            assert sum([5, 4, 3, 2, 6, 1][i] for i in row) <= 8
    assert sorted(i for b in first_epoch for row in b for i in row) == list(range(6))


def test_a_budget_in_updates_cycles_the_examples() -> None:
    lengths = [5, 4, 3, 2, 6, 1]
    one_epoch = plan_batches(lengths, SFTConfig(epochs=1, batch_size=2, max_length=8, seed=3))
    n = 2 * len(one_epoch) + 1
    plan = plan_batches(lengths, SFTConfig(epochs=1, updates=n, batch_size=2, max_length=8, seed=3))
    assert len(plan) == n and plan[: len(one_epoch)] == one_epoch
    assert plan == plan_batches(lengths, SFTConfig(epochs=3, batch_size=2, max_length=8, seed=3))[:n]
    accumulated = SFTConfig(updates=4, grad_accum=3, batch_size=1, max_length=8)
    assert len(plan_batches(lengths, accumulated)) == 12
    with pytest.raises(TrainError, match="updates"):
        plan_batches(lengths, SFTConfig(updates=0))


def test_packed_loss_equals_the_loss_of_examples_run_alone(base_model: Path, sft_pairs) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model).eval()
    ids, labels, _ = tokenize_pairs(tokenizer, sft_pairs[:3], max_length=256)
    assert all(lab[: len(lab) - len(set())].count(IGNORE) > 0 for lab in labels)  # the prompt is masked
    packed = collate([[0, 1, 2]], ids, labels, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits
        packed_loss = torch.nn.functional.cross_entropy(
            logits[0, :-1], packed["labels"][0, 1:], ignore_index=IGNORE, reduction="sum"
        )
        alone = 0.0
        for i in range(3):
            out = model(input_ids=torch.tensor([ids[i]])).logits
            alone += torch.nn.functional.cross_entropy(
                out[0, :-1], torch.tensor(labels[i][1:]), ignore_index=IGNORE, reduction="sum"
            )
    assert torch.allclose(packed_loss, alone, rtol=1e-4)


def test_training_lowers_the_loss_and_saves_a_loadable_model(
    base_model: Path, sft_pairs, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    config = SFTConfig(epochs=3, batch_size=4, learning_rate=3e-3, max_length=64, log_every=2)
    result = train_sft(sft_pairs, base_model, tmp_path / "out", config, lineage={"stage": 1}, progress=False)
    assert result["final_loss"] < 0.7 * result["first_loss"]
    assert result["padding_share"] < 0.25  # packed rows of ~64 tokens
    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    lineage = json.loads((tmp_path / "out" / "twt.json").read_text())
    assert lineage["stage"] == 1 and lineage["base_model"] == str(base_model)
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert log and {"update", "loss", "lr", "tokens_per_s"} <= set(log[0])
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_padding_without_packing_is_measured(base_model: Path, sft_pairs, tmp_path: Path) -> None:
    config = SFTConfig(epochs=1, batch_size=8, pack=False, max_updates=3)
    result = train_sft(sft_pairs, base_model, tmp_path / "padded", config, progress=False)
    assert result["updates"] == 3 and 0 < result["padding_share"] < 0.6


def test_resume_after_a_crash_reaches_the_same_weights(base_model: Path, sft_pairs, tmp_path: Path) -> None:
    config = SFTConfig(epochs=2, batch_size=8, max_length=64, save_every=2, grad_accum=2)
    train_sft(sft_pairs, base_model, tmp_path / "whole", config, progress=False)

    def crash(update: int) -> None:
        if update == 5:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_sft(sft_pairs, base_model, tmp_path / "resumed", config, progress=False, on_update=crash)
    assert [p.name for p in sorted((tmp_path / "resumed" / "checkpoints").iterdir())] == ["step-2", "step-4"]
    result = train_sft(sft_pairs, base_model, tmp_path / "resumed", config, progress=False)
    assert result["resumed_from"] == 4
    assert _sha(tmp_path / "resumed") == _sha(tmp_path / "whole")


def test_lora_trains_adapters_and_saves_a_merged_model(base_model: Path, sft_pairs, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    config = SFTConfig(epochs=1, batch_size=8, lora=True, lora_r=4, learning_rate=1e-2)
    result = train_sft(sft_pairs, base_model, tmp_path / "lora", config, progress=False)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    base = AutoModelForCausalLM.from_pretrained(base_model)
    assert not any("lora" in name for name in merged.state_dict())
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_merged, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)  # frozen
    assert result["final_loss"] < result["first_loss"]


def test_no_examples_is_an_error(base_model: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="no training examples"):
        train_sft([], base_model, tmp_path / "x", progress=False)
    with pytest.raises(TrainError, match="cannot load"):
        train_sft([("a", "b")], tmp_path / "nowhere", tmp_path / "x", progress=False)
