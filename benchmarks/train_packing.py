"""Training throughput of ``twt.training.sft``: packed rows against padded batches, on the same data, in one
run.

    python benchmarks/train_packing.py                    # CPU: the student-base shape, stage-1-like data
    python benchmarks/train_packing.py --gpu              # GPU: a Qwen2.5-0.5B-shaped model, bf16, MFU

Data: prompt + full reasoning + answer pairs of the embedded task in the three reasoning styles and all
chain lengths (so lengths vary, as in a real stage-1 set). Both runs train the same randomly initialised
model on the same pairs for the same number of updates with the same batch size in *examples* (a packed
row holds several examples, so the packed run uses fewer rows per batch: ``batch_size`` rows of
``max_length`` tokens against ``batch_size × examples_per_row`` padded examples). Reported per run:
real (non-padding) tokens per second, padding share, seconds; the ratio is packed ÷ padded real tokens/s.
On a GPU, MFU = 6 × parameters × real tokens/s ÷ peak bf16 FLOP/s (989 TFLOP/s for an H100 SXM, dense).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

H100_BF16_FLOPS = 989e12


def make_pairs(n: int, seed: int, repeat_reasoning: int = 1) -> list[tuple[str, str]]:
    from twt.core.prompts import PromptTemplates, completion
    from twt.embedded.task import STYLES, make_questions, reasoning_of

    rng, templates = random.Random(seed), PromptTemplates()
    weights = (0.1, 0.15, 0.2, 0.2, 0.2, 0.15)
    pairs = []
    for q in make_questions(n, seed, "bench", weights):
        reasoning = ";".join([reasoning_of(q.question, rng.choice(STYLES))] * repeat_reasoning)
        pairs.append((templates.render("solve", question=q.question), completion(reasoning, q.answer)))
    return pairs


def build_model(out: Path, gpu: bool) -> Path:
    from transformers import AutoTokenizer

    from twt.embedded.tiny import DEFAULT_DIR, TOKENIZER_DIR, TinyModelSpec, new_model

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_DIR / TOKENIZER_DIR)
    if gpu:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        config = Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        model = Qwen2ForCausalLM(config)
    else:
        model = new_model(TinyModelSpec("bench", hidden=64, layers=2), tokenizer, seed=0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run(pairs, model_dir: Path, pack: bool, batch: int, max_length: int, updates: int, device: str) -> dict:
    from twt.training.sft import SFTConfig, train_sft

    config = SFTConfig(
        epochs=100, batch_size=batch, max_length=max_length, pack=pack, max_updates=updates, device=device,
        learning_rate=1e-4, log_every=10**9,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        result = train_sft(pairs, model_dir, out, config, progress=False)
    real = result["tokens_per_s"] * (1 - result["padding_share"])
    return {
        "pack": pack,
        "batch_size": batch,
        "updates": result["updates"],
        "seconds": result["seconds"],
        "padding_share": result["padding_share"],
        "real_tokens_per_s": round(real, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="Qwen2.5-0.5B shape on CUDA, bf16")
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    device = "cuda" if args.gpu else "cpu"
    # GPU: rows of 1024 tokens, 16 per batch (the 16×1024 of FACTS.md); CPU: rows of 256, 8 per batch
    max_length, rows = (1024, 16) if args.gpu else (256, 8)
    pairs = make_pairs(args.examples, seed=0, repeat_reasoning=8 if args.gpu else 1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "model", args.gpu)
        from transformers import AutoTokenizer

        from twt.training.sft import tokenize_pairs

        ids, _, _ = tokenize_pairs(AutoTokenizer.from_pretrained(model_dir), pairs, max_length)
        per_row = max(1, max_length // (sum(map(len, ids)) / len(ids)))
        packed = run(pairs, model_dir, True, rows, max_length, args.updates, device)
        padded = run(pairs, model_dir, False, int(rows * per_row), max_length, args.updates, device)
        from safetensors.torch import load_file

        params = sum(t.numel() for t in load_file(str(model_dir / "model.safetensors")).values())
    result = {
        "benchmark": "train_packing",
        "device": torch.cuda.get_device_name() if args.gpu else platform.processor() or platform.machine(),
        "torch_threads": args.threads,
        "params": params,
        "mean_example_tokens": round(sum(map(len, ids)) / len(ids), 1),
        "max_length": max_length,
        "packed": packed,
        "padded": padded,
        "speedup_real_tokens": round(packed["real_tokens_per_s"] / padded["real_tokens_per_s"], 3),
    }
    if args.gpu:
        result["mfu"] = round(6 * params * packed["real_tokens_per_s"] / H100_BF16_FLOPS, 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
