"""Where a stage's training runs: in this process, in N local processes (torchrun), or in a Kubeflow job.

    job = StageJob(stage=1, rows="dcrs/distill.jsonl", base="tiny/student-base", out="stage1",
                   sft=asdict(SFTConfig(batch_size=8)))
    launch_local(job, processes=2)              # torchrun ... -m twt.cli train-worker --spec '<json>'
    run_worker(job)                             # what each of those processes runs

A ``StageJob`` is everything a training process needs, as JSON, so the same spec runs through the same
entry point (``twt train-worker``) in this process's children or in the pods of a TrainJob/PyTorchJob
(``twt.trainjob``). In a job the pods cannot see the step pod's files, so ``rows`` and ``base`` may be
URIs (``s3://``, fetched by each node's first process) and ``out_uri`` names where the first process
publishes the trained model (``twt.store.put_dir``) for the step to fetch.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from twt.distributed import torchrun_command

RESULT_FILE = "twt.json"


@dataclass
class StageJob:
    """One stage's training, as every process (local or in a training job) receives it."""

    stage: int
    rows: str
    base: str
    out: str
    sft: dict = field(default_factory=dict)  # twt.train.SFTConfig fields
    mix_previous: float = 0.0
    lineage: dict = field(default_factory=dict)
    out_uri: str | None = None  # publish the trained model here (training jobs)
    progress: bool = True

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StageJob:
        return cls(**json.loads(text))


def _is_uri(ref: str) -> bool:
    return ref.startswith(("s3://", "file://"))


def _local_copy(ref: str, scratch: Path, name: str) -> str:
    """A local path for ``ref``: itself, or a copy fetched once per node (a lock orders its processes)."""
    if not _is_uri(ref):
        return ref
    from twt import store

    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / name
    with (scratch / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            if store.exists(ref) and not ref.endswith(".jsonl"):
                store.get_dir(ref, target)
            else:
                store.get_file(ref, target)
    return str(target)


def run_worker(job: StageJob) -> dict:
    """Train the stage in this process (one of ``WORLD_SIZE`` under torchrun); the first one publishes."""
    from twt.stages import run_stage
    from twt.train import SFTConfig

    scratch = Path(job.out).parent / f".{Path(job.out).name}.inputs"
    rows = _local_copy(job.rows, scratch, "rows.jsonl")
    base = _local_copy(job.base, scratch, "base")
    result = run_stage(
        job.stage,
        rows,
        base,
        job.out,
        SFTConfig(**job.sft),
        mix_previous=job.mix_previous,
        extra_lineage=job.lineage,
        progress=job.progress,
    )
    if job.out_uri and int(os.environ.get("RANK", "0")) == 0:
        from twt import store

        store.put_dir(job.out, job.out_uri, metadata={"stage": job.stage})
    return result


def result_of(out: str | os.PathLike) -> dict:
    """The stage record ``run_stage`` returns, read back from a trained model's ``twt.json``."""
    record = json.loads((Path(out) / RESULT_FILE).read_text())
    return {**record["stages"][-1], "training": record["training"]}


class LaunchError(ValueError):
    """The training processes failed; the message names the exit code."""


def launch_local(job: StageJob, processes: int) -> dict:
    """Run ``job`` in ``processes`` local processes (torchrun, one node); the stage record."""
    command = torchrun_command(["-m", "twt.cli", "train-worker", "--spec", job.to_json()], processes)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        raise LaunchError(
            f"{processes} training processes of stage {job.stage} failed (exit {done.returncode})"
        )
    return result_of(job.out)
