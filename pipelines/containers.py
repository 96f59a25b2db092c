"""The ``twt-distillation`` DAG with every step in its container image, on this machine.

    python -m pipelines local --config configs/smoke.yaml --runner docker --image localhost/twt-cpu:0.1.0

``kfp.local.DockerRunner`` runs each task in the image its executor names, through a Docker-API socket:
Docker's, or podman's (``podman system service``; point ``DOCKER_HOST`` at it). What kfp 2.17 does not
do right on podman 4.3 is replaced here for the duration of the run (``faithful_container_runs``): kfp
starts containers with ``auto_remove=True`` and then reads their logs and exit status, which podman has
already removed (the log call fails, and a failing step was reported as a success). Here containers are
kept until their exit status is read, logs are followed, and the container is removed afterwards.

Cluster settings that ``kfp.local`` ignores are stood in for faithfully where a step needs them:

- **Secrets**: each task gets the variables that its own executor's ``secretAsEnv`` entries in the
  compiled spec's Kubernetes platform config name (``use_secret_as_env``), from ``secrets`` (Secret →
  key → value; a Secret is named by its pipeline parameter ``<which>_secret``), and no other: a step pod in
  the cluster sees only the Secrets given to its task. A missing key of a non-optional entry fails that
  task without starting it, as the kubelet's CreateContainerConfigError does.
- **Network**: the host's (``network_mode="host"``), so a step reaches an object store on 127.0.0.1.
- **Images**: ``image`` maps both the CPU and the GPU image to one image (a CPU machine has no GPU
  image): the DAG and every command are the cluster's; only the image differs.

The pipeline root is bind-mounted by kfp at the same path; it is made writable for the images' uid
10001. A missing image or an unreachable socket ends in one line naming it (``ContainerRunError``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipelines.release import run_arguments


class ContainerRunError(RuntimeError):
    """A container run that cannot start or whose step failed; the message names the image, socket or step."""


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect():
    """A docker client for ``$DOCKER_HOST`` that answers, else ``ContainerRunError`` naming the socket."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as err:  # docker raises DockerException, requests' errors or OSError
        raise ContainerRunError(
            f"no Docker API at {docker_host()} ({type(err).__name__}); start Docker, or "
            "`podman system service --time=0 unix:///PATH/podman.sock` and set DOCKER_HOST=unix:///PATH/podman.sock"
        ) from None
    return client


def require_image(client, image: str) -> None:
    """``ContainerRunError`` naming ``image`` unless the engine has it or can pull it."""
    import docker

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except docker.errors.DockerException as err:
        reason = str(err).splitlines()[0][:200]
        raise ContainerRunError(
            f"image {image} is not on the engine at {docker_host()} and cannot be pulled ({reason}); "
            "build it with `make images`"
        ) from None


def _secret_of(entry: Mapping) -> str:
    """Which Secret a ``secretAsEnv`` entry names: ``minio`` for the pipeline parameter ``minio_secret``
    (inside a loop or condition ``pipelinechannel--minio_secret``), or a constant ``secretName``."""
    parameter = (entry.get("secretNameParameter") or {}).get("componentInputParameter")
    if parameter:
        return parameter.removeprefix("pipelinechannel--").removesuffix("_secret")
    constant = (entry.get("secretNameParameter") or {}).get("runtimeValue", {}).get("constant")
    return str(constant or entry.get("secretName", ""))


def task_secret_environments(
    platform_spec: Mapping, secrets: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str] | str]:
    """Executor label → the variables its ``secretAsEnv`` entries give it from ``secrets`` (which Secret →
    key → value), or the one line of why its pod could not start (a non-optional key that is missing)."""
    executors = platform_spec.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    environments: dict[str, dict[str, str] | str] = {}
    for label, config in (executors.get("executors") or {}).items():
        env: dict[str, str] | str = {}
        for entry in config.get("secretAsEnv") or []:
            which = _secret_of(entry)
            values = secrets.get(which) or {}
            for pair in entry.get("keyToEnv") or []:
                if pair["secretKey"] in values:
                    env[pair["envVar"]] = values[pair["secretKey"]]
                elif not entry.get("optional", False):
                    env = f"CreateContainerConfigError: no key {pair['secretKey']!r} in the {which} Secret"
                    break
            if isinstance(env, str):
                break
        environments[label] = env
    return environments


def platform_spec_of(pipeline) -> dict:
    """The Kubernetes platform config of a compiled pipeline (``kfp`` ``GraphComponent``), as JSON."""
    from google.protobuf import json_format

    return json_format.MessageToDict(pipeline.platform_spec)


@contextlib.contextmanager
def faithful_container_runs(
    failures: list[dict], task_env: Mapping[str, Mapping[str, str] | str] | None = None
) -> Iterator[None]:
    """Within the block, kfp's DockerRunner keeps each container until its exit status is read, follows
    its logs, and removes it afterwards; a failing step's image, status and last log lines are appended
    to ``failures``. ``task_env`` (executor label → variables, or why the pod cannot start) adds each
    task's own variables to its container."""
    from kfp.local import docker_task_handler, task_dispatcher

    original = docker_task_handler.run_docker_container
    original_task = task_dispatcher.run_single_task_implementation
    current = threading.local()  # kfp runs a ParallelFor's tasks in threads

    def run_single_task_implementation(*args, **kwargs):
        current.executor = kwargs["component_spec"].executor_label
        try:
            return original_task(*args, **kwargs)
        finally:
            current.executor = None

    def run_docker_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
        image = docker_task_handler.add_latest_tag_if_not_present(image)
        own = (task_env or {}).get(getattr(current, "executor", None) or "", {})
        if isinstance(own, str):
            failures.append({"image": image, "status": 1, "tail": [own]})
            return 1
        run_args["environment"] = {**dict(run_args.get("environment") or {}), **own}
        require_image(client, image)
        container = client.containers.run(
            image=image, command=command, detach=True, stdout=True, stderr=True, volumes=volumes,
            auto_remove=False, **run_args,
        )  # fmt: skip
        tail: collections.deque[str] = collections.deque(maxlen=20)
        try:
            pending = ""
            for chunk in container.logs(stream=True, follow=True):
                text = pending + chunk.decode(errors="replace")
                *lines, pending = text.split("\n")
                for line in lines:
                    print(line)
                    tail.append(line)
            if pending:
                print(pending)
                tail.append(pending)
            status = int(container.wait()["StatusCode"])
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        if status != 0:
            failures.append(
                {"image": image, "status": status, "tail": [line for line in tail if line.strip()]}
            )
        return status

    docker_task_handler.run_docker_container = run_docker_container
    task_dispatcher.run_single_task_implementation = run_single_task_implementation
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original
        task_dispatcher.run_single_task_implementation = original_task


def error_line(failure: Mapping) -> str:
    """The failing step's own error line: its last ``twt: error:`` line, else its last log line."""
    lines = failure["tail"]
    for line in reversed(lines):
        if "error" in line.lower():
            return line.strip()
    return lines[-1].strip() if lines else "(no output)"


def run_in_containers(
    config_path: str | os.PathLike,
    root: str | os.PathLike,
    image: str,
    registry_uri: str,
    *,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    overrides: Mapping[str, object] | None = None,
    log_file: str | os.PathLike | None = None,
) -> dict:
    """Run the pipeline with every step in ``image`` (module docstring); returns the run directory,
    seconds and the promotion record (or the rejection report). A failing step raises
    ``ContainerRunError`` with its error line."""
    from kfp import local

    from pipelines.distillation import twt_distillation
    from pipelines.images import retargeted
    from pipelines.local import kfp_local_session, run_outcome

    client = connect()
    require_image(client, image)
    client.close()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o1777)  # the images run as uid 10001; kfp bind-mounts the root at the same path
    # the configuration's own text: its ${TWT_DATA} paths resolve inside the image
    arguments = run_arguments(config_path, overrides=overrides)
    arguments.setdefault("registry_uri", registry_uri)
    arguments.setdefault("s3_endpoint", os.environ.get("TWT_S3_ENDPOINT", ""))
    environment = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
    task_env = task_secret_environments(platform_spec_of(twt_distillation), secrets or {})
    runner = local.DockerRunner(network_mode="host", environment=environment)
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    failures: list[dict] = []
    started = time.time()
    old_umask = os.umask(0o000)  # directories kfp creates for a task must be writable by uid 10001
    try:
        with (
            kfp_local_session(log_file),
            faithful_container_runs(failures, task_env),
            retargeted(twt_distillation, {"cpu": image, "gpu": image}),
        ):
            twt_distillation(**arguments)
    except RuntimeError as err:
        if not failures:
            raise ContainerRunError(f"the container run failed: {str(err).splitlines()[0]}") from None
        failure = failures[-1]
        raise ContainerRunError(
            f"a step failed in {failure['image']} (exit {failure['status']}): {error_line(failure)}"
        ) from None
    finally:
        os.umask(old_umask)
    return run_outcome(root, started, image=image, registry_uri=registry_uri)
