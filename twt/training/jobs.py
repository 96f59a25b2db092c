"""A stage's training as a Kubeflow training job: render a TrainJob or a PyTorchJob, submit it, wait for it.

    spec = JobSpec(name="twt-demo-s1-3f2a9c1d", namespace="twt", image="ghcr.io/twt-project/twt-gpu:0.1.0",
                   args=["train-worker", "--spec", job_json], nodes=2, processes_per_node=4, gpus_per_node=4)
    obj = render_trainjob(spec)            # trainer.kubeflow.org/v1alpha1 TrainJob on the twt runtime
    obj = render_pytorchjob(spec)          # kubeflow.org/v1 PyTorchJob (Training Operator v1)
    validate(obj)                          # against the CRD's vendored OpenAPI schema (twt.core.kube_schemas)
    submit_and_wait(obj, kube_clients(), start_timeout_s=900)

Both run the same twt image and entry point in every pod: ``python -m torch.distributed.run -m twt.app.cli
train-worker --spec <json>``. torchrun takes the process layout from the ``PET_*`` variables both
operators set (``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``; the TrainJob's torch plugin also
sets ``PET_MASTER_ADDR``/``PET_MASTER_PORT``, the PyTorchJob sets ``MASTER_ADDR``/``MASTER_PORT``, passed
on as arguments). A TrainJob refers to a (Cluster)TrainingRuntime (manifests/components/
distributed-training holds ``twt-torch-distributed``) and sets image, command, nodes, processes and
resources per node; a PyTorchJob carries its own pod templates (one Master, ``nodes - 1`` Workers).

``submit_and_wait`` creates the job (a job of that name left by a killed predecessor of this step is
adopted while it runs, replaced once it has failed), then polls it: status changes and the first node's
log lines go to the step's log; a failed job raises ``TrainJobError`` with the job's own message, a job
the API server rejects raises at once, and one that has not started within ``start_timeout_s`` is
deleted and raises; each names the job, the namespace and the reason in one line.

Every pod of the job gets what the step that submits it got (``PodOverrides``, read from the step's own
pod by ``step_pod_overrides``): its node selector and tolerations, its image pull secrets, and its
Secret-backed variables (object-store keys, ``HF_TOKEN``) as the same ``secretKeyRef`` entries, never the
values; a PyTorchJob also takes a priority class. ``HF_HOME`` points at an emptyDir (``JOB_HF_HOME``): the
pods' root file system is read-only and the images' own ``HF_HOME`` lies on it. A TrainJob carries the
pod settings as a ``runtimePatches`` entry (kubeflow/trainer ``RuntimePatch``, pkg/apis/trainer/v1alpha1/
trainjob_types.go at 8c0f505: node selector, tolerations, pull secrets, volumes and volume mounts; no
priority class, and no env for the ``node`` container, whose variables go in ``trainer.env``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from twt.core.schema import TrainingConfig, schema_default

TRAINER = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs")
KINDS = {"TrainJob": TRAINER, "PyTorchJob": PYTORCHJOB}
CONTAINER = "node"  # the TrainJob runtime's trainer container; PyTorchJob requires "pytorch"
REPLICATED_JOB = "node"  # the runtime's replicated job (manifests/components/distributed-training)
PATCH_MANAGER = "twt-project.io/stage-launch"  # a runtime patch's owner: a domain-prefixed path
JOB_HF_HOME = "/cache/huggingface"  # the pods' Hugging Face cache, on an emptyDir
HF_VOLUME = "twt-hf-home"
# The container of a KFP step pod that runs the component (Argo's "main"): KFP's driver appends each
# secretAsEnv key to it as a secretKeyRef variable (kubeflow/pipelines backend/src/v2/driver,
# extendPodSpecPatch, "Get secret env information").
STEP_CONTAINER = "main"
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class TrainJobError(RuntimeError):
    """A training job that was rejected, did not start in time, or failed; one line naming job, namespace."""


@dataclass
class PodOverrides:
    """What every pod of a job takes from the submitting step: scheduling, pull secrets, Secret refs."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict] = field(default_factory=list)
    priority_class: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    secret_env: list[dict] = field(default_factory=list)  # env entries whose valueFrom is a secretKeyRef

    def scheduling(self) -> dict:
        """The pod spec fields: nodeSelector, tolerations, imagePullSecrets (those that are set)."""
        fields = {
            "nodeSelector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
            "imagePullSecrets": [{"name": n} for n in self.image_pull_secrets],
        }
        return {k: v for k, v in fields.items() if v}


@dataclass
class JobSpec:
    """A stage's training job; ``args`` follow ``python -m torch.distributed.run -m twt.app.cli``."""

    name: str
    namespace: str
    image: str
    args: list[str]
    nodes: int = 1
    processes_per_node: int = 1
    gpus_per_node: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str = "4"
    memory: str = "32Gi"
    env: dict[str, str] = field(default_factory=dict)
    runtime: str = "twt-torch-distributed"
    runtime_kind: str = "TrainingRuntime"
    labels: dict[str, str] = field(default_factory=dict)
    pod: PodOverrides = field(default_factory=PodOverrides)

    def resources(self) -> dict:
        amounts = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus_per_node:
            amounts[self.gpu_resource] = str(self.gpus_per_node)
        return {"requests": dict(amounts), "limits": dict(amounts)}

    def env_list(self) -> list[dict]:
        """Plain values, ``HF_HOME`` on the cache volume, then the step's Secret refs (a ref wins)."""
        refs = {e["name"]: e for e in self.pod.secret_env}
        values = {**self.env, "HF_HOME": JOB_HF_HOME}
        plain = [{"name": k, "value": v} for k, v in sorted(values.items()) if k not in refs]
        return plain + [dict(refs[k]) for k in sorted(refs)]


def _metadata(spec: JobSpec) -> dict:
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": {"app.kubernetes.io/part-of": "twt", **spec.labels},
    }


def _cache_volume() -> tuple[dict, dict]:
    return {"name": HF_VOLUME, "emptyDir": {}}, {"name": HF_VOLUME, "mountPath": JOB_HF_HOME}


def _runtime_patch(spec: JobSpec) -> dict:
    """The TrainJob's patch of its runtime's ``node`` pods: scheduling, pull secrets, the cache volume."""
    volume, mount = _cache_volume()
    pod = {
        **spec.pod.scheduling(),
        "volumes": [volume],
        "containers": [{"name": CONTAINER, "volumeMounts": [mount]}],
    }
    job = {"name": REPLICATED_JOB, "template": {"spec": {"template": {"spec": pod}}}}
    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}},
    }


def render_trainjob(spec: JobSpec) -> dict:
    """A ``trainer.kubeflow.org/v1alpha1`` TrainJob on the torch-distributed runtime ``spec.runtime``."""
    if spec.pod.priority_class:
        raise TrainJobError(
            f"TrainJob {spec.name} cannot set priority class {spec.pod.priority_class!r} (a TrainJob's "
            f"runtime patch has no priorityClassName): set it in {spec.runtime_kind} {spec.runtime}, "
            "or use engine pytorchjob"
        )
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": _metadata(spec),
        "spec": {
            "runtimeRef": {
                "name": spec.runtime,
                "apiGroup": "trainer.kubeflow.org",
                "kind": spec.runtime_kind,
            },
            "trainer": {
                "image": spec.image,
                "command": ["python", "-m", "torch.distributed.run", "-m", "twt.app.cli"],
                "args": list(spec.args),
                "numNodes": spec.nodes,
                "numProcPerNode": spec.processes_per_node,
                "resourcesPerNode": spec.resources(),
                "env": spec.env_list(),
            },
            "runtimePatches": [_runtime_patch(spec)],
        },
    }


def _pytorch_pod(spec: JobSpec) -> dict:
    """The pod template of every PyTorchJob replica: the twt image, torchrun, the step's bounds."""
    command = [
        "python",
        "-m",
        "torch.distributed.run",
        "--master-addr=$(MASTER_ADDR)",  # the operator sets these; torchrun reads PET_* for the rest
        "--master-port=$(MASTER_PORT)",
        "-m",
        "twt.app.cli",
    ]
    cache_volume, cache_mount = _cache_volume()
    container = {
        "name": "pytorch",
        "image": spec.image,
        "command": command,
        "args": list(spec.args),
        "env": spec.env_list(),
        "resources": spec.resources(),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/tmp"},
            {"name": "shm", "mountPath": "/dev/shm"},
            cache_mount,
        ],
    }
    pod = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "containers": [container],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
            cache_volume,
        ],
        **spec.pod.scheduling(),
    }
    if spec.pod.priority_class:
        pod["priorityClassName"] = spec.pod.priority_class
    return {"metadata": {"labels": {"app.kubernetes.io/part-of": "twt"}}, "spec": pod}


def render_pytorchjob(spec: JobSpec) -> dict:
    """A ``kubeflow.org/v1`` PyTorchJob: one Master and ``nodes - 1`` Workers, ``processes_per_node`` each."""
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": _pytorch_pod(spec)}}
    if spec.nodes > 1:
        replicas["Worker"] = {
            "replicas": spec.nodes - 1,
            "restartPolicy": "Never",
            "template": _pytorch_pod(spec),
        }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": _metadata(spec),
        "spec": {
            "nprocPerNode": str(spec.processes_per_node),
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": replicas,
        },
    }


def validate(obj: dict) -> None:
    """Check ``obj`` against its CRD's vendored OpenAPI schema; ``TrainJobError`` names the first problem."""
    from twt.core.kube_schemas import schema_errors

    errors = schema_errors(obj)
    if errors:
        name = obj.get("metadata", {}).get("name", "?")
        raise TrainJobError(f"{obj.get('kind')} {name} does not match its CRD schema: {errors[0]}")


# --- submit and wait --------------------------------------------------------------------------------------


@dataclass
class KubeClients:
    """The two API groups the job needs (``kubernetes`` client objects)."""

    custom: object  # kubernetes.client.CustomObjectsApi
    core: object  # kubernetes.client.CoreV1Api


def kube_clients(api_client=None) -> KubeClients:
    """Clients from ``api_client``, else the pod's service account, else ``~/.kube/config``."""
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api_client = client.ApiClient()
    return KubeClients(client.CustomObjectsApi(api_client), client.CoreV1Api(api_client))


def own_namespace(default: str = "default") -> str:
    """The namespace of the pod this runs in (its service account's), else ``default``."""
    try:
        with open(SA_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip() or default
    except OSError:
        return default


# Tolerations the DefaultTolerationSeconds admission plugin adds to every pod (kubernetes/kubernetes
# plugin/pkg/admission/defaulttolerationseconds/admission.go): the job's pods get their own.
DEFAULT_TOLERATION_KEYS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


def overrides_of_pod(pod: dict) -> PodOverrides:
    """The ``PodOverrides`` of a step pod (a Pod as JSON): its scheduling, pull secrets and the Secret-backed
    variables of its ``main`` container (KFP's ``use_secret_as_env``), as references. Not its priority
    class: KFP 2.17 cannot set one on a step, so a step pod's is the cluster's default, the job's too."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or [{}]
    main = next((c for c in containers if c.get("name") == STEP_CONTAINER), containers[0])
    return PodOverrides(
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=[t for t in spec.get("tolerations") or [] if t.get("key") not in DEFAULT_TOLERATION_KEYS],
        image_pull_secrets=[s["name"] for s in spec.get("imagePullSecrets") or [] if s.get("name")],
        secret_env=[e for e in main.get("env") or [] if (e.get("valueFrom") or {}).get("secretKeyRef")],
    )


def step_pod_overrides(clients: KubeClients, pod_name: str, namespace: str) -> PodOverrides:
    """The ``PodOverrides`` of the step's own pod ``namespace/pod_name``; ``TrainJobError`` if unreadable."""
    from kubernetes.client.exceptions import ApiException

    try:
        pod = clients.core.read_namespaced_pod(pod_name, namespace)
    except ApiException as err:
        raise TrainJobError(
            f"cannot read this step's pod {namespace}/{pod_name} for its scheduling and secrets: "
            f"{_reason(err)}"
        ) from err
    return overrides_of_pod(clients.core.api_client.sanitize_for_serialization(pod))


def _reason(err) -> str:
    """The API server's own message from an ``ApiException`` (its Status body), else the HTTP reason."""
    try:
        body = json.loads(err.body)
        return str(body.get("message") or body.get("reason") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{err.status} {err.reason}"


def job_state(obj: dict) -> tuple[str, str]:
    """("pending" | "running" | "succeeded" | "failed", message) from a TrainJob's or PyTorchJob's status."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for done, state in (("Complete", "succeeded"), ("Succeeded", "succeeded"), ("Failed", "failed")):
        if done in conditions:
            c = conditions[done]
            return state, c.get("message") or c.get("reason") or done
    if "Running" in conditions:
        return "running", conditions["Running"].get("message", "")
    if any((j.get("active") or 0) + (j.get("ready") or 0) > 0 for j in status.get("jobsStatus") or []):
        return "running", "pods active"
    return "pending", ""


def _selector(obj: dict) -> str:
    name = obj["metadata"]["name"]
    if obj["kind"] == "TrainJob":
        return f"jobset.sigs.k8s.io/jobset-name={name}"
    return f"training.kubeflow.org/job-name={name}"


class _Watcher:
    """Status changes and new log lines of a job's first pod, written to ``log``."""

    def __init__(self, clients: KubeClients, obj: dict, log: Callable[[str], None]) -> None:
        self.clients, self.obj, self.log = clients, obj, log
        self.kind, self.name, self.ns = obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]
        self.printed: dict[str, int] = {}
        self.last = ""

    def pods(self) -> list:
        found = self.clients.core.list_namespaced_pod(self.ns, label_selector=_selector(self.obj)).items
        return sorted(found, key=lambda p: p.metadata.name)

    def pending_reason(self) -> str:
        """Why the job's pods are not running (e.g. the scheduler's Unschedulable message)."""
        reasons = []
        for pod in self.pods():
            for cond in pod.status.conditions or []:
                if cond.status == "False" and cond.message:
                    reasons.append(f"{pod.metadata.name}: {cond.reason}: {cond.message}")
        return "; ".join(reasons) or "no pod was created (is the operator installed and the runtime there?)"

    def stream(self) -> None:
        pods = self.pods()
        if not pods or pods[0].status.phase not in ("Running", "Succeeded", "Failed"):
            return
        pod = pods[0].metadata.name
        text = self.clients.core.read_namespaced_pod_log(pod, self.ns)
        lines = text.splitlines()
        for line in lines[self.printed.get(pod, 0) :]:
            self.log(f"[{pod}] {line}")
        self.printed[pod] = len(lines)

    def status(self, state: str, message: str) -> None:
        line = f"{self.kind} {self.ns}/{self.name}: {state}" + (f" ({message})" if message else "")
        if line != self.last:
            self.log(line)
            self.last = line


def _create(clients: KubeClients, obj: dict, log: Callable[[str], None], delete_timeout_s: float) -> None:
    """Create the job; adopt a running one of the same name (a retried step), replace a failed one."""
    from kubernetes.client.exceptions import ApiException

    group, version, plural = KINDS[obj["kind"]]
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    for _ in range(2):
        try:
            clients.custom.create_namespaced_custom_object(group, version, ns, plural, obj)
            log(f"{obj['kind']} {ns}/{name}: submitted")
            return
        except ApiException as err:
            if err.status != 409:
                raise TrainJobError(
                    f"{obj['kind']} {name} in namespace {ns} was rejected: {_reason(err)}"
                ) from err
        existing = clients.custom.get_namespaced_custom_object(group, version, ns, plural, name)
        state, _ = job_state(existing)
        if state != "failed":
            log(f"{obj['kind']} {ns}/{name}: left {state} by an earlier attempt of this step; waiting for it")
            return
        log(f"{obj['kind']} {ns}/{name}: an earlier attempt failed; replacing it (resuming from checkpoints)")
        clients.custom.delete_namespaced_custom_object(group, version, ns, plural, name)
        _wait_gone(clients, obj, delete_timeout_s, poll_s=min(1.0, delete_timeout_s / 10))
    raise TrainJobError(f"{obj['kind']} {name} in namespace {ns} could not be replaced")


def _wait_gone(clients: KubeClients, obj: dict, timeout_s: float, poll_s: float = 1) -> None:
    """Until the deleted job is gone: finalizers keep it (with a deletionTimestamp) until their controllers
    remove them; ``TrainJobError`` naming them after ``timeout_s``."""
    from kubernetes.client.exceptions import ApiException

    group, version, plural = KINDS[obj["kind"]]
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    deadline, finalizers = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        try:
            current = clients.custom.get_namespaced_custom_object(group, version, ns, plural, name)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        finalizers = current.get("metadata", {}).get("finalizers") or []
        time.sleep(poll_s)
    raise TrainJobError(
        f"{obj['kind']} {name} in namespace {ns} was deleted but is still there after {timeout_s:g} s "
        f"(finalizers {finalizers}); delete it by hand and retry the step"
    )


def submit_and_wait(
    obj: dict,
    clients: KubeClients,
    *,
    start_timeout_s: float = schema_default(TrainingConfig, "start_timeout_s"),
    poll_s: float = 10,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    delete_timeout_s: float = 120,
) -> dict:
    """Create ``obj`` and follow it until it ends; the final object. ``TrainJobError`` unless it succeeds.
    A failed job of the same name is deleted first; ``delete_timeout_s`` bounds the wait for it to go."""
    group, version, plural = KINDS[obj["kind"]]
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    _create(clients, obj, log, delete_timeout_s)
    watcher = _Watcher(clients, obj, log)
    started_at, running = clock(), False
    while True:
        current = clients.custom.get_namespaced_custom_object(group, version, ns, plural, name)
        state, message = job_state(current)
        watcher.stream()
        watcher.status(state, message)
        running = running or state != "pending"
        if state == "succeeded":
            return current
        if state == "failed":
            raise TrainJobError(f"{obj['kind']} {name} in namespace {ns} failed: {message}")
        if not running and clock() - started_at > start_timeout_s:
            reason = watcher.pending_reason()
            clients.custom.delete_namespaced_custom_object(group, version, ns, plural, name)
            raise TrainJobError(
                f"{obj['kind']} {name} in namespace {ns} did not start within {start_timeout_s:g} s: {reason}"
            )
        time.sleep(poll_s)


# The longest name whose pods' names stay DNS-1035 labels (≤ 63): JobSet's webhook checks
# "<jobset>-<replicated job>-<job index>-<pod index>-abcde" (kubernetes-sigs/jobset
# pkg/webhooks/jobset_webhook.go, podNameTooLongErrorMsg): "-node-0-99-abcde" is 16 more; a PyTorchJob's
# pods are "<name>-worker-<i>".
MAX_JOB_NAME = 63 - len("-node-0-99-abcde")


def job_name(run: str, stage: int, key: str) -> str:
    """A DNS-1035 name (≤ ``MAX_JOB_NAME``) a retried step derives again: run, stage, a digest of ``key``."""
    import hashlib
    import re

    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    room = MAX_JOB_NAME - len(f"twt--s{stage}-{digest}")
    stem = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", run.lower()))[:room].strip("-") or "run"
    return f"twt-{stem}-s{stage}-{digest}"


def step_env(names=("TWT_S3_ENDPOINT", "TWT_S3_SECURE", "TWT_S3_REGION", "HF_HUB_OFFLINE")) -> dict[str, str]:
    """The step's non-secret settings the job's pods need too (keys come from the runtime's secret refs)."""
    return {n: os.environ[n] for n in names if os.environ.get(n)}
