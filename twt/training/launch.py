"""Where a stage's training runs: in this process, in N local processes (torchrun), or in a Kubeflow job.

    step = stage_settings(config, 1)            # twt.steps.settings.StageSettings
    job = stage_job(step, "dcrs/distill.jsonl", "tiny/student-base", "stage1", lineage={})
    launch_stage(step, job)                     # where step.launch says: here, torchrun or a job
    launch_local(job, processes=2)              # torchrun ... -m twt.app.cli train-worker --spec '<json>'
    run_worker(job)                             # what each of those processes runs

A ``StageJob`` is everything a training process needs, as JSON: the stage's settings sections as they are
(``StageConfig``, ``TrainingConfig``) plus the few runtime values no section holds; each process builds the
trainer's settings from them once (``StageJob.sft``). The same spec runs through the same entry point
(``twt train-worker``) in this process's children or in the pods of a TrainJob/PyTorchJob
(``twt.training.jobs``). In a job the pods cannot see the step pod's files, so ``rows`` and ``base`` may be
URIs (``s3://``, fetched by each node's first process) and ``out_uri`` names where the first process
publishes the trained model (``twt.core.store.put_dir``) for the step to fetch.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from twt.core.records import read_json
from twt.core.schema import StageConfig, TrainingConfig
from twt.training.distributed import torchrun_command
from twt.training.sft import SFTConfig

RESULT_FILE = "twt.json"


@dataclass
class StageJob:
    """One stage's training, as every process (local or in a training job) receives it."""

    stage: int
    rows: str
    base: str
    out: str  # "" in a training job: TMPDIR/twt-job/out
    training: dict = field(default_factory=dict)  # twt.core.schema.StageConfig as JSON ({}: its defaults)
    launch: dict = field(default_factory=dict)  # twt.core.schema.TrainingConfig as JSON ({}: its defaults)
    runtime: dict = field(default_factory=dict)  # SFTConfig fields no section holds: checkpoint_uri, ...
    lineage: dict = field(default_factory=dict)
    out_uri: str | None = None  # publish the trained model here (training jobs)
    progress: bool = True

    def sft(self) -> SFTConfig:
        """The trainer's settings: the sections, then the runtime values (``SFTConfig.from_stage``)."""
        launch = TrainingConfig.model_validate(self.launch)
        return SFTConfig.from_stage(StageConfig.model_validate(self.training), launch, **self.runtime)

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
    from twt.core import store

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
    from twt.training.stages import run_stage

    if not job.out:  # in a training job's pod: one directory per node, under TMPDIR
        job = replace(job, out=os.path.join(tempfile.gettempdir(), "twt-job", "out"))
    scratch = Path(job.out).parent / f".{Path(job.out).name}.inputs"
    rows = _local_copy(job.rows, scratch, "rows.jsonl")
    base = _local_copy(job.base, scratch, "base")
    result = run_stage(
        job.stage,
        rows,
        base,
        job.out,
        job.sft(),
        mix_previous=StageConfig.model_validate(job.training).mix_previous,
        extra_lineage=job.lineage,
        progress=job.progress,
    )
    if job.out_uri and int(os.environ.get("RANK", "0")) == 0:
        from twt.core import store

        store.put_dir(job.out, job.out_uri, metadata={"stage": job.stage})
    return result


def result_of(out: str | os.PathLike) -> dict:
    """The stage record ``run_stage`` returns, read back from a trained model's ``twt.json``."""
    record = read_json(Path(out) / RESULT_FILE, "trained model record", dict)
    return {**record["stages"][-1], "training": record["training"]}


class LaunchError(ValueError):
    """The training processes failed; the message names the exit code."""


def launch_local(job: StageJob, processes: int) -> dict:
    """Run ``job`` in ``processes`` local processes (torchrun, one node); the stage record."""
    command = torchrun_command(["-m", "twt.app.cli", "train-worker", "--spec", job.to_json()], processes)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, env=env, check=False)
    if done.returncode != 0:
        raise LaunchError(
            f"{processes} training processes of stage {job.stage} failed (exit {done.returncode})"
        )
    return result_of(job.out)


# --- choosing where a stage trains ------------------------------------------------------------------------


def choose_engine(training, in_cluster: bool | None = None) -> str:
    """ "inprocess", "torchrun", "trainjob" or "pytorchjob" for a ``twt.core.schema.TrainingConfig``.

    A stage that asks for more than one GPU in total, or more than one node, goes to a Kubeflow job
    (``engine`` trainjob/pytorchjob; "auto" = trainjob inside Kubernetes); several CPU processes, or
    ``engine: local``, run under torchrun in this pod; one process runs here.
    """
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) if in_cluster is None else in_cluster
    processes = training.processes * training.nodes
    big = training.nodes > 1 or (training.device != "cpu" and processes > 1)
    engine = training.engine
    if engine == "auto":
        engine = "trainjob" if big and in_cluster else "local"
    if engine == "local":
        if training.nodes > 1:
            raise LaunchError(
                f"training.nodes is {training.nodes}: several nodes need engine trainjob or pytorchjob"
            )
        return "torchrun" if processes > 1 else "inprocess"
    return engine if big else ("torchrun" if processes > 1 else "inprocess")


def stage_job(
    step,
    rows: str | os.PathLike,
    base: str,
    model_out: str | os.PathLike,
    lineage: dict,
    *,
    run_id: str | None = None,
    progress: bool = True,
    overrides: dict | None = None,
) -> StageJob:
    """The ``StageJob`` of a stage from its settings (``twt.steps.settings.StageSettings``): its sections,
    its checkpoint location (under ``launch.checkpoints``, per run and run id) and ``overrides`` that win
    (device, max_updates)."""
    from twt.training.checkpoints import checkpoint_uri

    where = checkpoint_uri(step.launch.checkpoints, run=step.run, run_id=run_id, stage=step.stage)
    return StageJob(
        step.stage,
        str(rows),
        str(base),
        str(model_out),
        training=step.training.model_dump(mode="json"),
        launch=step.launch.model_dump(mode="json"),
        runtime={"checkpoint_uri": where, **(overrides or {})},
        lineage=lineage,
        progress=progress,
    )


def launch_stage(step, job: StageJob, *, log=print) -> dict:
    """Train ``job`` (``stage_job``) where the ``launch`` settings of ``step``
    (``twt.steps.settings.StageSettings``) say; returns the stage record."""
    from twt.training.distributed import check_layout

    training = step.launch
    sft = job.sft()
    engine = choose_engine(training)
    world = training.processes * training.nodes
    check_layout(
        sft.batch_size, sft.grad_accum, world, sft.parallel, "cuda" if engine.endswith("job") else sft.device
    )
    if engine == "inprocess":
        return run_worker(job)
    if engine == "torchrun":
        return launch_local(job, training.processes)
    return launch_job(step, job, engine, log=log)


def job_pod(training, clients, log=print):
    """The ``trainjob.PodOverrides`` of a job this step submits: the step pod's own (in a pod: ``HOSTNAME``
    names it), with ``training.node_selector``, ``tolerations`` and ``priority_class`` where they are set
    (a step that waits off the GPU nodes names the GPU pool there)."""
    from twt.training import jobs as trainjob

    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("HOSTNAME"):
        pod = trainjob.step_pod_overrides(clients, os.environ["HOSTNAME"], trainjob.own_namespace())
    else:
        log("not in a pod: the training job gets only training.* scheduling and its runtime's secrets")
        pod = trainjob.PodOverrides()
    if training.node_selector is not None:
        pod.node_selector = dict(training.node_selector)
    if training.tolerations is not None:
        pod.tolerations = [dict(t) for t in training.tolerations]
    if training.priority_class is not None:
        pod.priority_class = training.priority_class
    return pod


def launch_job(step, job: StageJob, engine: str, *, clients=None, log=print, poll_s: float = 10) -> dict:
    """Run ``job`` as a TrainJob or PyTorchJob; inputs and the trained model travel through object storage."""
    from twt.core import store
    from twt.training import jobs as trainjob

    training = step.launch
    where = job.runtime["checkpoint_uri"]
    if not where.startswith("s3://"):
        raise LaunchError(
            f"a {engine} cannot see this pod's files: training.checkpoints must be s3://..., not {where}"
        )
    image = training.image or os.environ.get("TWT_IMAGE")
    if not image:
        raise LaunchError(f"a {engine} needs an image: set training.image or TWT_IMAGE")
    rows_uri = f"{where}/inputs/rows.jsonl"
    store.put_file(job.rows, rows_uri)
    base_uri = job.base
    if Path(job.base).is_dir():
        base_uri = f"{where}/inputs/base"
        if not store.exists(base_uri):
            store.publish_dir(job.base, base_uri)
    remote = replace(job, rows=rows_uri, base=base_uri, out="", out_uri=f"{where}/output", progress=False)
    gpus = training.processes if training.device != "cpu" else 0
    clients = clients or trainjob.kube_clients()
    spec = trainjob.JobSpec(
        name=trainjob.job_name(step.run, job.stage, where),
        namespace=training.namespace or trainjob.own_namespace(),
        image=image,
        args=["train-worker", "--spec", remote.to_json()],
        nodes=training.nodes,
        processes_per_node=training.processes,
        gpus_per_node=gpus,
        gpu_resource=training.gpu_resource,
        env=trainjob.step_env(),
        runtime=training.runtime,
        pod=job_pod(training, clients, log),
    )
    try:
        obj = trainjob.render_trainjob(spec) if engine == "trainjob" else trainjob.render_pytorchjob(spec)
    except trainjob.TrainJobError as err:
        raise LaunchError(str(err)) from None
    trainjob.validate(obj)
    trainjob.submit_and_wait(
        obj,
        clients,
        start_timeout_s=training.start_timeout_s,
        log=log,
        poll_s=poll_s,
    )
    shutil.rmtree(job.out, ignore_errors=True)
    store.get_dir(remote.out_uri, job.out)
    return result_of(job.out)
