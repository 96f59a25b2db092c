"""Promotion to Kubeflow Model Registry: the published student as a registered model version
(extra ``twt[kubeflow-registry]``, installed in the CPU image).

    version = registry.publish(...)                      # the twt registry (S3) first: the artifact
    register(version, run_id="…", pipeline_version="0.1.0")   # address and token from the environment

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
from collections.abc import Mapping
from typing import Any

from twt.model_card import metric_rows
from twt.registry import RegistryError, RegistryVersion

ENV_ADDRESS = "TWT_MODEL_REGISTRY_ADDRESS"
ENV_TOKEN = "TWT_MODEL_REGISTRY_TOKEN"
SECRET_KEYS = {"address": ENV_ADDRESS, "token": ENV_TOKEN}  # the pipeline's model_registry_secret
RUN_ID = "pipeline_run_id"


class ModelRegistryError(RegistryError):
    """Kubeflow Model Registry cannot be reached or refused the registration; the message says which."""


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
    return {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}


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
    except Exception as err:  # the client raises StoreError, aiohttp and OSError errors
        raise ModelRegistryError(
            f"cannot reach Kubeflow Model Registry at {server}:{port}: {str(err).splitlines()[0][:200]}"
        ) from None


def find_run_version(client, model: str, run_id: str):
    """The version of ``model`` registered by ``run_id``, or None."""
    if not run_id or client.get_registered_model(model) is None:
        return None
    for candidate in client.get_model_versions(model):
        if (candidate.custom_properties or {}).get(RUN_ID) == run_id:
            return candidate
    return None


def register(
    version: RegistryVersion,
    *,
    run_id: str,
    pipeline_version: str,
    address: str | None = None,
    token: str | None = None,
    author: str = "twt",
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """Register ``version`` once per pipeline run (module docstring); returns what was done."""
    address = address or environ.get(ENV_ADDRESS)
    if not address:
        raise ModelRegistryError(
            "no Kubeflow Model Registry address: set the key 'address' of the pipeline's "
            f"model_registry_secret (environment variable {ENV_ADDRESS}), or the configuration's "
            "registry.kubeflow_registry_address"
        )
    token = token or environ.get(ENV_TOKEN)
    client = connect(address, token, author)
    existing = find_run_version(client, version.model, run_id)
    if existing is not None:
        return {"action": "exists", "model": version.model, "version": existing.name, "id": existing.id}
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
        version.uri,
        version=version.version,
        model_format_name="huggingface",
        model_format_version="1",
        version_description=f"twt student {version.ref}{verdict}, run {run_id or 'unknown'}",
        metadata=version_metadata(version, run_id, pipeline_version),
    )
    registered = client.get_model_version(version.model, version.version)
    return {"action": "registered", "model": version.model, "version": version.version, "id": registered.id}
