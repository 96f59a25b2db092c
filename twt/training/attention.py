"""How packed rows reach the attention kernel: flash-attention varlen, or a block-diagonal 4-D mask.

    impl = resolve_attn_implementation("auto")   # flash_attention_2 on a GPU with flash_attn, else sdpa
    if uses_varlen(impl):
        batch = collate_flat(rows, ids, labels)     # one row, position_ids restart per example, no mask

Flash attention cannot take a 4-D mask. Its varlen kernels instead read sequence boundaries from
``position_ids`` that restart at 0 (transformers turns them into ``cu_seqlens`` when the batch is one row and
no mask is given), so a packed micro-batch is flattened into a single row without any padding: each example
still attends only to itself, and no compute goes to padding. Every other implementation (sdpa, eager)
gets the 4-D block-diagonal causal mask of ``twt.training.sft.collate``.
"""

from __future__ import annotations

import importlib.util

VARLEN = ("flash_attention_2", "flash_attention_3")


def uses_varlen(attn_implementation: str | None) -> bool:
    """True when packed rows should go flat with restarting ``position_ids`` (flash attention kernels)."""
    impl = (attn_implementation or "").lower()
    return impl in VARLEN or (impl.startswith("kernels-") and "flash" in impl) or "flash-attn" in impl


def resolve_attn_implementation(requested: str, *, cuda: bool | None = None) -> str:
    """``requested`` itself, except "auto": flash_attention_2 on a GPU with ``flash_attn``, else sdpa."""
    if requested != "auto":
        return requested
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    has_flash = importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if cuda and has_flash else "sdpa"


def collate_flat(batch: list[list[int]], ids: list[list[int]], labels: list[list[int]]) -> dict:
    """One micro-batch as a single row: the examples end to end, ``position_ids`` restarting per example."""
    import torch

    order = [i for row in batch for i in row]
    input_ids = torch.tensor([[t for i in order for t in ids[i]]], dtype=torch.long)
    label_t = torch.tensor([[t for i in order for t in labels[i]]], dtype=torch.long)
    position = torch.tensor([[p for i in order for p in range(len(ids[i]))]], dtype=torch.long)
    return {"input_ids": input_ids, "labels": label_t, "position_ids": position}
