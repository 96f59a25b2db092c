"""Stepwise internalisation: stage 2 removes the reasoning gradually, phase by phase, down to none.

    config = InternalizeConfig(schedule="left", tokens_per_phase=6, updates_per_phase=150)
    result = run_internalize("dcrs/distill.jsonl", "stage1", "stage2", config, SFTConfig(...), seed=0)

Stepwise Internalization (Deng, Choi & Shieber 2024, arXiv 2405.14838) trains on the reasoning with a fixed
number of its tokens removed from the left, removes more at each phase until none is left, and resets the
optimiser at each phase; removal smoothing removes a few extra tokens from some examples so that the jump
from one phase to the next is less abrupt. Here every phase is one fine-tuning run
(``twt.training.sft.train_sft``) that starts from the previous phase's model, on the pairs
``(solve prompt, completion(kept, answer))``.

Two schedules (``SCHEDULES``), both a removal *order* over a row's ``n`` reasoning tokens plus a removed
*count* per phase ``p = 1..P``:

  left   Deng et al.: order = positions 0, 1, 2, ...; removed(p) = min(n, p · tokens_per_phase);
         P = ceil(max n / tokens_per_phase), so the last phase has no reasoning left in any row.
  cts    CTS ratio decay (arXiv 2505.17827): order = least important token first (CTS score
         ``NLL(x_i | x_<i) − NLL(x_i | question, answer, x_<i)`` under a reference model, ties removing the
         later token first, so a phase keeps exactly ``twt.method.cts.select_top_ratio``'s tokens);
         removed(p) = n − kept_count(n, ratios[p]), kept 0 at ratio 0; P = len(ratios), ending at 0.

Removal smoothing (``smoothing`` = λ, off when None): each row of each phase removes ``o`` more tokens,
``P(o) ∝ exp(−λ·o)`` (a geometric draw, seeded by seed, phase and row), capped at ``n``. Deng et al. use
λ = 4 (98% of rows get o = 0). Tokens are those of the tokenizer given (the student's, or the reference
model's for ``cts``; the kept ids are decoded). The optimiser reset (``reset_optimizer``, default on) gives
every phase a fresh AdamW; off, a phase starts from the previous phase's AdamW moments (the learning-rate
schedule, warm-up then cosine, restarts in both cases).

Every phase writes one line of ``out_dir/phases.jsonl``: phase, removal settings, rows' mean kept tokens,
training summary and, with ``evaluate``, the phase model's held-out accuracy and output tokens — each
phase's evaluation is one step of the metric series (``log_metric(name, value, step)`` when given).
Intermediate models live in ``out_dir/.phases/phase-<p>`` until the run ends; a rerun resumes after the
last finished phase.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from twt.core.prompts import PromptTemplates, completion
from twt.core.records import DistillRow, read_rows
from twt.core.schema import InternalizeConfig
from twt.method.cts import kept_count

SCHEDULES = ("left", "cts")
PHASES_LOG = "phases.jsonl"
OPTIMIZER_FILE = "optimizer.pt"


class InternalizeError(ValueError):
    """A schedule that cannot run (schedule 'none', scores missing for 'cts', nothing to train on)."""


# --- the schedule: which tokens each phase removes ----------------------------------------------------------


def removal_order(n: int, schedule: str, scores: Sequence[float] | None = None) -> list[int]:
    """Positions of a row's ``n`` tokens in the order they are removed."""
    if schedule == "left":
        return list(range(n))
    if scores is None or len(scores) != n:
        raise InternalizeError(f"schedule 'cts' needs one score per token ({n}), got {scores!r}")
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    keep_first = np.argsort(-values, kind="stable")  # select_top_ratio's order: the best, earlier on ties
    return [int(i) for i in keep_first[::-1]]


def n_phases(lengths: Sequence[int], config: InternalizeConfig) -> int:
    """How many phases the schedule has on rows of these token lengths (the last removes everything)."""
    if config.schedule == "cts":
        return len(config.ratios)
    return max(1, math.ceil(max(lengths, default=0) / config.tokens_per_phase))


def removed_count(n: int, phase: int, config: InternalizeConfig) -> int:
    """Tokens of an ``n``-token reasoning removed at ``phase`` (1-based), before smoothing."""
    if config.schedule == "left":
        return min(n, phase * config.tokens_per_phase)
    ratio = config.ratios[phase - 1]
    return n - (kept_count(n, ratio) if ratio > 0 else 0)


def smoothing_offset(config: InternalizeConfig, phase: int, row: int, seed: int = 0) -> int:
    """Extra tokens removed from one row at one phase: geometric, ``P(o) ∝ exp(−λ·o)``; 0 when off."""
    if config.smoothing is None:
        return 0
    u = random.Random(f"smooth:{seed}:{phase}:{row}").random()
    return math.floor(math.log1p(-u) / -config.smoothing)  # inverse CDF of the geometric law


def kept_positions(
    n: int,
    phase: int,
    row: int,
    config: InternalizeConfig,
    scores: Sequence[float] | None = None,
    seed: int = 0,
) -> list[int]:
    """The positions a phase keeps of one row's tokens, in their original order (``seed``: smoothing's)."""
    removed = min(n, removed_count(n, phase, config) + smoothing_offset(config, phase, row, seed))
    gone = set(removal_order(n, config.schedule, scores)[:removed])
    return [i for i in range(n) if i not in gone]


def phase_rows(
    token_ids: Sequence[Sequence[int]],
    phase: int,
    config: InternalizeConfig,
    scores: Sequence[Sequence[float]] | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """The kept token ids of every row at ``phase``."""
    row_scores = [None] * len(token_ids) if scores is None else scores
    return [
        [ids[i] for i in kept_positions(len(ids), phase, r, config, row_scores[r], seed)]
        for r, ids in enumerate(token_ids)
    ]


# --- training -----------------------------------------------------------------------------------------------


@dataclass
class PhaseRecord:
    phase: int
    schedule: str
    removed: int | float  # tokens per phase (left) or the removed share 1 − ratio (cts)
    kept_tokens_mean: float
    rows_without_reasoning: int
    pairs: int
    training: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    last: bool = False


def cts_scores(
    rows: Sequence[DistillRow],
    reference,
    tokenizer,
    condition: str,
    window: int,
    templates: PromptTemplates | None = None,
) -> list[np.ndarray]:
    """CTS scores of every row's reasoning tokens under the reference ``(model, tokenizer)``, conditioned on
    ``condition``, in windows of ``window`` tokens (``compression.condition``, ``compression.window``)."""
    from twt.method.cts import condition_text, token_scores

    return token_scores(
        reference,
        tokenizer,
        [condition_text(r, condition, templates) for r in rows],
        [r.reasoning for r in rows],
        window=window,
    )


def run_internalize(
    rows_path: str | os.PathLike,
    base_model: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: InternalizeConfig,
    sft,
    *,
    condition: str | None = None,
    window: int | None = None,
    seed: int = 0,
    reference_model: str | os.PathLike | None = None,
    templates: PromptTemplates | None = None,
    evaluate: Callable[[Path], dict] | None = None,
    log_metric: Callable[..., None] | None = None,
    extra_lineage: dict | None = None,
    progress: bool = True,
) -> dict:
    """Train the schedule's phases from ``base_model`` (the stage-1 student) on the full reasoning of the
    rows of ``rows_path``; the last phase's model goes to ``out_dir``. ``config``'s schedule is 'left' or
    'cts'; ``sft`` is a ``twt.training.sft.SFTConfig`` (its budget is replaced by ``updates_per_phase``);
    ``reference_model`` scores tokens for ``cts`` (default: ``base_model``), conditioned on ``condition``
    in windows of ``window`` tokens (``compression.condition`` and ``compression.window``: required for
    ``cts``); ``seed`` seeds the smoothing draws; ``evaluate(model_dir)`` returns
    ``{"accuracy", "mean_output_tokens", ...}``. Returns ``{"phases": [...], "model": out_dir}``.
    """
    from transformers import AutoTokenizer

    from twt.training.sft import train_sft
    from twt.training.stages import parent_stages

    if config.schedule not in SCHEDULES:
        raise InternalizeError(f"schedule {config.schedule!r} has no phases; schedules are {SCHEDULES}")
    rows = list(read_rows(rows_path, DistillRow))
    if not rows:
        raise InternalizeError(f"{rows_path}: no rows to internalise")
    templates = templates or PromptTemplates()
    out = Path(out_dir)
    work = out / ".phases"
    scores = None
    if config.schedule == "cts" and (condition is None or window is None):
        raise InternalizeError("schedule 'cts' scores tokens: give its condition and window (compression's)")
    if config.schedule == "cts":
        from twt.method.cts import load_reference

        reference, tokenizer = load_reference(reference_model or base_model, device="cpu")
        scores = cts_scores(rows, reference, tokenizer, condition, window, templates)
        del reference
    else:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    ids = tokenizer([r.reasoning for r in rows], add_special_tokens=False)["input_ids"]
    total = n_phases([len(i) for i in ids], config)
    done = _read_log(out / PHASES_LOG)
    if done and done[-1].get("last"):
        return {"phases": done, "model": str(out)}
    parent = Path(base_model) if not done else work / f"phase-{len(done)}"
    schedule = {
        **config.model_dump(),
        "condition": condition,
        "window": window,
        "seed": seed,
    }  # for the lineage
    records = [*done]
    for phase in range(len(done) + 1, total + 1):
        kept = phase_rows(ids, phase, config, scores, seed)
        texts = [tokenizer.decode(k).strip() if k else "" for k in kept]
        pairs = list(
            dict.fromkeys(
                (templates.render("solve", question=r.question), completion(t or None, r.answer))
                for r, t in zip(rows, texts, strict=True)
            )
        )
        target = out if phase == total else work / f"phase-{phase}"
        shutil.rmtree(target / "checkpoints", ignore_errors=True)
        phase_sft = replace(sft, updates=config.updates_per_phase, max_updates=None)
        optimizer = None if config.reset_optimizer else work / OPTIMIZER_FILE
        lineage = {
            **(extra_lineage or {}),
            "stage": 2,
            "internalize": {**schedule, "phase": phase, "phases": total},
            "stages": [*parent_stages(base_model), {"stage": 2, "phase": phase, "parent": str(parent)}],
        }
        training = train_sft(
            pairs, parent, target, phase_sft, lineage=lineage, progress=progress, optimizer_state=optimizer
        )
        record = PhaseRecord(
            phase=phase,
            schedule=config.schedule,
            removed=(
                config.tokens_per_phase * phase
                if config.schedule == "left"
                else round(1 - config.ratios[phase - 1], 6)
            ),
            kept_tokens_mean=round(sum(map(len, kept)) / len(kept), 3),
            rows_without_reasoning=sum(not k for k in kept),
            pairs=len(pairs),
            training={k: training.get(k) for k in ("updates", "first_loss", "final_loss", "seconds")},
            evaluation=evaluate(target) if evaluate is not None else {},
            last=phase == total,
        )
        records.append(asdict(record))
        with (out / PHASES_LOG).open("a") as handle:
            handle.write(json.dumps(records[-1]) + "\n")
        if log_metric is not None:
            for name in ("accuracy", "mean_output_tokens"):
                if name in record.evaluation:
                    log_metric(f"internalize_{name}", float(record.evaluation[name]), phase)
            log_metric("internalize_kept_tokens", record.kept_tokens_mean, phase)
            if record.training.get("final_loss") is not None:
                log_metric("internalize_final_loss", float(record.training["final_loss"]), phase)
        if phase > 1 and (work / f"phase-{phase - 1}").is_dir():
            shutil.rmtree(work / f"phase-{phase - 1}")
        parent = target
    shutil.rmtree(work, ignore_errors=True)
    return {"phases": records, "model": str(out)}


def _read_log(path: Path) -> list[dict]:
    """The finished phases of an earlier, interrupted run (only those whose model is still there)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    last = path.parent / ".phases" / f"phase-{len(records)}"
    finished = records and records[-1].get("last") and (path.parent / "model.safetensors").is_file()
    if records and not finished and not (last / "model.safetensors").is_file():
        path.unlink()
        return []
    return records
