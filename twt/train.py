"""Supervised fine-tuning of a causal LM on (prompt, target) pairs, with the loss on the target only.

    result = train_sft(examples, "runs/demo/student-base", "runs/demo/stage1", SFTConfig(epochs=2))

    # several GPUs: the same call under `accelerate launch -m twt.cli distill --stage 1 ...`

What it does, in order:
- tokenises every pair as ``prompt + target + EOS`` (no special tokens added), labels ``-100`` on the prompt;
  an example longer than ``max_length`` is cut at ``max_length`` (counted in the result);
- plans every update of the whole run up front from ``seed`` (the shuffle of each epoch, then packing or
  batching), so a resumed run replays exactly the same batches;
- **packing** (default): examples are laid end to end into rows of at most ``max_length`` tokens (first fit
  in shuffled order); each row gets ``position_ids`` that restart at every example and a block-diagonal
  causal 4-D attention mask, so an example never attends to its neighbours: the loss equals that of the
  examples run one by one, without padding. Without packing, batches of ``batch_size`` examples are padded;
- AdamW, linear warm-up then cosine decay, gradient clipping at 1.0, gradient accumulation; the loss of an
  update is the mean over all its target tokens (not a mean of per-batch means);
- full fine-tuning or LoRA (peft; merged into the weights at the end, so the next stage loads a plain model);
- bf16 autocast on GPUs that support it; several processes through ``accelerate`` (each takes every n-th
  micro-batch; gradients are averaged by DDP);
- a checkpoint (weights, optimiser, scheduler, step) every ``save_every`` updates under ``out/checkpoints``,
  written to a temporary directory and renamed, the last two kept; a rerun resumes from the newest one and
  reaches the same final weights as an uninterrupted run;
- a progress bar with loss, learning rate and tokens/s, ``train_log.jsonl`` with one line per logged update.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from twt.config import StageConfig, schema_default

IGNORE = -100
CHECKPOINTS = "checkpoints"


class TrainError(ValueError):
    """Training input or settings that cannot work (no examples, a model that cannot be loaded, ...)."""


@dataclass
class SFTConfig:
    """Settings of one fine-tuning run (field names match ``twt.config.StageConfig``).

    Fields shared with ``twt.config.StageConfig`` take their defaults from it (one place for each).

    Attributes:
        epochs: passes over the examples; fractions allowed.
        learning_rate: peak learning rate.
        batch_size: rows (packed) or examples (unpacked) per micro-batch.
        grad_accum: micro-batches per optimiser update.
        warmup_ratio: share of updates spent warming up linearly.
        max_length: token cap of a packed row and of one example.
        lora: train LoRA adapters instead of all weights.
        lora_r, lora_alpha: LoRA rank and scaling.
        pack: pack examples into rows with a block-diagonal mask.
        seed: seed of the data order (and of LoRA's initialisation).
        save_every: checkpoint every this many updates; 0 = none.
        weight_decay: AdamW weight decay (default 0.01).
        log_every: log every this many updates (default 10).
        updates: a budget in optimiser updates instead of epochs: the examples are cycled, reshuffled each
            pass, until this many updates (``epochs`` is then ignored). Short examples pack many to a row,
            so an epoch of answer-only pairs is a few updates: budgets in updates keep stages comparable.
            None = ``epochs`` decides.
        max_updates: stop after this many updates; None = the whole plan (default None).
        device: "cpu", "cuda", ...; None = what accelerate picks (default None).
    """

    epochs: float = schema_default(StageConfig, "epochs")
    learning_rate: float = schema_default(StageConfig, "learning_rate")
    batch_size: int = schema_default(StageConfig, "batch_size")
    grad_accum: int = schema_default(StageConfig, "grad_accum")
    warmup_ratio: float = schema_default(StageConfig, "warmup_ratio")
    max_length: int = schema_default(StageConfig, "max_length")
    lora: bool = schema_default(StageConfig, "lora")
    lora_r: int = schema_default(StageConfig, "lora_r")
    lora_alpha: int = schema_default(StageConfig, "lora_alpha")
    pack: bool = schema_default(StageConfig, "pack")
    seed: int = schema_default(StageConfig, "seed")
    save_every: int = schema_default(StageConfig, "save_every")
    weight_decay: float = 0.01
    log_every: int = 10
    updates: int | None = schema_default(StageConfig, "updates")
    max_updates: int | None = None
    device: str | None = None

    @classmethod
    def from_stage(cls, stage, **overrides) -> SFTConfig:
        """From ``twt.config.StageConfig`` (``mix_previous`` is the stages' business, not the trainer's)."""
        known = {name for name in cls.__dataclass_fields__}
        values = {k: v for k, v in stage.model_dump().items() if k in known}
        return cls(**{**values, **overrides})


# --- data: tokenise, plan, collate -------------------------------------------------------------------------


def tokenize_pairs(
    tokenizer, pairs: Sequence[tuple[str, str]], max_length: int
) -> tuple[list[list[int]], list[list[int]], int]:
    """Token ids and labels of each ``prompt + target + EOS``; returns (ids, labels, truncated count)."""
    if tokenizer.eos_token_id is None:
        raise TrainError("the tokenizer has no EOS token; the student could never learn to stop")
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    targets = tokenizer([t for _, t in pairs], add_special_tokens=False)["input_ids"]
    ids, labels, truncated = [], [], 0
    for p, t in zip(prompts, targets, strict=True):
        row, lab = p + t + [tokenizer.eos_token_id], [IGNORE] * len(p) + t + [tokenizer.eos_token_id]
        if len(row) > max_length:
            row, lab, truncated = row[:max_length], lab[:max_length], truncated + 1
        ids.append(row)
        labels.append(lab)
    return ids, labels, truncated


def pack_rows(lengths: Sequence[int], order: Sequence[int], max_length: int) -> list[list[int]]:
    """First-fit packing of examples (by index, in ``order``) into rows of at most ``max_length`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_length - lengths[i])
    return rows


def plan_batches(lengths: Sequence[int], config: SFTConfig) -> list[list[list[int]]]:
    """Every micro-batch of the run: a list of rows, each a list of example indices.

    Epoch ``e`` shuffles with ``Random(seed * 1000 + e)``; a fractional last epoch takes the first part of
    that epoch's micro-batches. With ``config.updates`` set, epochs follow one another until there are
    ``updates × grad_accum`` micro-batches. The plan is a pure function of (lengths, config).
    """
    batches: list[list[list[int]]] = []
    if config.updates is not None:
        if config.updates < 1:
            raise TrainError(f"updates must be at least 1, got {config.updates}")
        wanted, epoch = config.updates * config.grad_accum, 0
        while len(batches) < wanted:
            batches += _epoch_batches(lengths, config, epoch)
            epoch += 1
        return batches[:wanted]
    for epoch in range(math.ceil(config.epochs)):
        epoch_batches = _epoch_batches(lengths, config, epoch)
        share = min(1.0, config.epochs - epoch)
        batches += epoch_batches[: max(1, round(share * len(epoch_batches)))]
    return batches


def _epoch_batches(lengths: Sequence[int], config: SFTConfig, epoch: int) -> list[list[list[int]]]:
    """The micro-batches of one pass over the examples."""
    order = list(range(len(lengths)))
    random.Random(config.seed * 1000 + epoch).shuffle(order)
    if config.pack:
        rows = pack_rows(lengths, order, config.max_length)
        random.Random(config.seed * 1000 + epoch + 500).shuffle(rows)  # first fit fills early rows first
    else:
        rows = [[i] for i in order]
    return [rows[i : i + config.batch_size] for i in range(0, len(rows), config.batch_size)]


def collate(batch: list[list[int]], ids: list[list[int]], labels: list[list[int]], pad_id: int) -> dict:
    """Tensors for one micro-batch: right-padded rows, position ids restarting per example, and a 4-D
    float mask that is causal within each example and blocks attention across examples and to padding."""
    import torch

    width = max(sum(len(ids[i]) for i in row) for row in batch)
    n = len(batch)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    label_t = torch.full((n, width), IGNORE, dtype=torch.long)
    position = torch.zeros((n, width), dtype=torch.long)
    segment = torch.full((n, width), -1, dtype=torch.long)
    for r, row in enumerate(batch):
        at = 0
        for s, i in enumerate(row):
            length = len(ids[i])
            input_ids[r, at : at + length] = torch.tensor(ids[i])
            label_t[r, at : at + length] = torch.tensor(labels[i])
            position[r, at : at + length] = torch.arange(length)
            segment[r, at : at + length] = s
            at += length
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (segment[:, :, None] == segment[:, None, :]) & causal & (segment[:, :, None] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no row is all -inf
    mask = torch.zeros((n, 1, width, width))
    mask.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
    return {"input_ids": input_ids, "labels": label_t, "position_ids": position, "attention_mask": mask}


# --- the loop ----------------------------------------------------------------------------------------------


def _load(model_path: str | os.PathLike, config: SFTConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="sdpa")
    except (OSError, ValueError) as err:
        raise TrainError(f"cannot load the model to train from {model_path}: {err}") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.lora:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=targets)
        model = get_peft_model(model, lora)
    return tokenizer, model


def _checkpoints(out_dir: Path) -> list[Path]:
    root = out_dir / CHECKPOINTS
    found = [p for p in root.glob("step-*") if (p / "state.pt").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _save_checkpoint(out_dir: Path, step: int, model, optimizer, scheduler, accelerator) -> None:
    import torch

    root = out_dir / CHECKPOINTS
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {
        "step": step,
        "model": accelerator.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    torch.save(state, tmp / "state.pt")
    tmp.rename(final)
    for old in _checkpoints(out_dir)[:-2]:
        shutil.rmtree(old, ignore_errors=True)


def train_sft(
    pairs: Sequence[tuple[str, str]],
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: SFTConfig | None = None,
    *,
    lineage: dict | None = None,
    progress: bool = True,
    on_update: Callable[[int], None] | None = None,
) -> dict:
    """Fine-tune the model at ``model_path`` on ``pairs`` and save it to ``out_dir``; returns the summary.

    ``lineage`` is merged into ``out_dir/twt.json``. A rerun after a crash resumes from the newest
    checkpoint in ``out_dir/checkpoints`` (when ``save_every`` > 0). ``on_update(n)`` is called after
    update ``n`` and its checkpoint (for monitoring, and for tests that crash a run on purpose).
    """
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    config = config or SFTConfig()
    if not pairs:
        raise TrainError("no training examples")
    out = Path(out_dir)
    torch.manual_seed(config.seed)
    accelerator = Accelerator(cpu=config.device == "cpu", mixed_precision=_precision(config))
    tokenizer, model = _load(model_path, config)
    ids, labels, truncated = tokenize_pairs(tokenizer, pairs, config.max_length)
    lengths = [len(r) for r in ids]
    plan = plan_batches(lengths, config)
    updates = math.ceil(len(plan) / config.grad_accum)
    if config.max_updates is not None:
        updates = min(updates, config.max_updates)
        plan = plan[: updates * config.grad_accum]

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(config.warmup_ratio * updates), updates)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    start_update = 0
    if config.save_every and (found := _checkpoints(out)):
        state = torch.load(found[-1] / "state.pt", weights_only=False)
        accelerator.unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_update = state["step"]

    log_path = out / "train_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    if start_update == 0:
        log_path.unlink(missing_ok=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    pad_id = tokenizer.pad_token_id
    target_tokens = sum(sum(t != IGNORE for t in lab) for lab in labels)
    bar = tqdm(
        total=updates, initial=start_update, desc=f"train {out.name}", disable=not progress or rank != 0
    )
    model.train()
    started, real_tokens, padded_tokens, losses = time.perf_counter(), 0, 0, []
    for update in range(start_update, updates):
        micro = plan[update * config.grad_accum : (update + 1) * config.grad_accum]
        mine = [collate(b, ids, labels, pad_id) for b in micro[rank::world] or micro[:1]]
        n_real = [sum(len(ids[i]) for row in b for i in row) for b in micro[rank::world] or micro[:1]]
        n_target = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in mine)
        total_loss = 0.0
        for i, batch in enumerate(mine):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
            ).logits
            # next-token loss summed over target tokens, divided by the update's target-token count
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                batch["labels"][:, 1:].flatten(),
                ignore_index=IGNORE,
                reduction="sum",
            ) / max(1, n_target)
            context = accelerator.no_sync(model) if i < len(mine) - 1 else nullcontext()
            with context:
                accelerator.backward(loss)
            total_loss += loss.item()
            real_tokens += n_real[i]
            padded_tokens += batch["input_ids"].numel()
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total_loss)
        step = update + 1
        elapsed = time.perf_counter() - started
        if rank == 0 and (step % config.log_every == 0 or step == updates):
            record = {
                "update": step,
                "loss": round(sum(losses[-config.log_every :]) / len(losses[-config.log_every :]), 5),
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": round(padded_tokens / elapsed, 1) if elapsed > 0 else None,
            }
            with log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
        bar.update(1)
        if config.save_every and step % config.save_every == 0 and step < updates and rank == 0:
            _save_checkpoint(out, step, model, optimizer, scheduler, accelerator)
        if on_update is not None:
            on_update(step)
    bar.close()
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - started
    summary = {
        "examples": len(pairs),
        "truncated": truncated,
        "target_tokens": target_tokens,
        "updates": updates,
        "resumed_from": start_update,
        "micro_batches": len(plan),
        "seconds": round(seconds, 2),
        "tokens_per_s": round(padded_tokens / seconds, 1) if seconds > 0 else None,
        "padding_share": round(1 - real_tokens / padded_tokens, 4) if padded_tokens else None,
        "first_loss": round(losses[0], 5) if losses else None,
        "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 5) if losses else None,
        "config": asdict(config),
    }
    if rank == 0:
        _save_final(accelerator.unwrap_model(model), tokenizer, out, config, summary, lineage, model_path)
    return summary


def _precision(config: SFTConfig) -> str:
    """bf16 autocast on GPUs that support it, full precision elsewhere."""
    import torch

    if config.device == "cpu" or not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "no"


def _save_final(model, tokenizer, out: Path, config, summary: dict, lineage: dict | None, base) -> None:
    """The trained model as a plain HF directory (LoRA merged), safetensors, plus ``twt.json`` lineage."""
    if config.lora:
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = {"kind": "sft", "base_model": str(base), **(lineage or {}), "training": summary}
    (out / "twt.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
