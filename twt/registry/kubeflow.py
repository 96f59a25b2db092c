"""Promotion to Kubeflow Model Registry: the published student as a registered model version
(extra ``twt[kubeflow-registry]``, installed in the CPU image).

    version = registry.publish(...)                      # the twt registry (S3) first: the artifact
    register(version, run_id="…", pipeline_version="0.1.0")   # address and token from the environment
    twt registry register student@3 --root s3://twt/registry --run-id RUN   # again, after a failure

Registered as ilab-on-ocp does it (``utils/components.py``, opendatahub-io/ilab-on-ocp): the model
artifact says where it came from (``model_source_kind="kfp"``, ``model_source_class="pipelinerun"``,
``model_source_id`` = the run id, ``model_source_group`` = the pod's namespace), and a failed call is
tried again (``ATTEMPTS``, with a doubling pause). Its URI is endpoint-qualified, in the format of the
client's ``model_registry.utils.s3_uri_from`` (model-registry 0.3.18): ``s3://bucket/key?endpoint=
http://minio:9000&defaultRegion=us-east-1``, and ``storage_key`` names the data connection (the Secret
with the object store's keys: ``TWT_MODEL_REGISTRY_STORAGE_KEY``, default the pipeline's default
``minio_secret``), so a deployment from the registry finds both the server and the keys.

The promote step calls ``register``, which never fails the promotion: the student is already published
in the twt registry, and hours of GPU work should not be lost to a registry outage or a wrong token.
A failure is a warning on stderr and a record (``{"action": "failed", "error", "retry"}``) whose
``retry`` is the command that registers the published version later (``register_version``, which
raises). A wrong token (401/403) is reported as such, distinct from a server that cannot be reached;
only the latter is tried again.

The address and token come from the environment, where the pipeline puts the Secret named by its
``model_registry_secret`` parameter (keys ``address`` → ``TWT_MODEL_REGISTRY_ADDRESS``, ``token`` →
``TWT_MODEL_REGISTRY_TOKEN``); a run configuration's ``registry.kubeflow_registry_address`` also gives
the address. The registered version is named after the twt version and carries, as custom properties,
the pipeline run id, the pipeline version, the artifact URI (the version's ``s3://`` location, also the
model artifact's URI), the gate's verdict and the evaluated metrics.

Promoting one run twice registers one version: before registering, the model's versions are searched for
one with this run's ``pipeline_run_id``; when there is one, nothing is written and the result names it
(``{"action": "exists", "version": ...}``). A version name that is already taken by another run is
refused with one line (``ModelRegistryError``).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twt.registry.card import metric_rows
from twt.registry.claims import RegistryError
from twt.registry.models import RegistryVersion

ENV_ADDRESS = "TWT_MODEL_REGISTRY_ADDRESS"
ENV_TOKEN = "TWT_MODEL_REGISTRY_TOKEN"
SECRET_KEYS = {"address": ENV_ADDRESS, "token": ENV_TOKEN}  # the pipeline's model_registry_secret
ENV_STORAGE_KEY = "TWT_MODEL_REGISTRY_STORAGE_KEY"  # the data connection (Secret) with the S3 keys
DEFAULT_STORAGE_KEY = "twt-minio-credentials"  # the pipeline's default minio_secret
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"  # the pod's namespace
RUN_ID = "pipeline_run_id"
PAGE_SIZE = 100  # versions per request when looking for a run's version
ATTEMPTS = 4  # tries of a registration that could not reach the server, the first included
BACKOFF_S = 2.0  # the pause after the first failed try; doubled after each


class ModelRegistryError(RegistryError):
    """Kubeflow Model Registry refused the registration; the message says why."""


class ModelRegistryUnauthorisedError(ModelRegistryError):
    """The registry (or the proxy in front of it) refused the token: 401 or 403. Not retried."""


class ModelRegistryUnreachableError(ModelRegistryError):
    """The registry could not be reached or failed (connection, timeout, 5xx). Retried."""


def classify(err: Exception, where: str) -> ModelRegistryError:
    """One line for what the ``model-registry`` client raised: unauthorised, unreachable or refused."""
    status = getattr(err, "status", None)
    if isinstance(err, ModelRegistryError):
        return err
    if status in (401, 403):
        return ModelRegistryUnauthorisedError(
            f"Kubeflow Model Registry at {where} refused the token ({status} {getattr(err, 'reason', '')}"
            f"): check the key 'token' of the pipeline's model_registry_secret ({ENV_TOKEN})"
        )
    first = (str(getattr(err, "body", "") or "") or str(err)).strip().splitlines()
    text = first[0][:200] if first else type(err).__name__
    if isinstance(status, int) and status < 500:
        return ModelRegistryError(
            f"Kubeflow Model Registry at {where} refused the registration ({status}): {text}"
        )
    return ModelRegistryUnreachableError(f"cannot reach Kubeflow Model Registry at {where}: {text}")


def split_address(address: str) -> tuple[str, int]:
    """``host:port``, ``http(s)://host[:port]`` → (``http(s)://host``, port)."""
    match = re.match(r"^(?:(https?)://)?([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?/?$", address.strip())
    if not match or (match.group(1) is None and match.group(3) is None):
        raise ModelRegistryError(
            f"invalid Kubeflow Model Registry address {address!r}: use host:port or http(s)://host[:port]"
        )
    scheme, host, port = match.group(1) or "http", match.group(2), match.group(3)
    return f"{scheme}://{host}", int(port) if port else 443 if scheme == "https" else 8080


def version_metadata(version: RegistryVersion, run_id: str, pipeline_version: str) -> dict[str, Any]:
    """Custom properties of the registered version: scalars only (the client's supported types)."""
    meta: dict[str, Any] = {
        "twt_ref": version.ref,
        "artifact_uri": version.uri,
        RUN_ID: run_id,
        "pipeline_version": pipeline_version,
        "created": version.created,
        "files": version.files,
        "total_bytes": version.total_bytes,
        **version.headline,
    }
    gate = version.metadata.get("gate")
    if isinstance(gate, Mapping):
        meta["gate_passed"] = gate.get("passed")
        meta["gate_student"] = gate.get("student")
        meta["gate_reasons"] = "; ".join(str(r) for r in gate.get("reasons") or [])
    for name, _chosen, numbers in metric_rows(version.metadata.get("metrics"), gate):
        for key in ("accuracy", "mean_output_tokens"):
            meta[f"metric_{name}_{key}"] = numbers.get(key)
    return {k: _typed(v) for k, v in meta.items() if isinstance(v, (str, int, float, bool))}


def _typed(value: str | int | float | bool) -> str | int | float | bool:
    """An int the API cannot hold as ``MetadataIntValue`` (int32 digits only, ``^-?([1-9][0-9]{0,8}|0)$``
    in ``api/openapi/model-registry.yaml``: a model of 1 GB has 10 digits of bytes) goes as a string."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 999_999_999:
        return str(value)
    return value


def artifact_uri(uri: str, environ: Mapping[str, str] = os.environ) -> str:
    """``s3://bucket/key`` with the object store's endpoint (and region) in the query, as
    ``model_registry.utils.s3_uri_from`` writes it; other URIs, or no ``TWT_S3_ENDPOINT``, unchanged."""
    endpoint = environ.get("TWT_S3_ENDPOINT", "").strip().rstrip("/")
    if not uri.startswith("s3://") or not endpoint:
        return uri
    if "://" not in endpoint:
        secure = environ.get("TWT_S3_SECURE", "true").strip().lower() not in ("false", "0", "no")
        endpoint = f"{'https' if secure else 'http'}://{endpoint}"
    query = {"endpoint": endpoint}
    if environ.get("TWT_S3_REGION"):
        query["defaultRegion"] = environ["TWT_S3_REGION"]
    return f"{uri}?{urllib.parse.urlencode(query, safe=':/')}"


def pod_namespace(path: str | os.PathLike = NAMESPACE_FILE) -> str | None:
    """The namespace this pod runs in (its service account's), or None off a cluster."""
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def connect(address: str, token: str | None, author: str = "twt"):
    """A ``model_registry.ModelRegistry`` client; one line when the package, token or server is missing."""
    try:
        from model_registry import ModelRegistry
    except ImportError as err:
        raise ModelRegistryError(
            "registering in Kubeflow Model Registry needs the model-registry package: "
            "pip install 'twt[kubeflow-registry]'"
        ) from err
    server, port = split_address(address)
    secure = server.startswith("https")
    if secure and not token:
        raise ModelRegistryError(
            f"Kubeflow Model Registry at {address} needs a token: set the key 'token' of the pipeline's "
            f"model_registry_secret (environment variable {ENV_TOKEN})"
        )
    try:
        return ModelRegistry(server, port, author=author, is_secure=secure, user_token=token or None)
    except Exception as err:  # the client raises its ApiException, StoreError, aiohttp and OSError errors
        raise classify(err, f"{server}:{port}") from None


def find_run_version(client, model: str, run_id: str, page_size: int = PAGE_SIZE):
    """The version of ``model`` registered by ``run_id``, or None; reads every page of versions."""
    if not run_id or client.get_registered_model(model) is None:
        return None
    for candidate in client.get_model_versions(model).page_size(page_size):
        if (candidate.custom_properties or {}).get(RUN_ID) == run_id:
            return candidate
    return None


def _register_once(
    client,
    version: RegistryVersion,
    run_id: str,
    pipeline_version: str,
    storage_key: str,
    namespace: str | None,
    environ: Mapping[str, str],
    page_size: int,
) -> dict[str, Any]:
    artifact = {  # the model artifact's fields, as ilab-on-ocp's registration sets them
        "model_format_name": "huggingface",
        "model_format_version": "1",
        "storage_key": storage_key,
        "model_source_kind": "kfp",
        "model_source_class": "pipelinerun",
        "model_source_group": namespace,
        "model_source_id": run_id or None,
    }
    uri = artifact_uri(version.uri, environ)
    existing = find_run_version(client, version.model, run_id, page_size)
    if existing is not None:
        result = {"action": "exists", "model": version.model, "version": existing.name, "id": existing.id}
        if client.get_model_artifact(version.model, existing.name) is None:
            # an earlier try stopped between the version and its artifact: add the artifact as
            # register_model does (its own step, model-registry 0.3.18 ModelRegistry._register_model_artifact)
            client.async_runner(client._register_model_artifact(existing, version.model, uri, **artifact))
            result["action"] = "completed"
        return result
    if client.get_registered_model(version.model) is not None:
        taken = client.get_model_version(version.model, version.version)
        if taken is not None:
            other = (taken.custom_properties or {}).get(RUN_ID, "another run")
            raise ModelRegistryError(
                f"Kubeflow Model Registry already has {version.model} version {version.version} from {other}"
            )
    gate = version.metadata.get("gate")
    verdict = " (gate passed)" if isinstance(gate, Mapping) and gate.get("passed") is True else ""
    client.register_model(
        version.model,
        uri,
        version=version.version,
        version_description=f"twt student {version.ref}{verdict}, run {run_id or 'unknown'}",
        metadata=version_metadata(version, run_id, pipeline_version),
        **artifact,
    )
    registered = client.get_model_version(version.model, version.version)
    return {"action": "registered", "model": version.model, "version": version.version, "id": registered.id}


def register_version(
    version: RegistryVersion,
    *,
    run_id: str,
    pipeline_version: str,
    address: str | None = None,
    token: str | None = None,
    author: str = "twt",
    storage_key: str | None = None,
    namespace: str | None = None,
    environ: Mapping[str, str] = os.environ,
    attempts: int = ATTEMPTS,
    backoff_s: float = BACKOFF_S,
    sleep: Callable[[float], None] = time.sleep,
    page_size: int = PAGE_SIZE,
) -> dict[str, Any]:
    """Register ``version`` once per pipeline run (module docstring); returns what was done. Raises
    ``ModelRegistryError``: ``ModelRegistryUnauthorisedError`` at once, ``ModelRegistryUnreachableError``
    after ``attempts`` tries."""
    address = address or environ.get(ENV_ADDRESS)
    if not address:
        raise ModelRegistryError(
            "no Kubeflow Model Registry address: set the key 'address' of the pipeline's "
            f"model_registry_secret (environment variable {ENV_ADDRESS}), or the configuration's "
            "registry.kubeflow_registry_address"
        )
    token = token or environ.get(ENV_TOKEN)
    storage_key = storage_key or environ.get(ENV_STORAGE_KEY) or DEFAULT_STORAGE_KEY
    namespace = namespace or pod_namespace()
    server, port = split_address(address)
    for attempt in range(1, attempts + 1):
        try:
            client = connect(address, token, author)
            return _register_once(
                client, version, run_id, pipeline_version, storage_key, namespace, environ, page_size
            )
        except ModelRegistryUnreachableError:
            if attempt == attempts:
                raise
        except ModelRegistryError:
            raise
        except Exception as err:  # the client's ApiException, aiohttp and OSError errors
            found = classify(err, f"{server}:{port}")
            if not isinstance(found, ModelRegistryUnreachableError) or attempt == attempts:
                raise found from None
        sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def retry_command(version: RegistryVersion, run_id: str) -> str:
    """The command that registers the published ``version`` again (``twt registry register``)."""
    root = version.uri.rstrip("/").rsplit("/", 2)[0]
    return f"twt registry register {version.ref} --root {shlex.quote(root)} --run-id {shlex.quote(run_id)}"


def register(
    version: RegistryVersion, *, run_id: str, pipeline_version: str, **options: Any
) -> dict[str, Any]:
    """``register_version`` for the promote step: a failure is a warning and a record, never an error (the
    student stays published; ``retry`` registers it later). ``options`` as ``register_version``."""
    try:
        return register_version(version, run_id=run_id, pipeline_version=pipeline_version, **options)
    except ModelRegistryError as err:
        retry = retry_command(version, run_id)
        print(
            f"twt: warning: {version.ref} is published but not registered: {err}; retry: {retry}",
            file=sys.stderr,
        )
        return {
            "action": "failed",
            "model": version.model,
            "version": version.version,
            "error": str(err),
            "unauthorised": isinstance(err, ModelRegistryUnauthorisedError),
            "retry": retry,
        }
