"""Plain helpers that several test modules share (fixtures live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path


def save_tiny_llama(
    path: Path, tokenizer, *, hidden: int = 32, layers: int = 2, max_positions: int = 256
) -> Path:
    """A random Llama (``hidden`` wide, ``layers`` deep, no BOS token) over ``tokenizer``, both saved in
    ``path``. Seed torch first for reproducible weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_llama(path: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A word-level tokenizer trained on a few strings and a random Llama (hidden 32, 2 layers), in path."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [
        "Solve step by step : 7 + 5 * 3 Answer : 2",
        "Answer directly : 1 - 4 Confidence : 0.9",
        "Rewrite concisely : reasoning student attempt",
    ] + [f"{a} {b}" for a in range(10) for b in "+-*=;"]
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"])
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    torch.manual_seed(seed)
    return save_tiny_llama(path, fast, hidden=hidden, layers=layers)
