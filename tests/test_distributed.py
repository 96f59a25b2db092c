"""Several training processes give the results of one: the split of the global batch, and 2-process DDP
(gloo, real `torchrun` processes through `twt distill --processes 2`) against 1 process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import distill_rows
from safetensors.torch import load_file

from twt.core.load import default_config_path
from twt.core.records import write_rows
from twt.training.distributed import (
    DistributedError,
    check_global_batch,
    check_layout,
    rank_micro_batches,
    torchrun_command,
)


def test_the_global_batch_is_split_by_rows_whatever_the_process_count() -> None:
    update = [[[0, 1], [2]], [[3], [4, 5]], [[6]]]  # 3 micro-batches of an update (grad_accum 3)
    assert rank_micro_batches(update, 0, 1, batch_size=2) == [[[0, 1], [2]], [[3], [4, 5]], [[6]]]
    shares = [rank_micro_batches(update, r, 2, batch_size=2) for r in range(2)]
    assert shares == [[[[0, 1], [3]], [[6]]], [[[2], [4, 5]]]]
    rows = sorted(tuple(row) for share in shares for batch in share for row in batch)
    assert rows == sorted(tuple(row) for batch in update for row in batch)  # every row once
    assert rank_micro_batches([[[0]]], 1, 2, batch_size=2) == []  # the caller runs a zero-weight pass
    assert check_global_batch(32, 2, 4) == 64


def test_a_process_count_that_does_not_divide_the_global_batch_is_one_line() -> None:
    with pytest.raises(DistributedError, match=r"^3 processes do not divide the global batch of 8 rows"):
        check_global_batch(4, 2, 3)
    with pytest.raises(DistributedError, match="fsdp needs GPUs"):  # accelerate would fall back to DDP
        check_layout(4, 2, 2, "fsdp", "cpu")
    check_layout(4, 2, 2, "ddp", "cpu")


def test_torchrun_command_for_one_and_several_nodes(monkeypatch) -> None:
    one = torchrun_command(["-m", "twt.app.cli", "x"], 2, python="py")
    assert one == [
        "py",
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--standalone",
        "-m",
        "twt.app.cli",
        "x",
    ]
    monkeypatch.setenv("PET_NODE_RANK", "1")
    monkeypatch.setenv("PET_MASTER_ADDR", "job-node-0-0.job")
    several = torchrun_command(["x"], 4, nodes=2, python="py")
    assert "--nnodes=2" in several and "--node-rank=1" in several
    assert "--master-addr=job-node-0-0.job" in several and "--master-port=29500" in several


@pytest.fixture(scope="module")
def distill_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Stage-1 rows and a config that trains 6 updates of a global batch of 4 packed rows."""
    tmp = tmp_path_factory.mktemp("ddp")
    write_rows(tmp / "rows.jsonl", distill_rows(48))
    data = yaml.safe_load(default_config_path().read_text())
    data["stages"] = {
        "common": {"updates": 6, "batch_size": 4, "max_length": 48, "learning_rate": 3e-3, "warmup_ratio": 0},
        "stage1": {},
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(data))
    return tmp / "rows.jsonl", tmp / "config.yaml"


def _distill(rows: Path, config: Path, base: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "twt.app.cli", "distill", "--stage", "1", "--data", str(rows)]
    command += ["--base", str(base), "--out", str(out), "--config", str(config), "--device", "cpu", "--quiet"]
    return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=300)


def test_two_ddp_processes_reach_the_weights_and_losses_of_one(
    distill_inputs,
    base_model: Path,
    tmp_path: Path,
) -> None:
    rows, config = distill_inputs
    one = _distill(rows, config, base_model, tmp_path / "one", "--processes", "1")
    two = _distill(rows, config, base_model, tmp_path / "two", "--processes", "2")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    trained = [json.loads((tmp_path / d / "twt.json").read_text())["training"] for d in ("one", "two")]
    assert [t["processes"] for t in trained] == [1, 2]
    assert trained[0]["updates"] == trained[1]["updates"] == 6
    for key in ("first_loss", "final_loss"):
        assert trained[1][key] == pytest.approx(trained[0][key], rel=1e-4)
    assert trained[0]["final_loss"] < trained[0]["first_loss"]
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("one", "two"))
    base = load_file(base_model / "model.safetensors")
    moved = max((a[k] - base[k]).abs().max().item() for k in a)
    assert moved > 1e-3  # training did change the weights ...
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)  # ... the same way


def test_a_process_count_that_does_not_divide_the_batch_fails_before_launching(
    distill_inputs,
    base_model: Path,
    tmp_path: Path,
) -> None:
    rows, config = distill_inputs
    done = _distill(rows, config, base_model, tmp_path / "three", "--processes", "3")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "twt: error: 3 processes do not divide the global batch of 4 rows (batch_size 4 × grad_accum 1); "
        "use a process count that divides 4"
    ]
    assert not (tmp_path / "three").exists()


@pytest.mark.slow  # ~35 s idle, 75 s on a busy 2-core machine
def test_two_processes_resume_from_their_checkpoint_to_the_same_weights(
    distill_inputs,
    base_model: Path,
    tmp_path: Path,
) -> None:
    """Both processes save their part (random states per process), the first publishes; a rerun fetches it."""
    from twt.training.checkpoints import CheckpointStore
    from twt.training.launch import StageJob, launch_local

    rows, _ = distill_inputs
    training = {"updates": 6, "batch_size": 4, "max_length": 48, "learning_rate": 3e-3, "save_every": 2}
    launch = {"device": "cpu", "keep_last_checkpoint": True}
    runtime = {"checkpoint_uri": str(tmp_path / "ck")}

    def job(out: str) -> StageJob:
        return StageJob(1, str(rows), str(base_model), str(tmp_path / out), training, launch, runtime)

    first = launch_local(job("a"), 2)
    assert CheckpointStore(str(tmp_path / "ck"), "").published_steps() == [4]  # the last one kept
    assert {p.name for p in (tmp_path / "ck" / "step-4").iterdir()} >= {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }
    again = launch_local(job("b"), 2)
    assert (first["training"]["resumed_from"], again["training"]["resumed_from"]) == (0, 4)
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("a", "b"))
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
