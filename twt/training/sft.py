"""Supervised fine-tuning of a causal LM on (prompt, target) pairs, with the loss on the target only.

    result = train_sft(examples, "runs/demo/student-base", "runs/demo/stage1", SFTConfig(epochs=2))

    # several processes (GPUs, or gloo on CPU): `twt distill --stage 1 --processes 4 ...` (torchrun)

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
- bf16 autocast on GPUs that support it; several processes through ``accelerate`` under ``torchrun``: DDP,
  or FSDP full shard (``parallel="fsdp"``); the global batch (``batch_size × grad_accum`` rows) and the data
  order are the same for any process count (``twt.training.distributed``);
- packed rows go to flash-attention's varlen kernels as one flat row with ``position_ids`` restarting per
  example when ``attn_implementation`` is a flash one, else the 4-D mask above (``twt.training.attention``);
- a checkpoint (``accelerate`` state: weights or FSDP shards, optimiser, scheduler, random states) every
  ``save_every`` updates at ``checkpoint_uri`` (a local/PVC path or ``s3://``; default ``out/checkpoints``),
  the manifest written last, the last two kept (``twt.training.checkpoints``); a rerun resumes from the
  newest complete one and reaches the same final weights as an uninterrupted run;
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

from twt.core.schema import StageConfig, TrainingConfig, schema_default

IGNORE = -100
CHECKPOINTS = "checkpoints"


class TrainError(ValueError):
    """Training input or settings that cannot work (no examples, a model that cannot be loaded, ...)."""


@dataclass
class SFTConfig:
    """Settings of one fine-tuning run (field names match ``twt.core.schema.StageConfig``).

    Fields shared with ``twt.core.schema.StageConfig`` take their defaults from it (one place for each).

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
        parallel: "ddp" (each process holds the model) or "fsdp" (full shard) (default "ddp").
        attn_implementation: transformers' attention ("sdpa", "eager", "flash_attention_2", ...); "auto"
            = flash_attention_2 where the flash_attn package and a GPU are there, else sdpa (default "sdpa").
        checkpoint_uri: durable checkpoint location (local/PVC path, file://, s3://); None = out/checkpoints.
        keep_last_checkpoint: keep the newest checkpoint when the run ends, not none (default False).
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
    parallel: str = schema_default(TrainingConfig, "parallel")
    attn_implementation: str = schema_default(TrainingConfig, "attn_implementation")
    checkpoint_uri: str | None = None
    keep_last_checkpoint: bool = schema_default(TrainingConfig, "keep_last_checkpoint")

    @classmethod
    def from_stage(
        cls, stage: StageConfig, launch: TrainingConfig | None = None, **runtime: object
    ) -> SFTConfig:
        """The trainer's settings of a stage: its ``twt.core.schema.StageConfig`` (``mix_previous`` is the
        stages' business, not the trainer's), where it trains (``launch``: sharding, attention, device,
        checkpoint retention; None: the trainer's defaults) and ``runtime`` fields that no section holds
        (``checkpoint_uri``, ``max_updates``, a ``device`` that wins over ``launch``'s)."""
        known = {name for name in cls.__dataclass_fields__}
        values = {k: v for k, v in stage.model_dump().items() if k in known}
        if launch is not None:
            values.update(
                parallel=launch.parallel,
                attn_implementation=launch.attn_implementation,
                keep_last_checkpoint=launch.keep_last_checkpoint,
                device=None if launch.device == "auto" else launch.device,
            )
        return cls(**{**values, **runtime})


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


def _load(model_path: str | os.PathLike, config: SFTConfig, attn_implementation: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from twt.core.model_cache import local_model
    from twt.core.store import StoreError

    try:
        model_path = local_model(str(model_path))  # s3:// and file:// through twt.core.store
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation=attn_implementation)
    except (OSError, ValueError, ImportError, StoreError) as err:
        raise TrainError(f"cannot load the model to train from {model_path}: {err}") from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.lora:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=targets)
        model = get_peft_model(model, lora)
    return tokenizer, model


# settings that do not change what a checkpoint holds (so a resumed run may change them)
_NOT_IN_FINGERPRINT = ("log_every", "save_every", "device", "checkpoint_uri", "keep_last_checkpoint")


def _checkpoint_store(config: SFTConfig, out: Path, model_path, pairs, world: int):
    from twt.training.checkpoints import CheckpointStore, fingerprint

    settings = {k: v for k, v in asdict(config).items() if k not in _NOT_IN_FINGERPRINT}
    where = config.checkpoint_uri or str(out / CHECKPOINTS)
    return CheckpointStore(where, fingerprint(settings, model_path, pairs, world))


def _resume(checkpoints, accelerator, scratch: Path) -> int:
    """Load the newest good checkpoint (fetched by each node's first process); the update it ends."""
    found = checkpoints.restore(scratch) if accelerator.is_local_main_process else None
    accelerator.wait_for_everyone()
    from twt.core import store

    if accelerator.is_local_main_process and found is None:
        shutil.rmtree(scratch, ignore_errors=True)
    accelerator.wait_for_everyone()
    if not (scratch / store.MANIFEST_NAME).is_file():
        return 0
    step = int(store.read_manifest(scratch).metadata["step"])
    accelerator.load_state(str(scratch))
    return step


def _save(checkpoints, accelerator, scratch: Path, step: int, nodes: int) -> None:
    """Every process writes its part of the state; nodes upload theirs; the first process publishes."""
    target = scratch / f"step-{step}"
    if accelerator.is_local_main_process:
        shutil.rmtree(target, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(target))
    accelerator.wait_for_everyone()
    node = accelerator.process_index // max(1, accelerator.num_processes // nodes)
    if accelerator.is_local_main_process and not accelerator.is_main_process:
        checkpoints.upload_node_part(step, target, node)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoints.save(step, target, nodes)
        checkpoints.prune(keep=2)
    accelerator.wait_for_everyone()
    if accelerator.is_local_main_process:
        shutil.rmtree(target, ignore_errors=True)


def _batches(micro, rank: int, world: int, config: SFTConfig, data, varlen: bool) -> list[tuple[dict, int]]:
    """This process's micro-batches of one update as (tensors, real tokens); at least one (see below)."""
    from twt.training.attention import collate_flat
    from twt.training.distributed import rank_micro_batches

    ids, labels, pad_id = data
    mine = rank_micro_batches(micro, rank, world, config.batch_size)
    dummy = not mine
    if dummy:  # no row for this process in a short update: a zero-weight pass keeps the collectives matched
        mine = [[micro[0][0]]]
    out = []
    for batch in mine:
        tensors = collate_flat(batch, ids, labels) if varlen else collate(batch, ids, labels, pad_id)
        out.append((tensors, 0 if dummy else sum(len(ids[i]) for row in batch for i in row)))
    if dummy:
        out[0][0]["labels"].fill_(IGNORE)
    return out


def train_sft(
    pairs: Sequence[tuple[str, str]],
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: SFTConfig | None = None,
    *,
    lineage: dict | None = None,
    progress: bool = True,
    on_update: Callable[[int], None] | None = None,
    optimizer_state: str | os.PathLike | None = None,
) -> dict:
    """Fine-tune the model at ``model_path`` on ``pairs`` and save it to ``out_dir``; returns the summary.

    ``lineage`` is merged into ``out_dir/twt.json``. A rerun after a crash resumes from the newest complete
    checkpoint at ``config.checkpoint_uri`` (default ``out_dir/checkpoints``) when ``save_every`` > 0.
    ``on_update(n)`` is called after update ``n`` and its checkpoint (for monitoring, and for tests that
    crash a run on purpose). Under ``torchrun`` every process calls this; the first one writes ``out_dir``.
    ``optimizer_state``: a file the AdamW state is read from before training (when it exists) and written to
    after it, so consecutive runs share the optimiser's moments (``twt.training.internalize`` without reset).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from twt.training.attention import resolve_attn_implementation, uses_varlen
    from twt.training.distributed import DistributedError, check_global_batch, make_accelerator

    config = config or SFTConfig()
    if not pairs:
        raise TrainError("no training examples")
    if config.lora and config.parallel == "fsdp":
        raise TrainError("LoRA with parallel=fsdp is not supported: LoRA adapters are small, use ddp")
    out = Path(out_dir)
    torch.manual_seed(config.seed)
    try:
        accelerator = make_accelerator(config.parallel, device=config.device, precision=_precision(config))
        check_global_batch(config.batch_size, config.grad_accum, accelerator.num_processes)
        if config.parallel == "fsdp" and accelerator.distributed_type != "FSDP":
            raise DistributedError(
                f"parallel=fsdp needs GPUs (accelerate shards on GPU-like devices, this run has "
                f"{accelerator.distributed_type.value} on {accelerator.device}); on CPU use parallel=ddp"
            )
    except DistributedError as err:
        raise TrainError(str(err)) from err
    attn = resolve_attn_implementation(config.attn_implementation, cuda=accelerator.device.type == "cuda")
    varlen = config.pack and uses_varlen(attn)
    tokenizer, model = _load(model_path, config, attn)
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
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP replaces them with sharded ones

    if optimizer_state is not None and Path(optimizer_state).is_file():
        saved = torch.load(optimizer_state, weights_only=False)["state"]  # moments only: this run's lr stays
        optimizer.load_state_dict({"state": saved, "param_groups": optimizer.state_dict()["param_groups"]})
    rank, world = accelerator.process_index, accelerator.num_processes
    nodes = max(1, world // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    checkpoints = _checkpoint_store(config, out, model_path, pairs, world) if config.save_every else None
    scratch = out.parent / f".{out.name}.checkpoint-scratch"
    start_update = _resume(checkpoints, accelerator, scratch / "resume") if checkpoints else 0

    log_path = out / "train_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    if start_update == 0 and rank == 0:
        log_path.unlink(missing_ok=True)
    data = (ids, labels, tokenizer.pad_token_id)
    target_tokens = sum(sum(t != IGNORE for t in lab) for lab in labels)
    bar = tqdm(
        total=updates, initial=start_update, desc=f"train {out.name}", disable=not progress or rank != 0
    )
    model.train()
    started, real_tokens, padded_tokens, losses = time.perf_counter(), 0, 0, []
    for update in range(start_update, updates):
        micro = plan[update * config.grad_accum : (update + 1) * config.grad_accum]
        # the update's loss is summed over ALL its target tokens (every process), divided once
        n_target = sum(
            sum(t != IGNORE for t in labels[i][1:]) for batch in micro for row in batch for i in row
        )
        mine = _batches(micro, rank, world, config, data, varlen)
        total_loss = torch.zeros((), device=accelerator.device)
        for i, (batch, n_real) in enumerate(mine):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"),
                position_ids=batch["position_ids"],
            ).logits
            summed = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                batch["labels"][:, 1:].flatten(),
                ignore_index=IGNORE,
                reduction="sum",
            )
            loss = summed * world / max(1, n_target)  # DDP/FSDP average over processes: × world undoes it
            context = accelerator.no_sync(model) if i < len(mine) - 1 else nullcontext()
            with context:
                accelerator.backward(loss)
            total_loss += summed.detach()
            real_tokens += n_real
            padded_tokens += batch["input_ids"].numel()
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(accelerator.reduce(total_loss, "sum").item() / max(1, n_target))
        step = update + 1
        elapsed = time.perf_counter() - started
        if rank == 0 and (step % config.log_every == 0 or step == updates):
            record = {
                "update": step,
                "loss": round(sum(losses[-config.log_every :]) / len(losses[-config.log_every :]), 5),
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": round(padded_tokens * world / elapsed, 1) if elapsed > 0 else None,
            }
            with log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
        bar.update(1)
        if checkpoints and step % config.save_every == 0 and step < updates:
            _save(checkpoints, accelerator, scratch, step, nodes)
        if on_update is not None:
            on_update(step)
    bar.close()
    accelerator.wait_for_everyone()
    seconds = time.perf_counter() - started
    counts = accelerator.reduce(torch.tensor([real_tokens, padded_tokens], device=accelerator.device), "sum")
    real_tokens, padded_tokens = (int(c) for c in counts.tolist())
    summary = {
        "examples": len(pairs),
        "truncated": truncated,
        "target_tokens": target_tokens,
        "updates": updates,
        "resumed_from": start_update,
        "micro_batches": len(plan),
        "processes": world,
        "attn_implementation": attn,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(padded_tokens / seconds, 1) if seconds > 0 else None,
        "padding_share": round(1 - real_tokens / padded_tokens, 4) if padded_tokens else None,
        "first_loss": round(losses[0], 5) if losses else None,
        "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 5) if losses else None,
        "config": asdict(config),
    }
    state = accelerator.get_state_dict(model)  # every process takes part (FSDP gathers the shards)
    if rank == 0 and optimizer_state is not None:
        Path(optimizer_state).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": optimizer.state_dict()["state"]}, optimizer_state)
    if rank == 0:
        unwrapped = accelerator.unwrap_model(model)
        _save_final(unwrapped, state, tokenizer, out, config, summary, lineage, model_path)
        if checkpoints:
            checkpoints.finish(keep_last=config.keep_last_checkpoint)
        shutil.rmtree(scratch, ignore_errors=True)
    accelerator.wait_for_everyone()
    return summary


def _precision(config: SFTConfig) -> str:
    """bf16 autocast on GPUs that support it, full precision elsewhere."""
    import torch

    if config.device == "cpu" or not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "no"


def _save_final(
    model, state: dict, tokenizer, out: Path, config, summary: dict, lineage: dict | None, base
) -> None:
    """The trained model as a plain HF directory (LoRA merged), safetensors, plus ``twt.json`` lineage."""
    if config.lora:
        model.merge_and_unload().save_pretrained(out, safe_serialization=True)
    else:
        model.save_pretrained(out, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = {"kind": "sft", "base_model": str(base), **(lineage or {}), "training": summary}
    (out / "twt.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
