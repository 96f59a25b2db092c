"""Conditional token selection (CTS, arXiv 2505.17827): a reference model scores each reasoning token by
NLL(x_i | prefix) - NLL(x_i | condition, prefix), and the top ratio of tokens is kept."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from twt.core.prompts import ANSWER_PREFIX, PromptTemplates
from twt.core.records import DistillRow

CONDITIONS = ("question_answer", "question")  # what the conditioned pass sees besides the reasoning


def kept_count(n: int, ratio: float) -> int:
    """How many of ``n`` tokens to keep: round-half-to-even(α·n), at least 1 when n > 0, at most n."""
    if n <= 0:
        return 0
    return min(n, max(1, round(round(ratio * n, 9))))  # round(·, 9) first: 0.7*5 must count as 3.5


def select_windowed(scores: np.ndarray, ratio: float, segment: int) -> np.ndarray:
    """Keep mask like LLMLingua's iterative compression, which the CTS paper's code runs (its
    ``iterative_size``): the reasoning is cut into consecutive segments of ``segment`` tokens and each keeps
    its own top ``ratio`` (``select_top_ratio`` per segment): the share holds locally, not just per row."""
    if segment < 1:
        raise ValueError(f"segment must be >= 1, got {segment}")
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.zeros(len(scores), dtype=bool)
    for start in range(0, len(scores), segment):
        keep[start : start + segment] = select_top_ratio(scores[start : start + segment], ratio)
    return keep


def context_length(model) -> int | None:
    """The longest sequence a causal LM takes (``max_position_embeddings`` or ``n_positions``), if known."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def select_top_ratio(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Boolean keep mask over ``scores`` (original order): the ``kept_count`` highest, ties to the earlier
    position; NaN scores rank last."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    keep = np.zeros(len(scores), dtype=bool)
    order = np.argsort(-scores, kind="stable")  # stable: equal scores stay in position order
    keep[order[: kept_count(len(scores), ratio)]] = True
    return keep


def condition_text(row: DistillRow, condition: str, templates: PromptTemplates | None = None) -> str:
    """The text before the reasoning: the solve prompt, plus ``Answer: <answer>`` for question_answer."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    text = (templates or PromptTemplates()).render("solve", question=row.question)
    return text + f"{ANSWER_PREFIX} {row.answer}\n" if condition == "question_answer" else text


def window_plan(n_condition: int, n_tokens: int, window: int) -> tuple[int, list[tuple[int, int, int]]]:
    """``(c, [(context_start, score_start, end), ...])``: keep the last ``c`` condition tokens; each window
    feeds ``start + condition[-c:] + x[context_start:end]`` and scores ``x[score_start:end]``."""
    if window < 8:
        raise ValueError(f"window must be >= 8, got {window}")
    if 1 + n_condition + n_tokens <= window:
        return n_condition, [(0, 0, n_tokens)]
    c = min(n_condition, window // 2 - 1)
    span = window - 1 - c  # reasoning tokens per window (R)
    stride = max(1, span // 2)  # new tokens per later window (S)
    end = min(n_tokens, span)
    plan = [(0, 0, end)]
    while end < n_tokens:
        start, end = end, min(n_tokens, end + stride)
        plan.append((max(0, end - span), start, end))
    return c, plan


@dataclass(frozen=True)
class _Sequence:
    ids: list[int]
    row: int
    conditioned: bool
    first: int  # index in ids of the first scored token
    start: int  # reasoning position of that token


def _start_token(tokenizer) -> int:
    for token in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token is not None:
            return int(token)
    raise ValueError("the reference tokenizer has neither a BOS nor an EOS token to start a sequence with")


def _model_device(model):
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def score_token_ids(
    model,
    tokenizer,
    condition_ids: Sequence[list[int]] | None,
    reasoning_ids: Sequence[list[int]],
    *,
    window: int,
    batch_size: int = 32,
    device=None,
    progress: bool = False,
) -> list[np.ndarray]:
    """``token_scores`` on token ids (see there); ``window`` is ``compression.window``."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if condition_ids is not None and len(condition_ids) != len(reasoning_ids):
        raise ValueError(f"{len(condition_ids)} conditions for {len(reasoning_ids)} reasonings")
    device = torch.device(device) if device is not None else _model_device(model)
    begin = _start_token(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else begin
    sequences: list[_Sequence] = []
    for row, ids in enumerate(reasoning_ids):
        if not ids:
            continue
        cond = list(condition_ids[row]) if condition_ids is not None else []
        c, plan = window_plan(len(cond), len(ids), window)
        cond = cond[len(cond) - c :]
        for context, start, end in plan:
            piece = list(ids[context:end])
            sequences.append(_Sequence([begin, *piece], row, False, 1 + start - context, start))
            if condition_ids is not None:
                sequences.append(_Sequence([begin, *cond, *piece], row, True, 1 + c + start - context, start))
    nll = {
        (row, flag): np.zeros(len(ids), dtype=np.float64)
        for row, ids in enumerate(reasoning_ids)
        for flag in ((False, True) if condition_ids is not None else (False,))
    }
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))  # similar lengths batch up
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.inference_mode():
        for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
            width = max(len(sequences[i].ids) for i in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, i in enumerate(batch):  # right padding: real tokens never attend to pads
                input_ids[b, : len(sequences[i].ids)] = torch.tensor(sequences[i].ids)
                mask[b, : len(sequences[i].ids)] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            # logits at position t predict token t + 1; one row at a time keeps the float32 copy small,
            # and one transfer per batch avoids a device sync per row
            pieces = [
                F.cross_entropy(
                    logits[b, sequences[i].first - 1 : len(sequences[i].ids) - 1].float(),
                    input_ids[b, sequences[i].first : len(sequences[i].ids)],
                    reduction="none",
                )
                for b, i in enumerate(batch)
            ]
            flat = torch.cat(pieces).cpu().numpy()
            offset = 0
            for i, piece in zip(batch, pieces, strict=True):
                seq, count = sequences[i], len(piece)
                nll[(seq.row, seq.conditioned)][seq.start : seq.start + count] = flat[offset : offset + count]
                offset += count
    if condition_ids is None:
        return [nll[(row, False)] for row in range(len(reasoning_ids))]
    return [nll[(row, False)] - nll[(row, True)] for row in range(len(reasoning_ids))]


def token_scores(
    model,
    tokenizer,
    conditions: Sequence[str] | None,
    reasonings: Sequence[str],
    *,
    window: int,
    batch_size: int = 32,
    device=None,
    progress: bool = False,
) -> list[np.ndarray]:
    """One score per reasoning token (tokenized without special tokens), per row.

    With ``conditions`` the CTS score ``NLL(x_i | s, x_<i) − NLL(x_i | s, condition, x_<i)``; with None the
    unconditional ``NLL(x_i | s, x_<i)``. ``model(input_ids=, attention_mask=).logits`` is all that is used
    of the model; inputs go to ``device`` (default: the model's device). ``window`` (``compression.window``)
    caps the tokens of one scored sequence (``window_plan``).
    """
    reasoning_ids = tokenizer(list(reasonings), add_special_tokens=False)["input_ids"] if reasonings else []
    condition_ids = None
    if conditions is not None:
        condition_ids = (
            tokenizer(list(conditions), add_special_tokens=False)["input_ids"] if conditions else []
        )
    return score_token_ids(
        model,
        tokenizer,
        condition_ids,
        reasoning_ids,
        window=window,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )


def load_reference(path: str | os.PathLike, device=None, dtype: str = "auto"):
    """``(model, tokenizer)`` of a causal LM directory, in eval mode on ``device`` (default: CUDA when
    available); dtype "auto" = bfloat16 on CUDA, float32 elsewhere."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from twt.core.model_cache import local_model

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    chosen = dtypes.get(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    path = local_model(str(path))  # s3:// and file:// through twt.core.store
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=chosen).to(device).eval()
    return model, tokenizer
