"""The KFP API server that ``python -m pipelines upload`` and ``run`` talk to: connecting (token, cookies)
and the minimum backend version.

    export TWT_KFP_TOKEN=$(kubectl -n <profile> create token default-editor)      # multi-user Kubeflow
    python -m pipelines upload --host http://<istio-ingressgateway>/pipeline --namespace <profile>
    python -m pipelines run --host URL --token-file /var/run/secrets/kubeflow/pipelines/token ...  # in a pod
    python -m pipelines upload --host URL --cookies "oauth2_proxy_kubeflow=…"         # a browser session

Multi-user Kubeflow puts the API server behind its auth proxy: a request needs ``Authorization: Bearer
<token>`` (a service account token of the profile, as above from outside the cluster through the Istio
ingress gateway's ``/pipeline`` path; in a pod, the projected token of audience ``pipelines.kubeflow.org``
that Kubeflow's docs mount at ``/var/run/secrets/kubeflow/pipelines/token``) or the session cookie the
dashboard set. Both go to ``kfp.Client(existing_token=..., cookies=...)``. Standalone KFP needs neither.

Minimum backend: 2.16. The compiled spec uses platform fields that older API servers reject with
"unknown field" on every task: ``SecretAsEnv.optional`` (first in
``kubernetes_platform/proto/kubernetes_executor_config.proto`` at 2.15.0) and
``KubernetesExecutorConfig.security_context`` (field 18, first at 2.16.0). Kubeflow 1.10 ships 2.5.
The backend's version is the ``tag_name`` of ``GET /apis/v2beta1/healthz`` (the ``TAG_NAME`` build
argument, the release tag; ``backend/src/apiserver/main.go`` at 2.17.0 and, as a plain JSON string,
since 2.5.0). kfp 2.17's ``get_kfp_healthz`` parses only ``multi_user`` and ``pipeline_store``, so the
body is read raw through the client's own healthz API (its auth headers and cookies included).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

MIN_BACKEND = (2, 16, 0)
MIN_VERSION = ".".join(map(str, MIN_BACKEND))
ENV_TOKEN = "TWT_KFP_TOKEN"  # bearer token for the KFP API (multi-user Kubeflow)
ENV_TOKEN_FILE = "TWT_KFP_TOKEN_FILE"  # or a file holding it (a service account token)
ENV_COOKIES = "TWT_KFP_COOKIES"  # or the dashboard's session cookie(s), "name=value; name2=value2"


class BackendError(ValueError):
    """The KFP API server is too old, or its version cannot be told; the message says which."""


def read_token(token: str | None, token_file: str | os.PathLike | None) -> str | None:
    """The bearer token: ``token`` itself, else the stripped contents of ``token_file``; None without both."""
    if token:
        return token
    if not token_file:
        return None
    try:
        text = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise BackendError(f"--token-file {token_file}: cannot read it ({err.strerror})") from None
    if not text:
        raise BackendError(f"--token-file {token_file}: the file is empty")
    return text


def connect(host: str, namespace: str, *, token: str | None = None, cookies: str | None = None):
    """A ``kfp.Client`` for ``host`` that sends ``token`` as a bearer token and ``cookies`` as a header."""
    import kfp

    return kfp.Client(host=host, namespace=namespace, existing_token=token or None, cookies=cookies or None)


def parse_version(tag: str) -> tuple[int, int, int] | None:
    """``2.17.0``, ``v2.16.1``, ``2.15.0-rc.1`` → (major, minor, patch); None for ``unknown`` or a sha."""
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", tag.strip())
    return (int(match[1]), int(match[2]), int(match[3] or 0)) if match else None


def backend_version(client) -> str:
    """The API server's ``tag_name`` (``"unknown"`` for a build without one)."""
    response = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
    try:
        return str(json.loads(response.data).get("tag_name") or "unknown")
    except (ValueError, AttributeError):
        return "unknown"


def require_backend(client, minimum: tuple[int, int, int] = MIN_BACKEND) -> str:
    """The backend's version when it is at least ``minimum``; else ``BackendError`` in one line."""
    tag = backend_version(client)
    found = parse_version(tag)
    needed = ".".join(map(str, minimum))
    if found is None:
        raise BackendError(
            f"cannot tell the KFP backend's version (healthz tag_name {tag!r}); this pipeline needs "
            f"{needed} or newer: pass --skip-backend-check if it is"
        )
    if found < minimum:
        raise BackendError(
            f"the KFP backend is {tag}, this pipeline needs {needed} or newer "
            "(optional secrets need 2.15, securityContext 2.16): upgrade Kubeflow Pipelines"
        )
    return tag
