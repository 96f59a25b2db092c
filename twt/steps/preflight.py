"""Checks a pipeline run makes before any GPU time is spent: one line per failure, each naming what failed.

    problems = check(settings, Environment(namespace="twt", model_cache_pvc="twt-model-cache"))
    run(settings, env, report_out="preflight.md")      # raises PreflightError: one line per problem

``settings`` is the run's ``twt.steps.settings.PreflightSettings`` (the s3:// URIs it uses, its HTTP teachers,
its training launch). Checked, in order:

- **Secrets**: the MinIO Secret's keys arrived (``TWT_S3_ACCESS_KEY``/``TWT_S3_SECRET_KEY``) when the run
  uses any ``s3://`` URI; each HTTP teacher's key variable (``api_key_env``) is set.
- **MinIO**: the endpoint answers with those keys, and every bucket the run names exists.
- **Teachers**: each HTTP teacher (``backend: openai``) answers ``GET <base_url>/models`` with 200.
- **Model cache**: the PersistentVolumeClaim is Bound, or Pending on a ``WaitForFirstConsumer`` storage
  class (it binds when the first step mounts it); anything else would leave every step that mounts it
  Pending for ever. Whether uid 10001 can write it is checked by each step that mounts it, before any
  download (``check_writable``, from ``twt.steps.steps``): this step does not mount it, or an unbound claim
  would leave it Pending instead of failing in one line.
- **Training jobs**: when the stages train in a TrainJob (Kubeflow Trainer) or PyTorchJob (Training
  Operator), the API server serves that kind (API discovery, which every service account may read).

Kubernetes checks need the pod's service account (``get`` on persistentvolumeclaims; storageclasses is
optional); outside a cluster (``KUBERNETES_SERVICE_HOST`` unset, e.g. ``kfp.local``) they are skipped and
the report says so.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from twt.core.records import write_text
from twt.steps.reports import preflight_markdown

S3_KEYS = ("TWT_S3_ACCESS_KEY", "TWT_S3_SECRET_KEY")
# training engine -> (API group, version, plural, what provides it); the kinds twt.training.jobs submits
JOB_APIS = {
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "Kubeflow Trainer"),
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs", "the Kubeflow Training Operator"),
}
HTTP_TIMEOUT_S = 10.0


class PreflightError(RuntimeError):
    """The run cannot succeed as configured; the message has one line per problem."""


@dataclass
class Environment:
    """Where the checks look: the pod's environment, its namespace, the names the pipeline was given."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    namespace: str = "default"
    model_cache_pvc: str = ""
    minio_secret: str = "the MinIO Secret"
    teacher_keys_secret: str = "the teacher API keys Secret"
    kube: object | None = None  # a kubernetes.client.ApiClient; None = no Kubernetes checks


def s3_buckets(uris: Iterable[str]) -> list[str]:
    """The buckets of the ``s3://`` URIs, in first-seen order."""
    buckets = [uri.removeprefix("s3://").split("/", 1)[0] for uri in uris if uri.startswith("s3://")]
    return list(dict.fromkeys(b for b in buckets if b))


def check_secrets(settings, where: Environment) -> list[str]:
    """The MinIO keys (when s3:// is used) and each HTTP teacher's key variable."""
    problems = []
    missing = [name for name in S3_KEYS if not where.env.get(name)]
    if s3_buckets(settings.uris) and missing:
        problems.append(
            f"Secret {where.minio_secret}: {', '.join(missing)} not set (keys 'accesskey' and 'secretkey' "
            f"of the Secret named by minio_secret, in namespace {where.namespace}); the run uses s3://"
        )
    for teacher in settings.teachers:
        if teacher.api_key_env and not where.env.get(teacher.api_key_env):
            problems.append(
                f"teacher {teacher.name}: {teacher.api_key_env} is not set (key {teacher.api_key_env!r} of "
                f"Secret {where.teacher_keys_secret})"
            )
    return problems


def check_s3(settings, where: Environment) -> list[str]:
    """MinIO answers at ``TWT_S3_ENDPOINT`` with the keys, and each bucket the run names exists."""
    from twt.core import store

    buckets = s3_buckets(settings.uris)
    if not buckets or any(not where.env.get(name) for name in S3_KEYS):
        return []  # nothing to check, or the missing keys are already reported
    try:
        s3 = store.S3Settings.from_env(where.env)
        client = store._client(s3)
        missing = [b for b in buckets if not client.bucket_exists(b)]
    except Exception as err:
        endpoint = where.env.get("TWT_S3_ENDPOINT") or "(TWT_S3_ENDPOINT not set)"
        reason = " ".join(str(err).split())[:200]
        return [f"MinIO at {endpoint}: unreachable or refused the keys ({type(err).__name__}: {reason})"]
    return [f"s3://{b}: no such bucket at {s3.endpoint} (create it, e.g. mc mb twt/{b})" for b in missing]


def check_teacher(teacher, env: Mapping[str, str]) -> str | None:
    """An HTTP teacher answers ``GET <base_url>/models`` with 200 (with its key, when it has one)."""
    url = teacher.base_url.rstrip("/") + "/models"
    request = urllib.request.Request(url)
    key = env.get(teacher.api_key_env) if teacher.api_key_env else None
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"teacher {teacher.name}: {url} does not answer ({reason})"
    if status in (401, 403):
        return f"teacher {teacher.name}: {url} refused the key ({status}; {teacher.api_key_env or 'no key'})"
    if status != 200:
        return f"teacher {teacher.name}: {url} answered {status}, not 200"
    return None


def check_pvc(kube, namespace: str, name: str) -> str | None:
    """The model cache claim is Bound, or waits for its first consumer; else one line saying why not."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        claim = client.CoreV1Api(kube).read_namespaced_persistent_volume_claim(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return f"PersistentVolumeClaim {name}: not found in namespace {namespace} (model_cache_pvc)"
        return f"PersistentVolumeClaim {name}: cannot read it in {namespace} ({err.status} {err.reason})"
    phase = claim.status.phase if claim.status else None
    if phase == "Bound":
        return None
    storage_class = claim.spec.storage_class_name
    if phase == "Pending" and storage_class:
        try:
            mode = client.StorageV1Api(kube).read_storage_class(storage_class).volume_binding_mode
        except ApiException:
            mode = None  # no right to read storage classes: judge by the claim alone
        if mode == "WaitForFirstConsumer":
            return None
    modes = ", ".join(claim.spec.access_modes or []) or "none"
    return (
        f"PersistentVolumeClaim {name}: {phase}, not bound (storage class {storage_class or 'none'}, access "
        f"modes {modes}); every step that mounts it would wait for ever"
    )


def check_job_api(kube, engine: str) -> str | None:
    """The API server serves the kind a distributed stage is submitted as (TrainJob or PyTorchJob)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    group, version, plural, provider = JOB_APIS[engine]
    try:
        listed = client.CustomObjectsApi(kube).get_api_resources(group, version)
        served = {resource.name for resource in listed.resources or []}
    except ApiException as err:
        if err.status != 404:
            return f"{plural}.{group}: cannot read API discovery ({err.status} {err.reason})"
        served = set()
    if plural in served:
        return None
    return f"{plural}.{group}/{version}: not served (install {provider}); training.engine {engine} needs it"


def training_engine(settings) -> str:
    """How the stages train in a cluster (``twt.training.launch.choose_engine``)."""
    from twt.training.launch import choose_engine

    return choose_engine(settings.training, in_cluster=True)


def check(settings, where: Environment) -> list[str]:
    """Every problem, one line each (empty: the run may start)."""
    problems = check_secrets(settings, where) + check_s3(settings, where)
    problems += [p for t in settings.teachers if (p := check_teacher(t, where.env))]
    if where.kube is not None:
        if where.model_cache_pvc:
            problems += [p for p in [check_pvc(where.kube, where.namespace, where.model_cache_pvc)] if p]
        engine = training_engine(settings)
        if engine in JOB_APIS:
            problems += [p for p in [check_job_api(where.kube, engine)] if p]
    return problems


def run(settings, where: Environment, report_out: str | os.PathLike | None = None) -> list[str]:
    """``check``, the report (``twt.steps.reports.preflight_markdown``) written to ``report_out``; raises
    ``PreflightError`` (one line per problem)."""
    problems = check(settings, where)
    if report_out is not None:
        cluster = None
        if where.kube is not None:
            cluster = {
                "namespace": where.namespace,
                "model cache": where.model_cache_pvc or "none",
                "training": training_engine(settings),
            }
        teachers = [t.name for t in settings.teachers]
        text = preflight_markdown(problems, s3_buckets(settings.uris), teachers, cluster)
        write_text(report_out, text)
    if problems:
        raise PreflightError("\n".join(problems))
    return problems


def in_cluster_api(env: Mapping[str, str] | None = None) -> object | None:
    """The pod's Kubernetes API client (its service account), or None outside a cluster."""
    env = os.environ if env is None else env
    if not env.get("KUBERNETES_SERVICE_HOST"):
        return None
    from kubernetes import client, config

    config.load_incluster_config()
    return client.ApiClient()


def check_writable(path: str | os.PathLike, write: Callable[[Path], None] | None = None) -> str | None:
    """A directory this process can create a file in (the model cache, as uid 10001); else one line."""
    probe = Path(path) / f".twt-write-check-{os.getpid()}"
    try:
        (write or (lambda p: p.write_text("ok")))(probe)
        probe.unlink()
    except OSError as err:
        return f"{path}: not writable by uid {os.getuid()} ({err.strerror or err})"
    return None
