"""Which images a compiled pipeline names: any registry, chosen at compile time.

    python -m pipelines compile --image-registry registry.example.com/ml     # or TWT_IMAGE_REGISTRY
    python -m pipelines compile --cpu-image REF --gpu-image REF             # explicit references

Components bind their image when they are decorated (``components.images``: ``ghcr.io/twt-project``),
and ``@dsl.pipeline`` builds the pipeline's spec at import time, so the images are retargeted in that
spec: ``retargeted`` swaps every executor's image in the pipeline's ``deploymentSpec`` for the length of
a ``with`` block (a compile, or a ``kfp.local`` run) and puts the defaults back afterwards. Executors
are matched by their default image, so a new component is retargeted with no change here.

A registry is ``host[:port][/path]`` whose host is a DNS name with a dot, ``localhost`` or has a port
(``docker.io/NAME`` for Docker Hub); anything else is refused with one line before anything is compiled.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping

from components.images import CPU_IMAGE, GPU_IMAGE, VERSION

ENV_REGISTRY = "TWT_IMAGE_REGISTRY"
IMAGE_NAMES = {"cpu": "twt-cpu", "gpu": "twt-gpu"}
DEFAULT_IMAGES = {"cpu": CPU_IMAGE, "gpu": GPU_IMAGE}

# The grammar of github.com/distribution/reference (no IPv6 hosts).
_LABEL = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REGISTRY_RE = re.compile(rf"(?P<host>{_HOST})(?:/{_PATH})*")
IMAGE_RE = re.compile(
    rf"(?P<name>(?:{_HOST}/)?{_PATH}(?:/{_PATH})*)(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)


class ImageError(ValueError):
    """A registry or image reference that cannot be used; the message says which and why."""


def check_registry(registry: str) -> str:
    """``registry`` without a trailing ``/``, or ``ImageError`` when it is not ``host[:port][/path]``."""
    value = registry.strip().rstrip("/")
    match = REGISTRY_RE.fullmatch(value)
    if not match:
        raise ImageError(
            f"image registry {registry!r} is not host[:port][/path] (lower-case path, e.g. ghcr.io/me "
            "or localhost:5000/ml)"
        )
    host = match.group("host")
    if "." not in host and ":" not in host and host != "localhost":
        raise ImageError(
            f"image registry {registry!r}: {host!r} is not a registry host (a DNS name with a dot, "
            f"localhost, or host:port; for Docker Hub write docker.io/{value})"
        )
    return value


def check_image(reference: str, what: str = "image") -> str:
    """``reference`` when it is a full image reference with a tag or digest, else ``ImageError``."""
    match = IMAGE_RE.fullmatch(reference.strip())
    if not match or not (match.group("tag") or match.group("digest")):
        raise ImageError(f"{what} {reference!r} is not an image reference with a tag or digest (REPO:TAG)")
    return reference.strip()


def choose_images(
    registry: str | None = None,
    cpu_image: str | None = None,
    gpu_image: str | None = None,
    version: str = VERSION,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """``{"cpu": ref, "gpu": ref}``: explicit references win, then ``registry`` (or ``$TWT_IMAGE_REGISTRY``)
    with ``twt-{cpu,gpu}:<version>``, then the defaults of ``components.images``."""
    registry = registry or environ.get(ENV_REGISTRY) or None
    images = dict(DEFAULT_IMAGES)
    if registry:
        base = check_registry(registry)
        images = {kind: f"{base}/{name}:{version}" for kind, name in IMAGE_NAMES.items()}
    if cpu_image:
        images["cpu"] = check_image(cpu_image, "--cpu-image")
    if gpu_image:
        images["gpu"] = check_image(gpu_image, "--gpu-image")
    return images


def executor_images_of(pipeline) -> dict[str, str]:
    """Executor → image of a ``@dsl.pipeline`` object's (in-memory) spec."""
    executors = pipeline.pipeline_spec.deployment_spec["executors"]
    return {name: executors[name]["container"]["image"] for name in sorted(executors.keys())}


def image_kinds() -> dict[str, str]:
    """Executor → ``cpu`` or ``gpu``: the image kind each component of ``twt-distillation`` was built for."""
    from pipelines.distillation import twt_distillation

    kind_of = {image: kind for kind, image in DEFAULT_IMAGES.items()}
    images = executor_images_of(twt_distillation)
    return {name: kind_of[image] for name, image in images.items() if image in kind_of}


@contextlib.contextmanager
def retargeted(pipeline, images: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Within the block, executors of ``pipeline`` that run a default image run ``images[kind]`` instead;
    yields executor → image. The spec is restored on exit, also after an error."""
    swap = {DEFAULT_IMAGES[kind]: image for kind, image in images.items()}
    executors = pipeline.pipeline_spec.deployment_spec["executors"]
    original = executor_images_of(pipeline)
    unknown = {name: image for name, image in original.items() if image not in swap}
    if unknown:
        raise ImageError(f"executors on images that are neither default: {unknown}")
    # an executor's TWT_IMAGE (the image its training jobs run, pipelines.distillation) follows its image
    containers = [executors[name]["container"] for name in original]  # protobuf Structs, not dicts
    image_envs = [
        env
        for container in containers
        for env in (container["env"] if "env" in container else [])  # noqa: SIM401 - Struct has no .get
        if env["name"] == "TWT_IMAGE" and env["value"] in swap
    ]
    env_values = [env["value"] for env in image_envs]
    try:
        for name, image in original.items():
            executors[name]["container"]["image"] = swap[image]
        for env, value in zip(image_envs, env_values, strict=True):
            env["value"] = swap[value]
        yield executor_images_of(pipeline)
    finally:
        for name, image in original.items():
            executors[name]["container"]["image"] = image
        for env, value in zip(image_envs, env_values, strict=True):
            env["value"] = value
