"""The container runner without an engine (the full run: `make e2e-containers`, tests/e2e_containers.py).

An unreachable socket ends in one line naming it; the cluster's Secrets become the same environment
variables in the containers as in a pod; a failing step is reported by its own error line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.containers import ContainerRunError, connect, error_line, secret_environment

ROOT = Path(__file__).resolve().parents[1]


def test_an_unreachable_socket_is_named(monkeypatch, tmp_path: Path) -> None:
    socket = f"unix://{tmp_path}/nothing.sock"
    monkeypatch.setenv("DOCKER_HOST", socket)
    with pytest.raises(ContainerRunError, match=f"no Docker API at {socket}"):
        connect()


def test_the_cli_says_it_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": f"unix://{tmp_path}/nothing.sock", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "local", "--runner", "docker", "--config", "configs/smoke.yaml",
         "--root", str(tmp_path / "root")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1
        and "nothing.sock" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_secrets_become_the_pods_environment() -> None:
    secrets = {
        "minio": {"accesskey": "AK", "secretkey": "SK"},
        "model_registry": {"address": "mr:8080"},
        "teacher_keys": {"OPENAI_API_KEY": "sk"},
    }
    assert secret_environment(secrets) == {
        "TWT_S3_ACCESS_KEY": "AK",
        "TWT_S3_SECRET_KEY": "SK",
        "TWT_MODEL_REGISTRY_ADDRESS": "mr:8080",
        "OPENAI_API_KEY": "sk",
    }


def test_the_error_line_is_the_steps_own() -> None:
    tail = [
        "Traceback (most recent call last):",
        '  File "x.py"',
        "twt.store.NotFoundError: no such object s3://b/k",
    ]
    assert error_line({"tail": tail}) == "twt.store.NotFoundError: no such object s3://b/k"
    assert error_line({"tail": ["done", "killed"]}) == "killed"
    assert error_line({"tail": []}) == "(no output)"


def test_missing_s3_credentials_name_the_secret_and_key() -> None:
    from twt.store import S3Settings, StoreError

    with pytest.raises(
        StoreError, match=r"TWT_S3_SECRET_KEY .* key 'secretkey' of the Secret named by the minio_secret"
    ):
        S3Settings.from_env({"TWT_S3_ENDPOINT": "minio:9000", "TWT_S3_ACCESS_KEY": "a"})
