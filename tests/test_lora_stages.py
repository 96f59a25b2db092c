"""LoRA end to end: each stage trains adapters and merges them; the next stage starts from the plain model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers import distill_rows
from safetensors.torch import load_file

from twt.core.records import write_rows
from twt.training.sft import SFTConfig
from twt.training.stages import run_stage


def test_three_lora_stages_train_merge_and_hand_on(tmp_path: Path, base_model: Path) -> None:
    write_rows(tmp_path / "rows.jsonl", distill_rows(32))
    config = SFTConfig(
        updates=4, batch_size=4, max_length=96, lora=True, lora_r=4, learning_rate=1e-2, save_every=2
    )
    parent = base_model
    for stage in (1, 2, 3):
        out = tmp_path / f"stage{stage}"
        mix = 0.2 if stage > 1 else 0.0
        result = run_stage(
            stage, tmp_path / "rows.jsonl", parent, out, config, mix_previous=mix, progress=False
        )
        assert result["training"]["updates"] == 4
        assert result["training"]["final_loss"] < result["training"]["first_loss"]
        weights, before = load_file(out / "model.safetensors"), load_file(parent / "model.safetensors")
        assert not any("lora" in name for name in weights)  # merged: a plain model for the next stage
        q = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(weights[q], before[q])  # the adapters moved the merged weights
        assert torch.equal(weights["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
        record = json.loads((out / "twt.json").read_text())
        assert [s["stage"] for s in record["stages"]] == list(range(1, stage + 1))
        assert record["training"]["config"]["lora"] is True
        assert not (out / "checkpoints").exists()  # adapters' checkpoints went with the finished stage
        parent = out
