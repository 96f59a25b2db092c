"""Durable checkpoints: a SIGKILLed training process resumes through a local S3 server to the weights of an
uninterrupted run; half-written, corrupt and foreign checkpoints are skipped with a warning, never deleted."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from twt.core import store
from twt.training.checkpoints import CheckpointStore, checkpoint_uri
from twt.training.sft import SFTConfig, train_sft

TESTS = Path(__file__).parent


def _sha(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def _state(tmp: Path, name: str, payload: str) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "model.bin").write_text(payload)
    (d / "random_states_0.pkl").write_text("rng")
    return d


def test_the_location_derives_from_run_run_id_and_stage() -> None:
    assert checkpoint_uri("s3://b/ck/", run="demo", run_id="3f2a", stage=2) == "s3://b/ck/demo/3f2a/stage2"
    assert checkpoint_uri("/mnt/pvc", run="demo", run_id=None, stage=1) == "/mnt/pvc/demo/local/stage1"
    assert checkpoint_uri("/p", run="r", run_id="run/with spaces", stage=3) == "/p/r/run-with-spaces/stage3"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_restore_takes_the_newest_good_checkpoint_and_leaves_bad_ones(
    where: str, tmp_path: Path, request
) -> None:
    uri = str(tmp_path / "ck") if where == "local" else request.getfixturevalue("s3").uri("ck/run/id/stage1")
    warnings: list[str] = []
    ours = CheckpointStore(uri, "fp-ours", warn=warnings.append)
    ours.save(2, _state(tmp_path, "s2", "two"))
    ours.save(4, _state(tmp_path, "s4", "four"))
    CheckpointStore(uri, "fp-other").save(8, _state(tmp_path, "s8", "other config"))
    ours.save(6, _state(tmp_path, "s6", "six"))
    store.put_file(
        tmp_path / "s6" / "model.bin", f"{uri}/step-10/model.bin"
    )  # killed while saving: no manifest
    # step 6's bytes rot after publishing
    if where == "local":
        Path(uri, "step-6", "model.bin").write_text("rotten")
    else:
        s3 = request.getfixturevalue("s3")
        key = uri.split("/", 3)[3] + "/step-6/model.bin"
        s3.client.put_object(s3.bucket, key, io.BytesIO(b"rotten"), 6)

    step, got = ours.restore(tmp_path / "resume")
    assert step == 4 and (got / "model.bin").read_text() == "four"
    assert any("step-8" in w and "another configuration" in w for w in warnings)
    assert any("step-6" in w and "left in place" in w for w in warnings)
    assert not any("step-10" in w for w in warnings)  # never published: not a checkpoint at all

    ours.prune(keep=1)  # of ours, step 6 (newest, though rotten) stays; 2 and 4 go
    assert ours.published_steps() == [8, 6]  # the foreign one is never deleted
    ours.finish(keep_last=False)
    assert ours.published_steps() == [8]
    assert store.list_uris(f"{uri}/step-8/")  # still all there


def test_a_killed_run_resumes_from_s3_to_the_weights_of_an_uninterrupted_run(
    base_model: Path,
    sft_pairs,
    tmp_path: Path,
    s3,
) -> None:
    durable = s3.uri("checkpoints/demo/run-1/stage1")
    config = SFTConfig(
        updates=8, batch_size=8, grad_accum=2, max_length=64, save_every=2, seed=5, checkpoint_uri=durable
    )
    whole = train_sft(
        sft_pairs,
        base_model,
        tmp_path / "whole",
        SFTConfig(**{**asdict(config), "checkpoint_uri": None}),
        progress=False,
    )
    assert whole["resumed_from"] == 0

    spec = {
        "pairs": sft_pairs,
        "base": str(base_model),
        "out": str(tmp_path / "pod-1"),
        "config": asdict(config),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    marker = tmp_path / "hanging"
    worker = subprocess.Popen(
        [sys.executable, str(TESTS / "train_until_killed.py"), str(tmp_path / "spec.json"), str(marker), "5"],
        env={**os.environ, "PYTHONPATH": str(TESTS.parent)},
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), f"the training process never reached update 5 (exit {worker.poll()})"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert worker.returncode == -signal.SIGKILL
    assert CheckpointStore(durable, "").published_steps() == [4, 2]

    # the retry runs in a new pod: nothing local survives, only the durable location
    resumed = train_sft(sft_pairs, base_model, tmp_path / "pod-2", config, progress=False)
    assert resumed["resumed_from"] == 4
    assert _sha(tmp_path / "pod-2") == _sha(tmp_path / "whole")
    assert store.list_uris(durable + "/") == []  # the finished stage removed its checkpoints


def test_the_last_checkpoint_can_be_kept(base_model: Path, sft_pairs, tmp_path: Path) -> None:
    config = SFTConfig(updates=5, batch_size=8, max_length=64, save_every=2, keep_last_checkpoint=True)
    train_sft(sft_pairs, base_model, tmp_path / "out", config, progress=False)
    assert CheckpointStore(str(tmp_path / "out" / "checkpoints"), "").published_steps() == [4]


def test_twt_run_keeps_its_checkpoints_in_its_work_directory(tmp_path: Path, monkeypatch) -> None:
    """``twt run --workdir X``: the stages' checkpoints go under X, not under the configuration's workdir,
    and the run writes nothing outside X."""
    import yaml

    from twt.core.load import default_config_path, parse_config
    from twt.core.records import DistillRow, write_rows
    from twt.steps import workdir

    data = yaml.safe_load(default_config_path().read_text())
    data["workdir"] = "runs/from-the-config"  # relative: would land in the working directory
    data["stages"] = {"common": {"updates": 3, "batch_size": 4, "max_length": 64, "save_every": 1}}
    data["training"] = {"keep_last_checkpoint": True}
    config = parse_config(yaml.safe_dump(data), base_dir=default_config_path().parent)
    monkeypatch.chdir(tmp_path)
    run = workdir.RunDir(config, tmp_path / "X")
    rows = [
        DistillRow(id=f"q{i}", question=f"{i} + 1 =", reasoning=f"{i} + 1", answer=str(i + 1), source="t")
        for i in range(8)
    ]
    write_rows(run.distill_rows, rows)
    workdir.distill_stage(run, 1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X"]
    kept = CheckpointStore(str(tmp_path / "X" / "checkpoints" / "demo" / "local" / "stage1"), "")
    assert len(kept.published_steps()) == 1  # the last one, kept (keep_last_checkpoint)
