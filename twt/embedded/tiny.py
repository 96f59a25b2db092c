"""Tiny local models for the embedded task: a tokenizer, three teachers and a student base.

Everything is trained here, from scratch, on CPU in minutes (or on a GPU with ``--device cuda``), with
fixed seeds, so that the demo and the tests run with no download. The result is committed as package data
under ``twt/data/tiny`` and rebuilt by:

    twt task build --out twt/data/tiny          # or: python -m twt.embedded.tiny --out twt/data/tiny

Teachers (real transformers Llama models, different sizes; all follow the three instructions of
``twt.core.prompts.PromptTemplates``: solve with reasoning, rewrite a reasoning concisely, answer directly).
Like real LLMs, each writes long reasoning in its own style, phrasing drawn from pools of synonyms, and each
has its own systematic slip on about 8% of the questions (``twt.embedded.task.SLIPS``):
  teacher-large    hidden 128 × 2 layers, the narrator; the demo's compression teacher, also trained on
                   rewrites fitted to a student's attempt (``rewrite_for_student``)
  teacher-verbose  hidden 96 × 2 layers, the checker (verifies every step)
  teacher-noisy    hidden 64 × 2 layers, the restater (restates the chain, then numbered steps)
The student base (hidden 64 × 2 layers) stands for a pretrained LLM that knows arithmetic: it was taught
single-operation facts in every phrasing (each verbose style and the canonical step) and direct answers
to them, never a chain of two or more operations: chaining is what distillation teaches it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from twt.core.prompts import PromptTemplates, completion
from twt.embedded.task import (
    STYLES,
    VERBOSE_STYLES,
    WEIGHTS,
    Step,
    make_questions,
    operate,
    random_question,
    reasoning_of,
    rewrite_for_student,
    solve_steps,
    write_steps,
)

DEFAULT_DIR = Path(__file__).parents[1] / "data" / "tiny"
TOKENIZER_DIR = "tokenizer"
EOS, PAD = "<|eos|>", "<|pad|>"
# Pieces BPE may merge within: words with their leading space, single digits, single symbols, newlines.
PRETOKENIZE = r" ?[A-Za-z]+| ?\d|\n| +|[^\sA-Za-z\d]"


@dataclass(frozen=True)
class TinyModelSpec:
    """One tiny model to train.

    Attributes:
        name: directory name under the output dir.
        hidden, layers, heads: Llama size (intermediate = 4 × hidden).
        style: reasoning style it writes (``twt.embedded.task.STYLES``); ``"all"``: every style.
        mix: share of training examples per instruction (solve, rewrite, direct).
        slip: whether its reasoning commits its style's systematic error (``SLIPS``).
        max_ops: longest chain in its training data (None: the task's).
        steps, batch_size, lr: training budget.
    """

    name: str
    hidden: int
    layers: int
    heads: int = 4
    style: str = "standard"
    mix: tuple[float, float, float] = (0.85, 0.0, 0.15)
    slip: bool = True
    max_ops: int | None = None
    steps: int = 2500
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0


TEACHERS = (
    # the demo's compression teacher: a share of rewrites fitted to the student's attempt; 3e-3 left the
    # widest model copying wrong operands, it wants a gentler step
    TinyModelSpec(
        "teacher-large", hidden=128, layers=2, style="narrator", mix=(0.45, 0.4, 0.15), lr=2e-3, seed=1
    ),
    TinyModelSpec("teacher-verbose", hidden=96, layers=2, style="checker", seed=2),
    TinyModelSpec("teacher-noisy", hidden=64, layers=2, style="restater", seed=3),
)
STUDENT = TinyModelSpec(
    "student-base",
    hidden=64,
    layers=2,
    style="all",
    mix=(0.7, 0.0, 0.3),
    slip=False,
    max_ops=1,
    steps=3000,
    seed=4,
)


@dataclass
class BuildPlan:
    """What ``build_all`` trains; ``eval_questions`` (the stratified held-out draw of ``eval_seed``, the
    largest any benchmark uses) are held out from every model's training data."""

    models: tuple[TinyModelSpec, ...] = (*TEACHERS, STUDENT)
    weights: tuple[float, ...] = WEIGHTS
    eval_questions: int = 1200
    eval_seed: int = 0


# --- tokenizer ---------------------------------------------------------------------------------------------


def corpus(n: int, seed: int) -> Iterator[str]:
    """Task texts in every style, phrasing and instruction, for training the tokenizer."""
    rng, templates = random.Random(seed), PromptTemplates()
    for _ in range(n):
        q = random_question(rng)
        for style in STYLES:
            yield templates.render("solve", question=q) + completion(reasoning_of(q, style, rng=rng), "0")
        yield (
            templates.render(
                "rewrite",
                question=q,
                reasoning=reasoning_of(q, "narrator"),
                answer="1",
                attempt=reasoning_of(q),
            )
            + completion(rewrite_for_student(q, "1+1=2"), "1")
            + templates.render("direct", question=q)
        )


def build_tokenizer(out_dir: Path, vocab_size: int = 480, seed: int = 0):
    """Train a byte-level BPE tokenizer on task texts; digits and symbols stay single tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(3000, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, padding_side="left", model_max_length=512
    )
    fast.save_pretrained(out_dir)
    return fast


# --- training data -----------------------------------------------------------------------------------------


def wrong_steps(question: str, rng: random.Random, step_noise: float, first: bool = False) -> list[Step]:
    """The chain's steps with each result wrong with probability ``step_noise`` (errors propagate); ``first``:
    the first step is always wrong."""
    steps = solve_steps(question)
    out, acc = [], steps[0].left
    for i, s in enumerate(steps):
        raw = operate(acc, s.op, s.right)
        value = raw % 10
        if (first and i == 0) or rng.random() < step_noise:
            value = (value + rng.randrange(1, 10)) % 10
            raw = value if raw == raw % 10 else raw + (value - raw % 10)
        out.append(Step(acc, s.op, s.right, raw, value))
        acc = value
    return out


def student_attempt(question: str, rng: random.Random) -> tuple[str, str]:
    """A stage-1 student's attempt as the compression teacher meets it: none, right (half of them), or with
    wrong steps (the first one, or each with probability 0.3), in any style, with or without its ``Answer:``
    line. Returns
    ``(attempt, its answer)``."""
    # mostly right, as a trained stage-1 student's attempts are: canonical unless a step is wrong
    kind = rng.choices(["none", "right", "noisy", "first"], weights=(0.15, 0.5, 0.15, 0.2))[0]
    if kind == "none":
        return "", ""
    steps = (
        solve_steps(question) if kind == "right" else wrong_steps(question, rng, 0.3, first=kind == "first")
    )
    attempt, answer = write_steps(steps, rng.choice(STYLES), rng), str(steps[-1].value)
    if rng.random() < 0.7:
        attempt = completion(attempt, answer)
    return attempt, answer


def example(
    spec: TinyModelSpec,
    rng: random.Random,
    held_out: set[str],
    weights: Sequence[float],
    templates: PromptTemplates,
) -> tuple[str, str]:
    """One (prompt, target) pair for a model, drawn by its instruction mix."""
    n_ops = rng.randint(1, spec.max_ops) if spec.max_ops else None
    q = random_question(rng, weights, n_ops)
    while q in held_out:
        q = random_question(rng, weights, n_ops)
    style = rng.choice(STYLES) if spec.style == "all" else spec.style
    slip = spec.slip and style in VERBOSE_STYLES
    answer = str(solve_steps(q, slip=style if slip else None)[-1].value)
    instruction = rng.choices(("solve", "rewrite", "direct"), weights=spec.mix)[0]
    if instruction == "solve":
        reasoning = reasoning_of(q, style, rng=rng, slip=slip)
        return templates.render("solve", question=q), completion(reasoning, answer)
    if instruction == "rewrite":
        # the reasoning to rewrite is right (DCRS kept it) and in any teacher's style; the rewrite fits the
        # student's attempt (``rewrite_for_student``) and never copies its errors
        attempt, _ = student_attempt(q, rng)
        right = str(solve_steps(q)[-1].value)
        source = reasoning_of(q, rng.choice(VERBOSE_STYLES), rng=rng)
        prompt = templates.render("rewrite", question=q, reasoning=source, answer=right, attempt=attempt)
        return prompt, completion(rewrite_for_student(q, attempt), right)
    return templates.render("direct", question=q), completion(None, answer)


# --- models ------------------------------------------------------------------------------------------------


def new_model(spec: TinyModelSpec, tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=4 * spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def encode_batch(tokenizer, pairs: list[tuple[str, str]], device: str):
    """Right-padded ids with labels only on the target (and its EOS)."""
    import torch

    rows, labels = [], []
    for prompt, target in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p + t)
        labels.append([-100] * len(p) + t)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, lab, mask


def train_model(
    spec: TinyModelSpec,
    tokenizer,
    out_dir: Path,
    held_out: set[str],
    weights: Sequence[float],
    device: str = "cpu",
    progress: bool = True,
    on_step=None,
) -> dict:
    """Train one tiny model from scratch (AdamW, cosine schedule with warm-up) and save it.

    ``on_step(step, model)`` is called after every optimiser step (for learning curves).
    """
    import torch
    from tqdm import tqdm

    model = new_model(spec, tokenizer, spec.seed).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, spec.steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, spec.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng, templates = random.Random(spec.seed), PromptTemplates()
    start, tokens, losses = time.perf_counter(), 0, []
    bar = tqdm(range(spec.steps), desc=spec.name, disable=not progress, mininterval=2)
    model.train()
    for _step in bar:
        pairs = [example(spec, rng, held_out, weights, templates) for _ in range(spec.batch_size)]
        ids, labels, mask = encode_batch(tokenizer, pairs, device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", refresh=False)
        if on_step is not None:
            on_step(_step + 1, model)
    seconds = time.perf_counter() - start
    model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters())
    info = {
        "spec": asdict(spec),
        "params": params,
        "train_tokens": tokens,
        "train_seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "initial_loss": round(sum(losses[:5]) / len(losses[:5]), 4),
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
    }
    (out_dir / "twt.json").write_text(json.dumps({"kind": "tiny-model", **info}, indent=2) + "\n")
    return info


def build_all(
    out_dir: Path = DEFAULT_DIR,
    plan: BuildPlan | None = None,
    device: str = "cpu",
    only: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Train the tokenizer and every model of ``plan`` into ``out_dir``; returns a summary.

    One thread and deterministic kernels, so the same command rewrites the same bytes on the same kind of
    machine. ``only`` trains some models (several processes can build different models in parallel; the
    tokenizer is then trained once and reused). Every model is scored on the held-out questions with and
    without reasoning, and the numbers go into its ``twt.json``.
    """
    import torch
    from transformers import AutoTokenizer

    plan = plan or BuildPlan()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = out_dir / TOKENIZER_DIR
    if only and (tok_dir / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = build_tokenizer(tok_dir)
    eval_questions = make_questions(
        plan.eval_questions, plan.eval_seed, "eval", plan.weights, stratified=True
    )
    held_out = {q.question for q in eval_questions}
    scored = eval_questions[::4]  # a quarter of every stratum, enough for the lineage record
    summary = {"tokenizer_vocab": len(tokenizer), "models": {}}
    for spec in plan.models:
        if only and spec.name not in only:
            continue
        # the student base knows every single-operation fact, held-out one-operation chains included: what
        # a pretrained model knows (one-operation chains then measure what a stage keeps, not what it learns)
        held = set() if spec.max_ops == 1 else held_out
        info = train_model(spec, tokenizer, out_dir / spec.name, held, plan.weights, device, progress)
        info["held_out"] = {
            instruction: greedy_accuracy(out_dir / spec.name, scored, instruction)
            for instruction in ("solve", "direct")
        }
        lineage = out_dir / spec.name / "twt.json"
        lineage.write_text(json.dumps({**json.loads(lineage.read_text()), **info}, indent=2) + "\n")
        summary["models"][spec.name] = info
    summary["sha256"] = {
        str(p.relative_to(out_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out_dir.rglob("*.safetensors"))
    }
    return summary


def build_student(
    out_dir: Path,
    hidden: int,
    layers: int,
    heads: int = 4,
    tokenizer_dir: Path = DEFAULT_DIR / TOKENIZER_DIR,
    seed: int = STUDENT.seed,
    progress: bool = False,
    steps: int = STUDENT.steps,
) -> dict:
    """A student base of another size: ``STUDENT``'s recipe (single-operation facts in every phrasing, and
    their direct answers) at ``hidden`` × ``layers``. Skipped when already built."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").is_file():
        return json.loads((out_dir / "twt.json").read_text())
    import torch

    torch.manual_seed(seed)
    spec = replace(
        STUDENT, name=out_dir.name, hidden=hidden, layers=layers, heads=heads, seed=seed, steps=steps
    )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return train_model(spec, tokenizer, out_dir, set(), WEIGHTS, progress=progress)


def greedy_accuracy(
    model_dir: Path, questions, instruction: str, batch_size: int = 100, max_new_tokens: int = 128
) -> dict:
    """Greedy accuracy (``twt.method.evaluate.greedy_score``, on the CPU) and mean output tokens before the
    EOS token of a local model on ``questions`` for one instruction (the numbers in each ``twt.json``)."""
    from twt.core.schema import TeacherConfig
    from twt.method.evaluate import greedy_score
    from twt.method.teachers import BackendOptions, load_teacher

    model = TeacherConfig(
        name=model_dir.name, model=str(model_dir), max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    score = greedy_score(load_teacher(model, BackendOptions(device="cpu")), questions, instruction)
    before_eos = [a.tokens - (a.finish_reason == "stop") for a in score.answers]
    return {"accuracy": score.accuracy, "mean_output_tokens": sum(before_eos) / len(before_eos)}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    print(json.dumps(build_all(args.out, device=args.device, only=args.only), indent=2))
