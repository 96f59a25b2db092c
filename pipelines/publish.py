"""Release builds: publish the compiled ``twt-distillation`` template once, upload exactly those bytes later.

    python -m pipelines publish --root s3://twt/registry --tag latest       # compile, check, push, tag
    python -m pipelines publish --root DIR --package dist/twt-distillation-0.1.0.yaml --tag stable
    python -m pipelines publish --root s3://twt/registry --kfp-registry-host https://HOST/REPO --tag latest
    python -m pipelines upload --host http://localhost:8080 --from twt-distillation@stable --root URI
    make publish-pipeline        # CI: TWT_PIPELINE_REGISTRY=s3://twt/registry TWT_PIPELINE_TAGS="latest"

``publish_release`` compiles (or takes ``--package``), checks the image tags against the package version,
refuses a dirty work tree (the recorded git sha would not say what was compiled), and publishes
``<root>/pipelines/twt-distillation/<version>/`` with ``twt.registry.pipelines`` (immutable, sha256
manifest recording package version, git sha and kfp version; tags moved atomically).

KFP template registry (optional, ``--kfp-registry-host`` or ``TWT_KFP_REGISTRY_HOST``): the same file goes
to ``kfp.registry.RegistryClient(host=HOST, auth=ApiAuth(TWT_KFP_REGISTRY_TOKEN) or None)
.upload_pipeline(file_name=FILE, tags=[...])``. With kfp 2.17 and a host that is not Artifact Registry
that is one ``POST HOST`` of ``multipart/form-data`` with the file as the ``content`` field and the tags
comma-joined in a ``tags`` field, ``Authorization: Bearer TOKEN`` when a token is set; the answer's body
is ``<package>/<version>``. Artifact Registry hosts (``https://<region>-kfp.pkg.dev/<project>/<repo>``)
use Google default credentials when no token is given, and name versions ``sha256:<digest of the
file>``: the result's ``same_digest`` says whether that equals the sha256 in our manifest. The store is
published first and stays the source of truth: when the KFP upload fails afterwards, the error says how
to retry only that part (``--package`` without ``--root``). Tested without a server
(tests/test_pipeline_registry.py fakes requests' transport and checks the request).

``upload_published`` pulls a published version (verified) and uploads it with ``pipelines.release.upload``
as the KFP pipeline version ``<package version>-<git sha recorded at publish>``, so the KFP UI gets the
bytes CI published, named after the commit CI compiled. A pulled file also works with ``upload
--package FILE --sha SHA`` (``twt pipeline list`` shows the sha).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

from components.images import VERSION
from pipelines import release
from pipelines.release import ReleaseError
from twt.core import store
from twt.registry import pipelines as pipeline_registry

ENV_ROOT = "TWT_PIPELINE_REGISTRY"  # registry root for publish and upload --from
ENV_TAGS = "TWT_PIPELINE_TAGS"  # tags for publish when no --tag is given: "latest stable" or "latest,stable"
ENV_KFP_HOST = "TWT_KFP_REGISTRY_HOST"  # KFP template registry for publish (optional)
ENV_KFP_TOKEN = "TWT_KFP_REGISTRY_TOKEN"  # its bearer token (optional)


def env_tags(env: Mapping[str, str] | None = None) -> list[str]:
    """Tags from ``TWT_PIPELINE_TAGS`` (separated by spaces or commas; unset or empty: none)."""
    text = (os.environ if env is None else env).get(ENV_TAGS, "")
    return [tag for tag in re.split(r"[\s,]+", text) if tag]


def _kfp_version() -> str | None:
    try:
        return installed_version("kfp")
    except PackageNotFoundError:  # pragma: no cover - kfp is a dependency
        return None


def _tag_list(tags: str | Iterable[str]) -> list[str]:
    """``tags`` as a list; one tag given as a string is one tag, not its letters."""
    return [tags] if isinstance(tags, str) else list(tags)


def push_to_kfp_registry(
    package: str | os.PathLike, host: str, tags: Iterable[str] = (), *, token: str | None = None
) -> dict[str, Any]:
    """Upload ``package`` to a KFP template registry with ``tags``; returns what the registry answered."""
    import requests
    from google.auth.exceptions import GoogleAuthError
    from kfp.registry import ApiAuth, RegistryClient

    tags = _tag_list(tags)
    try:
        client = RegistryClient(host=host, auth=ApiAuth(token) if token else None)
        name, version = client.upload_pipeline(file_name=str(package), tags=tags or None)
    except (requests.RequestException, ValueError, GoogleAuthError) as err:  # HTTP, no host, bad answer
        raise ReleaseError(f"upload of {package} to the KFP registry {host} failed: {err}") from err
    digest = f"sha256:{store.sha256_file(package)}"
    return {"host": host, "package": name, "version": version, "tags": tags, "same_digest": version == digest}


def publish_release(
    root: str | None,
    package: str | os.PathLike | None = None,
    *,
    tags: Iterable[str] = (),
    sha: str | None = None,
    allow_dirty: bool = False,
    kfp_registry_host: str | None = None,
    kfp_registry_token: str | None = None,
    version: str = VERSION,
    settings: store.S3Settings | None = None,
) -> dict[str, Any]:
    """Compile (unless ``package`` is given), check and publish this version's template to ``root``
    and/or ``kfp_registry_host``, pointing ``tags`` at it. Returns what was published where."""
    from pipelines.distillation import PIPELINE_NAME

    if not root and not kfp_registry_host:
        raise ReleaseError(f"nowhere to publish: pass --root (or set {ENV_ROOT}) and/or --kfp-registry-host")
    # checked before compiling, so a bad tag fails fast
    tags = [pipeline_registry.check_tag(tag) for tag in dict.fromkeys(_tag_list(tags))]
    sha = sha or release.git_sha()
    if sha.endswith("-dirty") and not allow_dirty:
        raise ReleaseError(
            f"the work tree has uncommitted changes ({sha}): commit them, or pass --allow-dirty, so the "
            "recorded git sha names what was compiled"
        )
    if package is None:
        from pipelines.images import choose_images  # $TWT_IMAGE_REGISTRY, else the default registry

        package = release.compile_pipeline(version=version, images=choose_images())
    path = Path(package)
    images = release.check_images(path, version)
    result: dict[str, Any] = {"pipeline": PIPELINE_NAME, "version": version, "package": str(path)}
    if root:
        metadata = {
            "package_version": version,
            "git_sha": sha,
            "kfp_version": _kfp_version(),
            "images": sorted(set(images.values())),
        }
        found = pipeline_registry.publish(
            path, root, PIPELINE_NAME, version, metadata=metadata, tags=tags, settings=settings
        )
        result["registry"] = found.to_dict()
    if kfp_registry_host:
        try:
            result["kfp_registry"] = push_to_kfp_registry(
                path, kfp_registry_host, tags, token=kfp_registry_token
            )
        except ReleaseError as err:
            if not root:
                raise
            raise ReleaseError(
                f"{PIPELINE_NAME}@{version} is published at {root}, but {err}; retry only that with "
                f"`python -m pipelines publish --package {path} --kfp-registry-host {kfp_registry_host}`"
            ) from err
    return result


def upload_published(
    connect: Callable[[], Any],
    ref: str,
    root: str | None,
    *,
    sha: str | None = None,
    settings: store.S3Settings | None = None,
    check_backend: bool = True,
) -> dict[str, Any]:
    """Pull ``ref`` (``twt-distillation@VERSION|TAG``) from ``root``, verified, and upload those bytes with
    ``release.upload(connect(), ...)`` as the version ``<package version>-<recorded git sha>``."""
    if not root:
        raise ReleaseError(f"--from needs the registry: pass --root or set {ENV_ROOT}")
    with tempfile.TemporaryDirectory(prefix="twt-upload-") as tmp:
        path = Path(tmp) / "pipeline.yaml"
        found = pipeline_registry.pull(ref, root, path, settings=settings)  # before connecting
        version = found.package_version or found.version
        source = release.pyproject_version()
        if source is not None and source != version:  # check_images would blame a stale install
            raise ReleaseError(
                f"{found.ref} runs the {version} images, but this source tree is {source}: upload it from "
                f"an install of twt {version} (or a checkout of {found.git_sha or 'that version'})"
            )
        name = sha or found.git_sha or f"sha256-{found.sha256[:12]}"
        result = release.upload(connect(), path, sha=name, version=version, check_backend=check_backend)
    return result | {"package": found.template_uri, "ref": found.ref, "sha256": found.sha256}
