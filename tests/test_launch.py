"""Where a stage trains: the engine choice, and a whole TrainJob round trip — inputs up to S3, the job's
`twt train-worker` run by KubeApiDouble's stand-in kubelet on this machine, the model back from S3."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import distill_rows
from kube_api_double import KubeApiDouble
from kubernetes import client

from twt.core.load import default_config_path, parse_config
from twt.core.records import write_rows
from twt.core.schema import TrainingConfig
from twt.steps.settings import stage_settings
from twt.training.jobs import TrainJobError, kube_clients
from twt.training.launch import LaunchError, StageJob, choose_engine, launch_job, launch_stage, stage_job


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


def _job(step, rows: Path, base: Path, out: Path, run_id: str | None, **overrides) -> StageJob:
    return stage_job(step, rows, str(base), out, {}, run_id=run_id, overrides=overrides)


def test_the_checkpoint_location_derives_from_run_and_stage(tmp_path: Path, base_model: Path) -> None:
    run = _run(tmp_path, base_model, checkpoints="s3://ck/prefix", parallel="ddp")
    sft = _job(stage_settings(run, 2), tmp_path / "rows.jsonl", base_model, tmp_path / "m", "run-42").sft()
    assert sft.checkpoint_uri == f"s3://ck/prefix/{run.name}/run-42/stage2"
    assert sft.save_every == 2 and sft.parallel == "ddp" and sft.device is None
    local = _job(stage_settings(_run(tmp_path, base_model), 1), tmp_path, base_model, tmp_path / "m", None)
    assert local.sft().checkpoint_uri.endswith(f"{run.name}/local/stage1")


def test_the_job_carries_the_sections_and_its_json_gives_the_same_trainer_settings(
    tmp_path: Path,
    base_model: Path,
) -> None:
    run = _run(tmp_path, base_model, device="cpu", attn_implementation="eager")
    step = stage_settings(run, 2)
    job = _job(step, tmp_path / "rows.jsonl", base_model, tmp_path / "m", "r", max_updates=3)
    assert job.training == step.training.model_dump(mode="json") and job.training["mix_previous"] == 0.2
    again = StageJob.from_json(job.to_json())
    assert again == job and again.sft() == job.sft()
    sft = job.sft()
    assert (sft.updates, sft.max_updates, sft.device, sft.attn_implementation) == (4, 3, "cpu", "eager")
    assert _job(step, tmp_path, base_model, tmp_path / "m", "r", device="cuda").sft().device == "cuda"


def test_a_process_count_that_does_not_divide_the_batch_stops_the_stage(tmp_path: Path, base_model) -> None:
    run = _run(tmp_path, base_model, processes=3, device="cpu")
    write_rows(tmp_path / "rows.jsonl", distill_rows(8))
    with pytest.raises(ValueError, match=r"^3 processes do not divide the global batch of 4 rows"):
        step = stage_settings(run, 1)
        launch_stage(step, _job(step, tmp_path / "rows.jsonl", base_model, tmp_path / "out", None))
    assert not (tmp_path / "out").exists()


RUNTIME = (
    Path(__file__).resolve().parents[1]
    / "manifests/components/distributed-training/torch-distributed-runtime.yaml"
)
# the GPU image's ENV (images/gpu/Dockerfile), its venv standing for /opt/venv
IMAGE_ENV = {
    "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "HF_HOME": "/home/twt/.cache/huggingface",
}


class PodStartError(Exception):
    """What the kubelet reports for a container it cannot start (CreateContainerConfigError)."""


def _upsert(env: list[dict], more: list[dict]) -> list[dict]:
    """Upsert by name, as Trainer's torch plugin merges trainer.env into the runtime's container."""
    merged = {e["name"]: e for e in env}
    merged.update({e["name"]: e for e in more})
    return list(merged.values())


def _merge_named(base: list[dict], patch: list[dict], key: str = "name") -> list[dict]:
    merged = {item[key]: item for item in base}
    merged.update({item[key]: item for item in patch})
    return list(merged.values())


class StandInKubelet:
    """Runs the first pod of a TrainJob or PyTorchJob on this machine with only what its spec gives it.

    TrainJob: the pod is the runtime's (manifests/components/distributed-training) ``node`` pod with the
    job's ``runtimePatches`` merged in and ``trainer.env`` upserted into its container, plus the PET_*
    variables of Trainer's torch plugin (kubeflow/trainer pkg/runtime/framework/plugins/torch/torch.go);
    the command is ``trainer.command`` + ``trainer.args``. PyTorchJob: the Master's pod template, plus what
    the Training Operator adds (training-operator v1.9.0 pkg/controller.v1/pytorch/envvar.go: MASTER_ADDR,
    MASTER_PORT, WORLD_SIZE, RANK, PET_NODE_RANK, PET_NPROC_PER_NODE, PET_NNODES), ``$(VAR)`` expanded in
    the command as the kubelet does. Every pod gets the image's ENV, then its spec's ``env``, with
    ``secretKeyRef`` values read from the Secrets in the API double (a missing Secret or key of a
    non-optional ref fails the start, as CreateContainerConfigError does). The root file system is
    read-only: a path outside the pod's volume mounts maps to a place nothing can write; each mounted
    volume is a directory here (TMPDIR names the one at /tmp). ``python`` is this interpreter."""

    def __init__(self, tmp: Path, api: KubeApiDouble) -> None:
        self.tmp, self.api = tmp, api
        self.env: dict[str, str] = {}  # the last pod's environment
        self.command: list[str] = []

    def __call__(self, job: dict) -> tuple[int, str]:
        try:
            pod, container, extra = (
                self._trainjob(job) if job["kind"] == "TrainJob" else self._pytorchjob(job)
            )
            env = self._environment(job["metadata"]["namespace"], pod, container, extra)
        except PodStartError as err:
            return 1, f"CreateContainerConfigError: {err}\n"
        expand = lambda arg: re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)  # noqa: E731
        command = [expand(a) for a in container["command"] + container.get("args", [])]
        self.env, self.command = env, [sys.executable if a == "python" else a for a in command]
        done = subprocess.run(self.command, env=env, capture_output=True, text=True, cwd=self.tmp)
        return done.returncode, done.stdout + done.stderr

    def _trainjob(self, job: dict) -> tuple[dict, dict, list[dict]]:
        runtime = yaml.safe_load(RUNTIME.read_text())
        (node,) = [r for r in runtime["spec"]["template"]["spec"]["replicatedJobs"] if r["name"] == "node"]
        pod = node["template"]["spec"]["template"]["spec"]
        for patch in job["spec"].get("runtimePatches", []):
            for replicated in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
                assert replicated["name"] == "node", replicated["name"]
                fields = replicated["template"]["spec"]["template"]["spec"]
                pod["volumes"] = _merge_named(pod.get("volumes", []), fields.get("volumes", []))
                for c in fields.get("containers", []):
                    (target,) = [t for t in pod["containers"] if t["name"] == c["name"]]
                    mounts = _merge_named(
                        target.get("volumeMounts", []), c.get("volumeMounts", []), "mountPath"
                    )
                    target["volumeMounts"] = mounts
                pod.update(
                    {k: fields[k] for k in ("nodeSelector", "tolerations", "imagePullSecrets") if k in fields}
                )
        trainer = job["spec"]["trainer"]
        (container,) = [c for c in pod["containers"] if c["name"] == "node"]
        container["command"], container["args"] = trainer["command"], trainer["args"]
        container["env"] = _upsert(container.get("env", []), trainer.get("env", []))
        pet = {
            "PET_NNODES": trainer.get("numNodes", 1),
            "PET_NPROC_PER_NODE": trainer.get("numProcPerNode", 1),
            "PET_NODE_RANK": 0,
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": _free_port(),
        }
        return pod, container, [{"name": k, "value": str(v)} for k, v in pet.items()]

    def _pytorchjob(self, job: dict) -> tuple[dict, dict, list[dict]]:
        spec = job["spec"]
        pod = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "pytorch"]
        nodes = sum(r.get("replicas", 1) for r in spec["pytorchReplicaSpecs"].values())
        nproc = spec.get("nprocPerNode", "1")
        added = {"PYTHONUNBUFFERED": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                 "WORLD_SIZE": str(nodes * int(nproc)), "RANK": "0", "PET_NODE_RANK": "0",
                 "PET_NPROC_PER_NODE": nproc, "PET_NNODES": str(nodes)}  # fmt: skip
        return pod, container, [{"name": k, "value": v} for k, v in added.items()]

    def _environment(self, namespace: str, pod: dict, container: dict, extra: list[dict]) -> dict[str, str]:
        volumes = {v["name"] for v in pod.get("volumes", [])}
        mounts = {}
        for m in container.get("volumeMounts", []):
            assert m["name"] in volumes, f"volumeMount {m['name']} has no volume"
            mounts[m["mountPath"]] = self.tmp / "volumes" / m["name"]
            mounts[m["mountPath"]].mkdir(parents=True, exist_ok=True)
        readonly_root = self.tmp / "read-only-root"  # a file: nothing can be created below it
        readonly_root.write_text("")

        def place(value: str) -> str:
            if not value.startswith("/"):
                return value
            for path, host in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
                if value == path or value.startswith(path.rstrip("/") + "/"):
                    return str(host) + value[len(path.rstrip("/")) :]
            return str(readonly_root) + value

        env = dict(IMAGE_ENV)
        for entry in container.get("env", []) + extra:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env[entry["name"]] = entry.get("value", "")
                continue
            secret = self.api.secrets.get((namespace, ref["name"]))
            if secret is None or ref["key"] not in secret:
                if ref.get("optional"):
                    continue
                missing = (
                    f'secret "{ref["name"]}" not found'
                    if secret is None
                    else f"couldn't find key {ref['key']}"
                )
                raise PodStartError(f"{missing} in Secret {namespace}/{ref['name']}")
            env[entry["name"]] = secret[ref["key"]]
        env = {k: place(v) if k in ("HF_HOME", "HOME") else v for k, v in env.items()}
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


STEP_POD = "twt-distillation-x7k2p-system-container-impl-1234567890"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _step_pod(env: list[dict]) -> dict:
    """A training step's pod as KFP 2.17's driver renders it (its ``main`` container runs the component),
    with the default tolerations the DefaultTolerationSeconds admission plugin adds."""
    tolerations = [GPU_TOLERATION] + [
        {
            "key": f"node.kubernetes.io/{k}",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
        for k in ("not-ready", "unreachable")
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": STEP_POD, "namespace": "twt"},
        "spec": {
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": tolerations,
            "imagePullSecrets": [{"name": "run-pull"}],
            "containers": [
                {"name": "wait", "image": "argoexec"},
                {
                    "name": "main",
                    "image": "twt:test",
                    "env": [{"name": "KFP_POD_NAME", "value": STEP_POD}, *env],
                },
            ],
        },
    }


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


S3_REFS = [
    _secret_env("TWT_S3_ACCESS_KEY", "run-minio", "accesskey"),
    _secret_env("TWT_S3_SECRET_KEY", "run-minio", "secretkey"),
]
HF_REF = _secret_env("HF_TOKEN", "run-hf", "token", optional=True)


def _in_step_pod(monkeypatch, tmp: Path) -> None:
    """This process as the step's pod: its name, its service account's namespace."""
    namespace = tmp / "namespace"
    namespace.write_text("twt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("HOSTNAME", STEP_POD)
    monkeypatch.setattr("twt.training.jobs.SA_NAMESPACE", str(namespace))


def _stage_job(tmp: Path, base: Path, run, rows: int) -> StageJob:
    write_rows(tmp / "rows.jsonl", distill_rows(rows))
    return _job(stage_settings(run, 1), tmp / "rows.jsonl", base, tmp / "model", "run-7")


@pytest.mark.parametrize("engine", ["trainjob", "pytorchjob"])
def test_a_stage_runs_as_a_trainjob_and_its_model_comes_back(
    engine: str,
    tmp_path: Path,
    base_model: Path,
    s3,
    monkeypatch,
) -> None:
    """The job's pods get the step's Secrets by reference and nothing of this process's environment: the
    object-store keys exist only in the API double's Secret ``run-minio``, which the step pod names."""
    (tmp_path / "pod").mkdir()
    _in_step_pod(monkeypatch, tmp_path)
    # device cpu: 2 gloo processes here (accelerate runs one process per node unless told cpu or given GPUs)
    run = _run(
        tmp_path,
        base_model,
        processes=2,
        device="cpu",
        checkpoints=s3.uri("ck"),
        image="twt:test",
        namespace="twt",
    )
    job = _stage_job(tmp_path, base_model, run, 24)
    lines: list[str] = []
    with KubeApiDouble("execute") as api:
        api.executor = kubelet = StandInKubelet(tmp_path / "pod", api)
        api.pods[("twt", STEP_POD)] = _step_pod([*S3_REFS, HF_REF])
        api.secrets[("twt", "run-minio")] = {"accesskey": os.environ["TWT_S3_ACCESS_KEY"],
                                             "secretkey": os.environ["TWT_S3_SECRET_KEY"]}  # fmt: skip
        clients = kube_clients(client.ApiClient(client.Configuration(host=api.url)))
        result = launch_job(
            stage_settings(run, 1), job, engine, clients=clients, log=lines.append, poll_s=0.1
        )
        (submitted,) = api.jobs.values()
    if engine == "trainjob":
        trainer = submitted["spec"]["trainer"]
        assert trainer["numProcPerNode"] == 2 and trainer["image"] == "twt:test"
        assert trainer["resourcesPerNode"]["limits"] == {"cpu": "4", "memory": "32Gi"}  # no GPU asked for
    else:
        assert submitted["spec"]["nprocPerNode"] == "2" and kubelet.command[0] == sys.executable
        assert "--master-addr=127.0.0.1" in kubelet.command  # $(MASTER_ADDR), expanded as the kubelet does
    assert result["training"]["updates"] == 4 and result["rows"] == 24
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert any(line.endswith(": succeeded (jobset completed successfully)") for line in lines)
    pod_lines = [line.split("] ", 1)[1] for line in lines if line.startswith("[twt-demo-s1-")]
    assert any(line.startswith("stage 1: 4 updates on 2 processes, loss") for line in pod_lines), pod_lines
    # the pod had what its spec gave it: keys from the Secret, a writable cache, not this process's variables
    assert (
        kubelet.env["TWT_S3_ACCESS_KEY"] == os.environ["TWT_S3_ACCESS_KEY"] and "HF_TOKEN" not in kubelet.env
    )
    assert Path(kubelet.env["HF_HOME"]).is_dir() and os.access(kubelet.env["HF_HOME"], os.W_OK)
    assert not set(kubelet.env) & {"PYTEST_CURRENT_TEST", "KUBERNETES_SERVICE_HOST", "VIRTUAL_ENV"}


def test_a_job_whose_step_has_no_object_store_secret_fails_to_start(
    tmp_path: Path,
    base_model: Path,
    s3,
    monkeypatch,
) -> None:
    """A step pod without the MinIO Secret: the job's pods fall back to the runtime's own Secret, which this
    namespace does not have, and the kubelet cannot start them."""
    (tmp_path / "pod").mkdir()
    _in_step_pod(monkeypatch, tmp_path)
    run = _run(tmp_path, base_model, processes=2, checkpoints=s3.uri("ck"), image="twt:test", namespace="twt")
    job = _stage_job(tmp_path, base_model, run, 8)
    lines: list[str] = []
    with KubeApiDouble("execute") as api:
        api.executor = StandInKubelet(tmp_path / "pod", api)
        api.pods[("twt", STEP_POD)] = _step_pod([HF_REF])
        api.secrets[("twt", "run-minio")] = {"accesskey": "k", "secretkey": "k"}
        clients = kube_clients(client.ApiClient(client.Configuration(host=api.url)))
        with pytest.raises(TrainJobError, match=r"failed: jobset failed"):
            launch_job(stage_settings(run, 1), job, "trainjob", clients=clients, log=lines.append, poll_s=0.1)
    assert any(
        'secret "twt-minio-credentials" not found in Secret twt/twt-minio-credentials' in line
        for line in lines
    )


def test_a_failing_trainjob_fails_the_stage_with_its_error(tmp_path: Path, base_model: Path, s3) -> None:
    write_rows(tmp_path / "rows.jsonl", distill_rows(8))
    run = _run(tmp_path, base_model, processes=2, checkpoints=s3.uri("ck"), image="twt:test", namespace="twt")
    job = _job(stage_settings(run, 1), tmp_path / "rows.jsonl", base_model, tmp_path / "m", "r")
    lines: list[str] = []
    with KubeApiDouble("execute", executor=lambda job: (1, "twt: error: CUDA out of memory\n")) as api:
        clients = kube_clients(client.ApiClient(client.Configuration(host=api.url)))
        with pytest.raises(TrainJobError, match=r"^TrainJob twt-.* in namespace twt failed: jobset failed"):
            launch_job(stage_settings(run, 1), job, "trainjob", clients=clients, log=lines.append, poll_s=0.1)
    assert any(line.endswith("twt: error: CUDA out of memory") for line in lines)
    local = _run(tmp_path, base_model, processes=2, image="x")  # checkpoints on this pod's disk
    job = _job(stage_settings(local, 1), tmp_path / "rows.jsonl", base_model, tmp_path / "m", "r")
    with pytest.raises(LaunchError, match=r"training.checkpoints must be s3://"):
        launch_job(stage_settings(local, 1), job, "trainjob", clients=clients)
