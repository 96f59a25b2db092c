"""The promoted student served by KServe: an ``InferenceService`` running vLLM on the registry's copy.

    spec = ServingSpec(model="twt-student", version="3", storage_uri="s3://twt-registry/twt-student/3",
                       namespace="twt")
    obj = render_inference_service(spec)      # serving.kserve.io/v1beta1, checked against KServe's CRD
    apply(obj, api_client); wait_ready(obj, api_client)

The InferenceService is named after the model (``service_name``), so each promotion rolls the same service
to the newest version. KServe's storage initializer downloads ``storage_uri`` to ``/mnt/models`` with the
S3 settings of the service account's Secrets (``service_account``; manifests: ``twt-kserve``). Runtimes
(``RUNTIMES``): ``twt-vllm`` (vLLM's OpenAI server, the ServingRuntime of manifests' teacher-serving
component) or KServe's own ``kserve-huggingfaceserver`` with its vLLM backend. Deployed as a plain
Deployment (``RawDeployment``: no Knative needed) without an Istio sidecar (KFP's pods have none).

The schema the object is checked against: KServe v0.20.0's CRD, vendored by ``tools/vendor_crds.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from twt.core.kube_schemas import schema_errors

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
# runtime -> (model format it serves, the arguments its container needs for the downloaded model)
RUNTIMES: dict[str, tuple[str, Callable[[str], list[str]]]] = {
    "twt-vllm": ("vllm", lambda name: [f"--model={MODEL_DIR}"]),
    "kserve-huggingfaceserver": ("huggingface", lambda name: [f"--model_name={name}", "--backend=vllm"]),
}
NAME_LIMIT = 40  # KServe derives longer names (<name>-predictor-..., Service and Deployment) from it


class ServingError(RuntimeError):
    """The InferenceService could not be rendered, created or made ready; one line."""


@dataclass
class ServingSpec:
    """What the InferenceService serves and where it runs."""

    model: str
    version: str
    storage_uri: str
    namespace: str
    runtime: str = "twt-vllm"
    service_account: str = "twt-kserve"
    gpus: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str = "4"
    memory: str = "32Gi"
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)


def service_name(model: str) -> str:
    """A DNS-1035 name of at most ``NAME_LIMIT`` characters from a registered model name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")[:NAME_LIMIT].rstrip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}"[:NAME_LIMIT].rstrip("-")
    return name


def render_inference_service(spec: ServingSpec) -> dict:
    """The ``InferenceService`` of ``spec``; a ``ServingError`` names what KServe's schema refuses."""
    if spec.runtime not in RUNTIMES:
        raise ServingError(f"serving runtime {spec.runtime!r}: use one of {sorted(RUNTIMES)}")
    if not spec.storage_uri.startswith(("s3://", "gs://", "pvc://", "hf://", "https://")):
        raise ServingError(f"storage URI {spec.storage_uri!r}: KServe cannot download it (want s3://...)")
    name = service_name(spec.model)
    model_format, args = RUNTIMES[spec.runtime]
    resources = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus:
        resources[spec.gpu_resource] = str(spec.gpus)
    predictor = {
        "annotations": {"sidecar.istio.io/inject": "false"},
        "minReplicas": 1,
        "maxReplicas": 1,
        "serviceAccountName": spec.service_account,
        "model": {
            "modelFormat": {"name": model_format},
            "runtime": spec.runtime,
            "storageUri": spec.storage_uri,
            "args": [*args(name), *spec.extra_args],
            "resources": {"requests": dict(resources), "limits": dict(resources)},
        },
    }
    if spec.node_selector:
        predictor["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        predictor["tolerations"] = list(spec.tolerations)
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/part-of": "twt", "twt/model": name},
            "annotations": {
                "serving.kserve.io/deploymentMode": "RawDeployment",
                "twt/version": f"{spec.model}@{spec.version}",
            },
        },
        "spec": {"predictor": predictor},
    }
    errors = schema_errors(obj)
    if errors:
        raise ServingError(f"InferenceService {name}: {errors[0]}")
    return obj


def apply(obj: dict, api_client) -> str:
    """Create the InferenceService, or update it to ``obj`` when one of that name exists; "created" or
    "updated"."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client)
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)
        return "created"
    except ApiException as err:
        if err.status != 409:
            raise ServingError(
                f"InferenceService {name} in {namespace}: {err.status} {_message(err)}"
            ) from None
    change = {"spec": obj["spec"], "metadata": {"annotations": obj["metadata"]["annotations"]}}
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, change)
    return "updated"


def _message(err) -> str:
    import json

    try:
        return json.loads(err.body).get("message", err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


def wait_ready(obj: dict, api_client, timeout_s: float = 1800, poll_s: float = 10) -> str:
    """Wait for the ``Ready`` condition; returns the service's URL. A timeout is one line with KServe's
    latest reason."""
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    deadline, last = time.monotonic() + timeout_s, "no status yet"
    while True:
        status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
        if ready and ready.get("status") == "True":
            return status.get("url") or status.get("address", {}).get("url", "")
        if ready:
            last = ready.get("message") or ready.get("reason") or last
        if time.monotonic() >= deadline:
            raise ServingError(
                f"InferenceService {name} in {namespace} not ready after {timeout_s:g} s: {last}"
            )
        time.sleep(poll_s)
