"""Versioned compile, image check, upload and run submission of the ``twt-distillation`` pipeline.

    python -m pipelines compile                      # dist/twt-distillation-<version>.yaml (checked)
    python -m pipelines check dist/twt-distillation-0.1.0.yaml
    python -m pipelines upload --host http://localhost:8080 [--package FILE]      # version <version>-<sha>
    python -m pipelines run --host http://localhost:8080 --config configs/example-cluster.yaml  # runs it

Compiling is deterministic: the same tree gives the same bytes. KFP 2.17's header comment is the one
part that needs help: it prints dict-valued defaults in hash order, and a multi-line default (the
demo ``config_yaml``) with only its first line commented, which breaks the YAML. ``compile_pipeline``
patches KFP's header writer for the duration of the compile (sorted keys, every line a comment).
The version is the package's (``components.images.VERSION``); the images' registry is chosen at compile
time (``pipelines.images``: ``--image-registry``, ``$TWT_IMAGE_REGISTRY``, ``--cpu-image/--gpu-image``).
``check_images`` reads the images the spec names and fails when one is not ``<registry>/twt-cpu`` or
``twt-gpu`` as its component needs, tagged ``<version>`` (or pinned by digest), or when the installed
package's version is not ``pyproject.toml``'s (a stale install). ``upload`` checks the backend's version
(``pipelines.kfp_server``), finds the pipeline by name or creates it, and adds the version
``<version>-<git sha>`` (``-dirty`` when the work tree has uncommitted changes); ``run`` starts that
version (``run_pipeline`` with its pipeline and version ids).
"""

import contextlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from components.images import VERSION
from pipelines import kfp_server

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
IMAGE_NAMES = ("twt-cpu", "twt-gpu")
SERVICE_ACCOUNT = "twt-pipeline-runner"  # manifests/base/pipeline-runner-rbac.yaml
NAMESPACE = "twt"  # manifests/base/kustomization.yaml (a Profile namespace: manifests/overlays/profile)


class ReleaseError(ValueError):
    """A spec, version or configuration that cannot be released or submitted; the message says why."""


def package_path(version: str = VERSION, dist: Path = DIST) -> Path:
    from pipelines.distillation import PIPELINE_NAME

    return dist / f"{PIPELINE_NAME}-{version}.yaml"


# --- compile and check -------------------------------------------------------------------------------------


def _sorted(value):
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def commented(header: str) -> str:
    """Every line of KFP's header a YAML comment: KFP 2.17 prints a multi-line default (``config_yaml``)
    with only its first line commented, which would turn the rest into YAML keys."""
    lines = header.split("\n")
    body = [line if line.startswith("#") else f"#      {line}".rstrip() for line in lines[:-1]]
    return "\n".join([*body, lines[-1]])


@contextlib.contextmanager
def _deterministic_header():
    """Patch KFP's header writer for one compile: defaults with sorted keys (KFP prints dict-valued
    defaults in hash order, so two compiles differed) and every line commented (``commented``)."""
    from kfp.compiler import pipeline_spec_builder as builder

    original = builder.extract_comments_from_pipeline_spec

    def header(pipeline_spec: dict, pipeline_description: str | None) -> str:
        return commented(original(_sorted(pipeline_spec), pipeline_description))

    builder.extract_comments_from_pipeline_spec = header
    try:
        yield
    finally:
        builder.extract_comments_from_pipeline_spec = original


def load_spec(path: str | os.PathLike) -> dict:
    """The compiled spec as one mapping (a platform spec in a second YAML document is merged in)."""
    spec: dict = {}
    for document in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")):
        if isinstance(document, dict):
            spec.update(document)
    return spec


def executor_images(spec: Mapping) -> dict[str, str]:
    """Executor name → container image, from ``deploymentSpec``."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return {name: e["container"]["image"] for name, e in sorted(executors.items()) if "container" in e}


def pyproject_version(root: Path = ROOT) -> str | None:
    """``[project].version`` of the source tree's pyproject.toml (None outside a source tree)."""
    path = root / "pyproject.toml"
    if not path.is_file():
        return None
    match = re.search(r'(?ms)^\[project\].*?^version\s*=\s*"([^"]+)"', path.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def check_images(path: str | os.PathLike, version: str = VERSION) -> dict[str, str]:
    """Fail (``ReleaseError``) unless every executor names ``<registry>/twt-{cpu,gpu}:<version>`` (any
    registry; a ``@sha256:`` digest may replace the tag), the kind the component needs, and ``version`` is
    the source tree's; returns executor → image, as the spec names them."""
    from pipelines.images import IMAGE_RE, image_kinds

    source = pyproject_version()
    if source is not None and source != version:
        raise ReleaseError(
            f"the installed twt is {version} but pyproject.toml says {source}: reinstall "
            "(pip install -e .) before compiling, so the image tags name the right version"
        )
    if not Path(path).is_file():
        raise ReleaseError(f"{path}: no compiled pipeline; run `python -m pipelines compile` first")
    images = executor_images(load_spec(path))
    if not images:
        raise ReleaseError(f"{path}: no executors with a container image")
    kinds = image_kinds()
    wrong = {}
    for name, image in images.items():
        match = IMAGE_RE.fullmatch(image)
        wanted = {f"twt-{kinds[name]}"} if name in kinds else set(IMAGE_NAMES)
        if (
            not match
            or match.group("name").rsplit("/", 1)[-1] not in wanted
            or not (match.group("tag") == version or match.group("digest"))
        ):
            wrong[name] = image
    if wrong:
        listed = ", ".join(f"{name}: {image}" for name, image in wrong.items())
        raise ReleaseError(f"{path}: image tags do not match version {version}: {listed}")
    return images


def compile_pipeline(
    out: str | os.PathLike | None = None, version: str = VERSION, images: Mapping[str, str] | None = None
) -> Path:
    """Compile ``twt-distillation`` to ``out`` (default ``dist/twt-distillation-<version>.yaml``),
    deterministic and checked; a spec that fails the check is not written. ``images`` (``{"cpu": ref,
    "gpu": ref}``, see ``pipelines.images.choose_images``) replaces the default images."""
    from kfp import compiler

    from pipelines.distillation import twt_distillation
    from pipelines.images import DEFAULT_IMAGES, retargeted

    target = Path(out) if out is not None else package_path(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="twt-compile-") as scratch:
        raw = Path(scratch) / "pipeline.yaml"
        with _deterministic_header(), retargeted(twt_distillation, images or DEFAULT_IMAGES):
            compiler.Compiler().compile(twt_distillation, str(raw))
        check_images(raw, version)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(raw.read_bytes())
        os.replace(tmp, target)
    return target


def kubernetes_manifests(
    out: str | os.PathLike,
    *,
    sha: str | None = None,
    namespace: str | None = None,
    version: str = VERSION,
    images: Mapping[str, str] | None = None,
) -> Path:
    """The ``Pipeline`` and ``PipelineVersion`` objects (``pipelines.kubeflow.org/v2beta1``, kfp 2.17's
    ``kubernetes_manifest_format``) of this tree, for a KFP whose pipeline store is Kubernetes (GitOps:
    ``kubectl apply -f``): the spec ``compile_pipeline`` writes, checked the same way, in the version
    ``twt-distillation-<version>-<sha>`` shown as ``<version>-<sha>``, the name ``upload`` gives it."""
    from kfp import compiler
    from kfp.compiler.compiler_utils import KubernetesManifestOptions

    from pipelines.distillation import PIPELINE_NAME, twt_distillation
    from pipelines.images import DEFAULT_IMAGES, retargeted

    version_name = f"{version}-{sha or git_sha()}"
    options = KubernetesManifestOptions(
        pipeline_name=PIPELINE_NAME,
        pipeline_version_name=f"{PIPELINE_NAME}-{version_name}",
        pipeline_version_display_name=version_name,
        namespace=namespace,
        include_pipeline_manifest=True,
    )
    target = Path(out)
    with tempfile.TemporaryDirectory(prefix="twt-compile-") as scratch:
        compile_pipeline(Path(scratch) / "pipeline.yaml", version, images)  # checks the images
        raw = Path(scratch) / "manifests.yaml"
        with _deterministic_header(), retargeted(twt_distillation, images or DEFAULT_IMAGES):
            compiler.Compiler().compile(
                twt_distillation,
                str(raw),
                kubernetes_manifest_options=options,
                kubernetes_manifest_format=True,
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(raw.read_bytes())
        os.replace(tmp, target)
    return target


# --- upload ------------------------------------------------------------------------------------------------


def git_sha(root: Path = ROOT) -> str:
    """The short commit of the tree, with ``-dirty`` when tracked files have uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        raise ReleaseError(f"cannot read the git commit of {root} ({err}); pass --sha") from None
    return f"{sha}-dirty" if dirty else sha


def version_filter(name: str) -> str:
    """A KFP list filter for one display name (as ``kfp.Client.get_pipeline_id`` builds it; an upload
    without ``display_name`` sets it to the name, ``pipeline_upload_server.go`` at 2.17.0)."""
    return json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})


def find_version(client, pipeline_id: str, name: str):
    """The version ``name`` of the pipeline ``pipeline_id`` (a ``V2beta1PipelineVersion``), or None."""
    found = client.list_pipeline_versions(pipeline_id, page_size=1, filter=version_filter(name))
    versions = found.pipeline_versions or []
    return versions[0] if versions else None


def upload(
    client,
    package: str | os.PathLike | None = None,
    *,
    sha: str | None = None,
    version: str = VERSION,
    description: str | None = None,
    check_backend: bool = True,
) -> dict:
    """Upload a compiled spec as the pipeline version ``<version>-<sha>`` (``client``: a ``kfp.Client``),
    creating the pipeline when there is none of this name. Checks the image tags and the backend's version
    (``check_backend``) first. A version already there is reported, not uploaded again (refused when the
    tree is dirty: its bytes may differ). Returns what was done.

    kfp 2.17's ``upload_pipeline`` takes no version name: the backend names the first version after the
    pipeline (``backend/src/apiserver/server/pipeline_upload_server.go`` at 2.17.0). So a new pipeline
    gets ``<version>-<sha>`` as a second version and the one named after the pipeline is deleted.
    """
    from pipelines.distillation import PIPELINE_NAME

    path = Path(package) if package is not None else package_path(version)
    if not path.is_file():
        raise ReleaseError(f"{path}: no compiled pipeline; run `python -m pipelines compile` first")
    check_images(path, version)
    version_name = f"{version}-{sha or git_sha()}"
    text = description or f"twt {version_name}"
    backend = kfp_server.require_backend(client) if check_backend else None
    result = {"pipeline": PIPELINE_NAME, "version": version_name, "package": str(path), "backend": backend}
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    created, first = pipeline_id is None, None
    if created:
        pipeline = client.upload_pipeline(
            pipeline_package_path=str(path), pipeline_name=PIPELINE_NAME, description=text
        )
        pipeline_id = pipeline.pipeline_id
        first = find_version(client, pipeline_id, PIPELINE_NAME)
    else:
        existing = find_version(client, pipeline_id, version_name)
        if existing is not None:
            if version_name.endswith("-dirty"):
                raise ReleaseError(
                    f"{PIPELINE_NAME} already has version {version_name}, from another dirty tree: commit "
                    "your changes (a new sha names a new version) or pass --sha"
                )
            return result | {
                "action": "exists",
                "pipeline_id": pipeline_id,
                "version_id": existing.pipeline_version_id,
            }
    added = client.upload_pipeline_version(
        pipeline_package_path=str(path),
        pipeline_version_name=version_name,
        pipeline_id=pipeline_id,
        description=text,
    )
    if first is not None:
        client.delete_pipeline_version(pipeline_id, first.pipeline_version_id)
    return result | {
        "action": "created" if created else "version",
        "pipeline_id": pipeline_id,
        "version_id": added.pipeline_version_id,
    }


# --- run parameters and submission -------------------------------------------------------------------------


def parse_value(text: str):
    """A ``--set`` value: JSON when it parses (numbers, lists, objects), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_arguments(
    config_path: str | os.PathLike,
    *,
    resolved: bool = False,
    overrides: Mapping[str, object] | None = None,
) -> dict:
    """Pipeline arguments from a twt configuration file: its text as ``config_override``, plus ``overrides``
    (other pipeline parameters by name: a typed parameter changed from its default overrides the file).

    The file is validated here first, with the overrides applied (a bad file or parameter fails before
    anything is submitted, in one line naming it). ``resolved`` sends the validated configuration with its
    paths made absolute and ``${TWT_DATA}`` expanded (for a run on this machine); otherwise the file's own
    text goes (for a cluster, where paths resolve in the image).
    """
    from pipelines.distillation import DEMO_CONFIG, TEACHER_KEY_ENVS, twt_distillation
    from pipelines.layout import accelerator_arguments
    from twt.core.load import load_config
    from twt.core.schema import ConfigError
    from twt.steps.parameters import PARAMETERS, resolve

    config = load_config(config_path)
    for teacher in config.teachers:
        if teacher.api_key_env and teacher.api_key_env not in TEACHER_KEY_ENVS:
            raise ReleaseError(
                f"{config_path}: teacher {teacher.name!r} reads its key from {teacher.api_key_env}, which "
                f"the pipeline does not pass on; use one of {list(TEACHER_KEY_ENVS)} or add it to "
                "pipelines.distillation.TEACHER_KEY_ENVS and recompile"
            )
    text = config.model_dump_yaml() if resolved else Path(config_path).read_text(encoding="utf-8")
    arguments = {"config_override": text}
    arguments.update(accelerator_arguments(config))  # HTTP-served teachers need no accelerator
    known = set(twt_distillation.component_spec.inputs or {})
    for name, value in (overrides or {}).items():
        if name not in known:
            raise ReleaseError(f"no pipeline parameter {name!r}; parameters: {sorted(known)}")
        arguments[name] = value
    typed = {name: value for name, value in arguments.items() if name in PARAMETERS}
    try:
        resolve(DEMO_CONFIG, config.model_dump_yaml(), typed)
    except ConfigError as err:
        raise ReleaseError(str(err)) from None
    return arguments


def submit_run(
    client,
    config_path: str | os.PathLike,
    *,
    pipeline_version: str | None = None,
    package: str | os.PathLike | None = None,
    overrides: Mapping[str, object] | None = None,
    run_name: str | None = None,
    experiment: str | None = None,
    service_account: str = SERVICE_ACCOUNT,
    version: str = VERSION,
    check_backend: bool = True,
):
    """Start one run with the configuration's parameters; returns KFP's run (``V2beta1Run``, or
    ``RunPipelineResult`` for a package).

    It runs the uploaded version ``pipeline_version`` (default ``<version>-<git sha>``, the name
    ``upload`` gives this tree) of ``twt-distillation``, so the run is linked to the version the UI lists.
    ``package`` instead submits a compiled file as a one-off run, outside any pipeline version.
    """
    from pipelines.distillation import PIPELINE_NAME
    from twt.core.load import load_config

    arguments = run_arguments(config_path, overrides=overrides)
    name = load_config(config_path).name
    if package is not None:
        check_images(package, version)
        if check_backend:
            kfp_server.require_backend(client)
        return client.create_run_from_pipeline_package(
            str(package),
            arguments=arguments,
            run_name=run_name or f"{name}-{version}",
            experiment_name=experiment or name,
            service_account=service_account,
        )
    version_name = pipeline_version or f"{version}-{git_sha()}"
    if check_backend:
        kfp_server.require_backend(client)
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    found = find_version(client, pipeline_id, version_name) if pipeline_id else None
    if found is None:
        raise ReleaseError(
            f"KFP has no version {version_name} of {PIPELINE_NAME}: upload it first "
            "(python -m pipelines upload) or name an uploaded one with --pipeline-version"
        )
    made = client.create_experiment(experiment or name)
    return client.run_pipeline(
        experiment_id=made.experiment_id,
        job_name=run_name or f"{name}-{version_name}",
        params=arguments,
        pipeline_id=pipeline_id,
        version_id=found.pipeline_version_id,
        service_account=service_account,
    )
