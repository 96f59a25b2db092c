"""The container runner without an engine (the full run: `make e2e-containers`, tests/e2e_containers.py).

An unreachable socket ends in one line naming it; each task's container gets the variables of the
Secrets its own task is given in the compiled spec, as its pod would; a failing step is reported by its
own error line.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.containers import (
    ContainerRunError,
    connect,
    error_line,
    platform_spec_of,
    task_secret_environments,
)

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


SECRETS = {
    "minio": {"accesskey": "AK", "secretkey": "SK"},
    "hf_token": {"token": "hf"},
    "model_registry": {"address": "mr:8080"},
    "teacher_keys": {"OPENAI_API_KEY": "sk"},
}


def test_each_task_gets_only_the_secrets_its_spec_gives_it() -> None:
    """Read from the compiled spec's Kubernetes platform config: the gate gets no Secret, promotion the
    object store's and the registry's, sampling the hub token and teacher keys; not every Secret each."""
    from pipelines.distillation import twt_distillation

    env = task_secret_environments(platform_spec_of(twt_distillation), SECRETS)
    s3 = {"TWT_S3_ACCESS_KEY": "AK", "TWT_S3_SECRET_KEY": "SK"}
    assert (
        env["exec-gate"] == {} and env["exec-teacher-settings"] == {} and env["exec-explain-rejection"] == {}
    )
    assert env["exec-promote-student"] == {**s3, "TWT_MODEL_REGISTRY_ADDRESS": "mr:8080"}
    assert env["exec-sample-teacher"] == {
        "HF_TOKEN": "hf",
        "OPENAI_API_KEY": "sk",
        "TWT_S3_ACCESS_KEY": "AK",  # s3:// teachers and questions
        "TWT_S3_SECRET_KEY": "SK",
    }
    assert env["exec-resolve-settings"] == s3
    for label in (
        "exec-distill-stage",
        "exec-distill-stage-2",
        "exec-distill-stage-3",
        "exec-select-candidates",
    ):
        assert env[label]["HF_TOKEN"] == "hf" and "OPENAI_API_KEY" not in env[label]
    # a non-optional Secret key that is missing: that task cannot start, the others can
    env = task_secret_environments(
        platform_spec_of(twt_distillation), {**SECRETS, "minio": {"accesskey": "AK"}}
    )
    assert env["exec-promote-student"] == "CreateContainerConfigError: no key 'secretkey' in the minio Secret"
    assert env["exec-resolve-settings"] == {"TWT_S3_ACCESS_KEY": "AK"}  # optional there


class _Container:
    def logs(self, stream: bool, follow: bool):
        return iter([b"ran\n"])

    def wait(self) -> dict:
        return {"StatusCode": 0}

    def remove(self, force: bool) -> None:
        pass


class _Engine:
    """A Docker client that records each container's environment instead of running it."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[str], dict]] = []
        self.images = self
        self.containers = self

    def info(self) -> dict:
        return {}

    def get(self, image: str) -> None:
        pass

    def run(self, image: str, command: list[str], environment: dict, **_) -> _Container:
        self.runs.append((command, environment))
        return _Container()

    def close(self) -> None:
        pass


def test_a_container_run_gives_each_task_its_own_secrets(monkeypatch, tmp_path: Path) -> None:
    import docker
    from kfp import dsl, kubernetes, local

    from pipelines.containers import faithful_container_runs

    @dsl.component(base_image="twt-test:1")
    def reads_s3():
        pass

    @dsl.component(base_image="twt-test:1")
    def plain():
        pass

    @dsl.pipeline(name="two")
    def two(minio_secret: str = "twt-minio-credentials"):
        first = reads_s3()
        kubernetes.use_secret_as_env(first, minio_secret, {"accesskey": "TWT_S3_ACCESS_KEY"})
        plain().after(first)

    engine = _Engine()
    monkeypatch.setattr(docker, "from_env", lambda: engine)
    local.init(runner=local.DockerRunner(environment={"OMP_NUM_THREADS": "1"}), pipeline_root=str(tmp_path))
    failures: list[dict] = []
    with faithful_container_runs(failures, task_secret_environments(platform_spec_of(two), SECRETS)):
        two()
    env = {next(a for a in command if a in ("reads_s3", "plain")): e for command, e in engine.runs}
    assert env["reads_s3"] == {"OMP_NUM_THREADS": "1", "TWT_S3_ACCESS_KEY": "AK"}
    assert env["plain"] == {"OMP_NUM_THREADS": "1"} and failures == []


def test_the_error_line_is_the_steps_own() -> None:
    tail = [
        "Traceback (most recent call last):",
        '  File "x.py"',
        "twt.core.store.NotFoundError: no such object s3://b/k",
    ]
    assert error_line({"tail": tail}) == "twt.core.store.NotFoundError: no such object s3://b/k"
    assert error_line({"tail": ["done", "killed"]}) == "killed"
    assert error_line({"tail": []}) == "(no output)"


def test_missing_s3_credentials_name_the_secret_and_key() -> None:
    from twt.core.store import S3Settings, StoreError

    with pytest.raises(
        StoreError, match=r"TWT_S3_SECRET_KEY .* key 'secretkey' of the Secret named by the minio_secret"
    ):
        S3Settings.from_env({"TWT_S3_ENDPOINT": "minio:9000", "TWT_S3_ACCESS_KEY": "a"})
