"""Sampling throughput: twt's transformers backend against a plain one-prompt-at-a-time ``generate`` loop.

    python benchmarks/sampling.py --threads 1    # CPU: a tiny random Llama (hidden 128, 4 layers, vocab 2048)
    python benchmarks/sampling.py --gpu --static-cache  # CUDA: Qwen2.5-0.5B-shaped, random, bf16, batch 128

Both paths run in the same process, on the same model object and the same prompts, sampling with
temperature 1.0 / top-p 0.95. The plain loop is what one writes first: tokenize one prompt, ``model.generate``
with ``do_sample=True``, next prompt. On GPU it runs only on the first ``--plain-prompts`` prompts (at
~20–30 tokens/s a full 128 × 256-token loop would take over 20 minutes); throughput (new tokens per second)
is what is compared. ``--static-cache`` adds a run of the backend with a static KV cache and compiled decode
(its first batch, which pays the compile, is timed separately as ``static_compile_s``).

Random weights: the models never learned to stop, so nearly every row generates ``--new-tokens`` tokens; the
tokenizer is word-level (one token per word), so prompt lengths are exact. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twt.core.schema import TeacherConfig
from twt.method.teachers import BackendOptions
from twt.method.teachers.transformers_backend import TransformersTeacher

CPU_SHAPE = {
    "family": "llama",
    "vocab": 2048,
    "hidden": 128,
    "layers": 4,
    "heads": 4,
    "kv_heads": 2,
    "intermediate": 512,
}
QWEN05_SHAPE = {
    "family": "qwen2",
    "vocab": 151936,
    "hidden": 896,
    "layers": 24,
    "heads": 14,
    "kv_heads": 2,
    "intermediate": 4864,
}


def build_model(path: Path, shape: dict, dtype: torch.dtype) -> None:
    """A word-level tokenizer over ``w0 … wN`` and a random-init causal LM of this shape, saved to path."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    specials = ["<unk>", "<pad>", "<eos>"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(shape["vocab"] - 3)])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    config_class, model_class = (
        (Qwen2Config, Qwen2ForCausalLM) if shape["family"] == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    )
    config = config_class(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        intermediate_size=shape["intermediate"],
        max_position_embeddings=2048,
        eos_token_id=2,
        pad_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model_class(config).to(dtype).save_pretrained(path)
    fast.save_pretrained(path)


def make_prompts(count: int, min_len: int, max_len: int, vocab: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(f"w{rng.randrange(vocab - 3)}" for _ in range(rng.randint(min_len, max_len)))
        for _ in range(count)
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def plain_loop(
    model, tokenizer, prompts: list[str], new_tokens: int, device: torch.device
) -> tuple[int, float]:
    """One prompt at a time through ``model.generate`` (sampling); returns (new tokens, seconds)."""
    torch.manual_seed(0)
    produced, start = 0, time.perf_counter()
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").to(device)
        out = model.generate(
            **ids,
            do_sample=True,
            temperature=1.0,
            top_p=0.95,
            top_k=0,
            max_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        produced += out.shape[1] - ids["input_ids"].shape[1]
    sync(device)
    return produced, time.perf_counter() - start


def backend_run(teacher: TransformersTeacher, prompts: list[str], new_tokens: int) -> tuple[int, float]:
    start = time.perf_counter()
    out = teacher.generate(prompts, n=1, temperature=1.0, seed=0, max_new_tokens=new_tokens)
    sync(teacher.device)
    return sum(samples[0].tokens for samples in out), time.perf_counter() - start


def cpu_model_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="Qwen2.5-0.5B-shaped model on CUDA, batch 128")
    parser.add_argument("--prompts", type=int, help="number of prompts (default 64 CPU, 128 GPU)")
    parser.add_argument("--batch-size", type=int, help="backend batch size (default 64 CPU, 128 GPU)")
    parser.add_argument("--new-tokens", type=int, help="new tokens per prompt (default 32 CPU, 256 GPU)")
    parser.add_argument(
        "--prompt-len", type=int, nargs=2, help="min and max prompt tokens (default 8 40 / 96 128)"
    )
    parser.add_argument(
        "--plain-prompts", type=int, help="prompts the plain loop runs (default all CPU, 8 GPU)"
    )
    parser.add_argument(
        "--static-cache", action="store_true", help="also time the static-cache compiled path"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu given but CUDA is not available")
    device = torch.device("cuda" if args.gpu else "cpu")
    shape = QWEN05_SHAPE if args.gpu else CPU_SHAPE
    prompts_n = args.prompts or (128 if args.gpu else 64)
    batch_size = args.batch_size or (128 if args.gpu else 64)
    new_tokens = args.new_tokens or (256 if args.gpu else 32)
    low, high = args.prompt_len or ((96, 128) if args.gpu else (8, 40))
    plain_n = min(prompts_n, args.plain_prompts or (8 if args.gpu else prompts_n))
    prompts = make_prompts(prompts_n, low, high, shape["vocab"])

    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp), shape, torch.bfloat16 if args.gpu else torch.float32)
        settings = TeacherConfig(
            name="bench",
            model=tmp,
            batch_size=batch_size,
            temperature=1.0,
            top_p=0.95,
            max_new_tokens=new_tokens,
        )
        teacher = TransformersTeacher(settings, BackendOptions(device=str(device)))
        warm = prompts[: min(4, prompts_n)]
        backend_run(teacher, warm, 4)  # warm-up: allocator, kernels
        plain_loop(teacher.model, teacher.tokenizer, warm[:1], 4, device)
        ours_tokens, ours_s = backend_run(teacher, prompts, new_tokens)
        plain_tokens, plain_s = plain_loop(
            teacher.model, teacher.tokenizer, prompts[:plain_n], new_tokens, device
        )
        result = {
            "benchmark": "sampling",
            "device": torch.cuda.get_device_name() if args.gpu else cpu_model_name(),
            "threads": torch.get_num_threads(),
            "model": shape,
            "params_m": round(sum(p.numel() for p in teacher.model.parameters()) / 1e6, 2),
            "dtype": str(next(teacher.model.parameters()).dtype).replace("torch.", ""),
            "prompts": prompts_n,
            "prompt_tokens": [low, high],
            "new_tokens": new_tokens,
            "batch_size": batch_size,
            "backend_tokens": ours_tokens,
            "backend_s": round(ours_s, 3),
            "backend_tok_s": round(ours_tokens / ours_s, 1),
            "plain_prompts": plain_n,
            "plain_tokens": plain_tokens,
            "plain_s": round(plain_s, 3),
            "plain_tok_s": round(plain_tokens / plain_s, 1),
        }
        result["speedup"] = round(result["backend_tok_s"] / result["plain_tok_s"], 2)
        if args.static_cache and args.gpu:
            teacher.static_cache = True  # same model; only the KV cache and the compiled decode differ
            compile_s = backend_run(teacher, prompts[:batch_size], new_tokens)[1]
            static_tokens, static_s = backend_run(teacher, prompts, new_tokens)
            result.update(
                {
                    "static_compile_s": round(compile_s, 1),
                    "static_tok_s": round(static_tokens / static_s, 1),
                    "static_speedup": round(static_tokens / static_s / result["plain_tok_s"], 2),
                }
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
