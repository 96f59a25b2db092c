"""Several training processes with the results of one: the global batch, its split, the launcher.

    check_global_batch(batch_size=32, grad_accum=2, world=4)           # 4 divides 64 rows: fine
    rows = rank_micro_batches(plan[u * 2 : (u + 1) * 2], rank, world, batch_size=32)
    accelerator = make_accelerator("ddp", device="cpu", precision="no")
    subprocess.run(torchrun_command(["-m", "twt.app.cli", "distill", ...], processes=2))

The global batch of one optimiser update is ``batch_size × grad_accum`` rows (packed rows, or examples
without packing), whatever the process count: the run plans every update up front (``twt.training.sft``), and
each of ``world`` processes takes every ``world``-th row of the update, in micro-batches of at most
``batch_size`` rows. Every process divides its summed token loss by the target tokens of the WHOLE update
and multiplies by ``world`` (DDP and FSDP average gradients), so the update's gradient is the same sum over
the same tokens as in one process: 1 and N processes follow the same loss curve up to float rounding.

``parallel="ddp"`` replicates the model (it must fit on one device); ``"fsdp"`` shards parameters,
gradients and optimiser state over the processes (full shard, FSDP2 through ``accelerate``) and saves
sharded checkpoints, for models that do not fit. Processes start with ``torchrun`` (one per GPU; on CPU the
gloo backend), locally or, on Kubernetes, in the pods of a TrainJob/PyTorchJob (``twt.training.jobs``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from twt.core.schema import TrainingConfig, schema_default

PARALLEL = ("ddp", "fsdp")


class DistributedError(ValueError):
    """A process layout that cannot work (e.g. a process count that does not divide the global batch)."""


def world_from_env() -> tuple[int, int]:
    """(rank, world size) as ``torchrun`` sets them; (0, 1) outside a launch."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def in_launch() -> bool:
    """True inside a process started by ``torchrun`` (or a Kubeflow training job, which uses it)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def check_global_batch(batch_size: int, grad_accum: int, world: int) -> int:
    """The global batch in rows; ``DistributedError`` when ``world`` processes cannot split it evenly."""
    rows = batch_size * grad_accum
    if world < 1:
        raise DistributedError(f"the process count must be at least 1, got {world}")
    if rows % world:
        raise DistributedError(
            f"{world} processes do not divide the global batch of {rows} rows "
            f"(batch_size {batch_size} × grad_accum {grad_accum}); use a process count that divides {rows}"
        )
    return rows


def check_layout(batch_size: int, grad_accum: int, world: int, parallel: str, device: str | None) -> None:
    """Before launching: the global batch splits evenly, and FSDP has GPUs to shard over."""
    check_global_batch(batch_size, grad_accum, world)
    if parallel == "fsdp" and (device == "cpu" or (device is None and not _has_cuda())):
        raise DistributedError(
            "parallel=fsdp needs GPUs (accelerate shards on GPU-like devices); use ddp on CPU"
        )


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def rank_micro_batches(
    micro_batches: Sequence[Sequence[Sequence[int]]], rank: int, world: int, batch_size: int
) -> list[list[list[int]]]:
    """This process's share of one update: every ``world``-th row, in micro-batches of ≤ ``batch_size``.

    With one process this is the update's own micro-batches. A process may get no row (the short last
    update of a pass); the caller must still take part in the gradient exchange.
    """
    rows = [list(row) for batch in micro_batches for row in batch]
    mine = rows[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def make_accelerator(
    parallel: str = schema_default(TrainingConfig, "parallel"),
    *,
    device: str | None = None,
    precision: str = "no",
):
    """An ``accelerate.Accelerator`` for DDP, or for FSDP full shard with sharded state dicts."""
    from accelerate import Accelerator

    if parallel not in PARALLEL:
        raise DistributedError(f"parallel must be one of {PARALLEL}, got {parallel!r}")
    # one scheduler step per update: accelerate would step it once per process (it assumes sharded epochs)
    kwargs: dict = {
        "cpu": device == "cpu",
        "mixed_precision": precision,
        "step_scheduler_with_optimizer": False,
    }
    if parallel == "fsdp":
        from accelerate.utils import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2,
            reshard_after_forward=True,  # FSDP2's full shard
            state_dict_type="SHARDED_STATE_DICT",
            auto_wrap_policy="transformer_based_wrap",
            cpu_ram_efficient_loading=False,
        )
    return Accelerator(**kwargs)


def torchrun_command(
    args: Sequence[str],
    processes: int,
    *,
    nodes: int = schema_default(TrainingConfig, "nodes"),
    python: str | None = None,
) -> list[str]:
    """``python -m torch.distributed.run ... <args>`` for ``processes`` per node on this node.

    One node: ``--standalone`` (a local rendezvous on a free port). Several: the rendezvous comes from the
    environment the training job sets (``MASTER_ADDR``/``MASTER_PORT``, ``PET_*`` or ``NODE_RANK``).
    """
    command = [python or sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}"]
    if nodes == 1:
        command.append("--standalone")
    else:
        command += [
            f"--nnodes={nodes}",
            f"--node-rank={os.environ.get('NODE_RANK', os.environ.get('PET_NODE_RANK', '0'))}",
            f"--master-addr={os.environ.get('MASTER_ADDR', os.environ.get('PET_MASTER_ADDR', 'localhost'))}",
            f"--master-port={os.environ.get('MASTER_PORT', os.environ.get('PET_MASTER_PORT', '29500'))}",
        ]
    return [*command, *args]
