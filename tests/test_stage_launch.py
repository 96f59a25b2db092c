"""Where a stage trains: the engine choice, and a whole TrainJob round trip — inputs up to S3, the job's
`twt train-worker` run by KubeApiDouble's stand-in kubelet on this machine, the model back from S3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kube_api_double import KubeApiDouble
from kubernetes import client
from test_stages import _rows
from test_train import base_model  # noqa: F401  (fixture)

from twt.config import TrainingConfig, default_config_path, parse_config
from twt.records import write_rows
from twt.slices import stage_settings
from twt.stage_launch import LaunchError, choose_engine, launch_job, launch_stage, stage_sft
from twt.trainjob import TrainJobError, kube_clients


@pytest.mark.parametrize(
    ("settings", "in_cluster", "engine"),
    [
        ({}, True, "inprocess"),
        ({"processes": 2, "device": "cpu"}, False, "torchrun"),
        ({"processes": 2, "device": "cpu"}, True, "torchrun"),  # CPU processes: no GPU asked for
        ({"processes": 4}, True, "trainjob"),  # 4 GPUs in the cluster
        ({"processes": 4}, False, "torchrun"),  # 4 GPUs on this machine
        ({"processes": 4, "nodes": 2, "engine": "pytorchjob"}, False, "pytorchjob"),
        ({"processes": 1, "engine": "trainjob"}, True, "inprocess"),  # one GPU: no job needed
        ({"nodes": 2}, True, "trainjob"),
    ],
)
def test_the_engine_follows_gpus_nodes_and_the_setting(settings: dict, in_cluster: bool, engine: str) -> None:
    assert choose_engine(TrainingConfig(**settings), in_cluster=in_cluster) == engine


def test_several_nodes_without_a_job_engine_is_one_line() -> None:
    with pytest.raises(
        LaunchError, match=r"training.nodes is 2: several nodes need engine trainjob or pytorchjob"
    ):
        choose_engine(TrainingConfig(nodes=2, engine="local"), in_cluster=True)


def _run(tmp: Path, base: Path, **training):
    data = yaml.safe_load(default_config_path().read_text())
    data["student"]["model"] = str(base)
    data["stages"] = {
        "common": {"updates": 4, "batch_size": 4, "max_length": 48, "save_every": 2},
        "stage1": {},
    }
    data["training"] = training
    return parse_config(yaml.safe_dump(data), source="test", base_dir=str(tmp))


def test_the_checkpoint_location_derives_from_run_and_stage(tmp_path: Path, base_model: Path) -> None:  # noqa: F811
    run = _run(tmp_path, base_model, checkpoints="s3://ck/prefix", parallel="ddp")
    sft = stage_sft(stage_settings(run, 2), "run-42")
    assert sft.checkpoint_uri == f"s3://ck/prefix/{run.name}/run-42/stage2"
    assert sft.save_every == 2 and sft.parallel == "ddp" and sft.device is None
    assert stage_sft(stage_settings(_run(tmp_path, base_model), 1), None).checkpoint_uri.endswith(
        f"{run.name}/local/stage1"
    )


def test_a_process_count_that_does_not_divide_the_batch_stops_the_stage(tmp_path: Path, base_model) -> None:  # noqa: F811
    run = _run(tmp_path, base_model, processes=3, device="cpu")
    write_rows(tmp_path / "rows.jsonl", _rows(8))
    with pytest.raises(ValueError, match=r"^3 processes do not divide the global batch of 4 rows"):
        launch_stage(stage_settings(run, 1), tmp_path / "rows.jsonl", str(base_model), tmp_path / "out", {})
    assert not (tmp_path / "out").exists()


def _kubelet(tmp: Path, env: dict):
    """Run the TrainJob's trainer command (one process: no GPUs here) as a node's pod would."""

    def run(job: dict) -> tuple[int, str]:
        trainer = job["spec"]["trainer"]
        pod_env = {**os.environ, **env, **{e["name"]: e["value"] for e in trainer["env"]}, "TMPDIR": str(tmp)}
        done = subprocess.run(
            [sys.executable, "-m", "twt.cli", *trainer["args"]], env=pod_env, capture_output=True, text=True
        )
        return done.returncode, done.stdout + done.stderr

    return run


def test_a_stage_runs_as_a_trainjob_and_its_model_comes_back(tmp_path: Path, base_model: Path, s3) -> None:  # noqa: F811
    (tmp_path / "pod").mkdir()
    write_rows(tmp_path / "rows.jsonl", _rows(24))
    run = _run(tmp_path, base_model, processes=4, checkpoints=s3.uri("ck"), image="twt:test", namespace="twt")
    sft_job = stage_sft(stage_settings(run, 1), "run-7")
    from dataclasses import asdict

    from twt.stage_launch import StageJob

    job = StageJob(1, str(tmp_path / "rows.jsonl"), str(base_model), str(tmp_path / "model"), asdict(sft_job))
    lines: list[str] = []
    with KubeApiDouble("execute", executor=_kubelet(tmp_path / "pod", {})) as api:
        clients = kube_clients(client.ApiClient(client.Configuration(host=api.url)))
        result = launch_job(
            stage_settings(run, 1), job, "trainjob", clients=clients, log=lines.append, poll_s=0.1
        )
        (submitted,) = api.jobs.values()
    assert (
        submitted["spec"]["trainer"]["numProcPerNode"] == 4
        and submitted["spec"]["trainer"]["image"] == "twt:test"
    )
    assert submitted["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    assert result["training"]["updates"] == 4 and result["rows"] == 24
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert any(line.endswith(": succeeded (jobset completed successfully)") for line in lines)
    pod_lines = [line.split("] ", 1)[1] for line in lines if line.startswith("[twt-demo-s1-")]
    assert any(line.startswith("stage 1: 4 updates on 1 processes, loss") for line in pod_lines)


def test_a_failing_trainjob_fails_the_stage_with_its_error(tmp_path: Path, base_model: Path, s3) -> None:  # noqa: F811
    write_rows(tmp_path / "rows.jsonl", _rows(8))
    run = _run(tmp_path, base_model, processes=2, checkpoints=s3.uri("ck"), image="twt:test", namespace="twt")
    from dataclasses import asdict

    from twt.stage_launch import StageJob

    job = StageJob(
        1,
        str(tmp_path / "rows.jsonl"),
        str(base_model),
        str(tmp_path / "m"),
        asdict(stage_sft(stage_settings(run, 1), "r")),
    )
    lines: list[str] = []
    with KubeApiDouble("execute", executor=lambda job: (1, "twt: error: CUDA out of memory\n")) as api:
        clients = kube_clients(client.ApiClient(client.Configuration(host=api.url)))
        with pytest.raises(TrainJobError, match=r"^TrainJob twt-.* in namespace twt failed: jobset failed"):
            launch_job(stage_settings(run, 1), job, "trainjob", clients=clients, log=lines.append, poll_s=0.1)
    assert any(line.endswith("twt: error: CUDA out of memory") for line in lines)
    local = _run(tmp_path, base_model, processes=2, image="x")  # checkpoints on this pod's disk
    job.sft = asdict(stage_sft(stage_settings(local, 1), "r"))
    with pytest.raises(LaunchError, match=r"training.checkpoints must be s3://"):
        launch_job(stage_settings(local, 1), job, "trainjob", clients=clients)
