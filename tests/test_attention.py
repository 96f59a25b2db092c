"""Packed rows and attention kernels: flash attention gets one flat row whose position_ids restart per
example (transformers turns them into varlen cu_seqlens); everything else gets the 4-D block mask."""

from __future__ import annotations

import importlib.util
from itertools import accumulate
from pathlib import Path

import pytest

from twt.training.attention import collate_flat, resolve_attn_implementation, uses_varlen
from twt.training.sft import IGNORE, SFTConfig, _batches, tokenize_pairs


@pytest.mark.parametrize(
    ("impl", "varlen"),
    [
        ("flash_attention_2", True),
        ("flash_attention_3", True),
        ("kernels-community/flash-attn", True),
        ("sdpa", False),
        ("eager", False),
        ("flex_attention", False),
        (None, False),
    ],
)
def test_only_flash_kernels_take_packed_rows_flat(impl, varlen: bool) -> None:
    assert uses_varlen(impl) is varlen


def test_auto_picks_flash_attention_only_on_a_gpu_with_flash_attn(monkeypatch) -> None:
    assert resolve_attn_implementation("eager", cuda=True) == "eager"
    assert resolve_attn_implementation("auto", cuda=False) == "sdpa"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else real(name)
    )
    assert resolve_attn_implementation("auto", cuda=True) == "flash_attention_2"
    assert resolve_attn_implementation("auto", cuda=False) == "sdpa"
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "flash_attn" else real(name)
    )
    assert resolve_attn_implementation("auto", cuda=True) == "sdpa"


def test_a_flat_row_is_what_flash_varlen_reads(base_model: Path, sft_pairs) -> None:
    from transformers import AutoTokenizer
    from transformers.modeling_flash_attention_utils import (
        _is_packed_sequence,
        prepare_fa_kwargs_from_position_ids,
    )

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    ids, labels, _ = tokenize_pairs(tokenizer, sft_pairs[:4], max_length=256)
    batch = [[0, 1], [2, 3]]
    flat = collate_flat(batch, ids, labels)
    assert flat["input_ids"].shape == (1, sum(len(i) for i in ids)) and "attention_mask" not in flat
    assert _is_packed_sequence(flat["position_ids"], batch_size=1)
    (cu_q, _), (max_q, _) = prepare_fa_kwargs_from_position_ids(flat["position_ids"])
    assert cu_q.tolist() == [0, *accumulate(len(ids[i]) for i in (0, 1, 2, 3))]  # one segment per example
    assert int(max_q) == max(len(i) for i in ids)

    # sdpa/eager would NOT read the boundaries from position_ids (measured: transformers 5.23 attends across
    # them), which is why only flash kernels get flat rows; the 4-D mask path is exact (tests/test_sft.py)


def test_the_trainer_sends_flat_rows_only_to_varlen_kernels(sft_pairs) -> None:
    ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    labels = [[IGNORE, 2, 3], [IGNORE, 5], [IGNORE, 7, 8, 9]]
    micro = [[[0, 1], [2]]]
    config = SFTConfig(batch_size=2)
    ((flat, real),) = _batches(micro, 0, 1, config, (ids, labels, 0), varlen=True)
    assert flat["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]] and real == 9
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    ((padded, _),) = _batches(micro, 0, 1, config, (ids, labels, 0), varlen=False)
    assert padded["attention_mask"].shape == (2, 1, 5, 5)
