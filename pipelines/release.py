"""Versioned compile, image check, upload and run submission of the ``twt-distillation`` pipeline.

    python -m pipelines compile                      # dist/twt-distillation-<version>.yaml (checked)
    python -m pipelines check dist/twt-distillation-0.1.0.yaml
    python -m pipelines upload --host http://localhost:8080 [--package FILE]
    python -m pipelines run --host http://localhost:8080 --config configs/example-cluster.yaml

Compiling is deterministic: the same tree gives the same bytes. KFP 2.17's header comment is the one
part that needs help: it prints dict-valued defaults in hash order, and a multi-line default (the
demo ``config_yaml``) with only its first line commented, which breaks the YAML. ``compile_pipeline``
patches KFP's header writer for the duration of the compile (sorted keys, every line a comment).
The version is the package's (``components.images.VERSION``); the images' registry is chosen at compile
time (``pipelines.images``: ``--image-registry``, ``$TWT_IMAGE_REGISTRY``, ``--cpu-image/--gpu-image``).
``check_images`` reads the images the spec names and fails when one is not ``<registry>/twt-cpu`` or
``twt-gpu`` as its component needs, tagged ``<version>`` (or pinned by digest), or when the installed
package's version is not ``pyproject.toml``'s (a stale install). ``upload`` finds the pipeline by name and
creates it, or adds a version named ``<version>-<git sha>`` (``-dirty`` when the work tree has
uncommitted changes).
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


def upload(
    client,
    package: str | os.PathLike | None = None,
    *,
    sha: str | None = None,
    version: str = VERSION,
    description: str | None = None,
) -> dict:
    """Upload a compiled spec: create the pipeline when ``client`` (a ``kfp.Client``) has none of this
    name, else add the version ``<version>-<sha>``. Checks the image tags first. Returns what was done."""
    from pipelines.distillation import PIPELINE_NAME

    path = Path(package) if package is not None else package_path(version)
    if not path.is_file():
        raise ReleaseError(f"{path}: no compiled pipeline; run `python -m pipelines compile` first")
    check_images(path, version)
    version_name = f"{version}-{sha or git_sha()}"
    text = description or f"twt {version_name}"
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    if pipeline_id is None:
        created = client.upload_pipeline(
            pipeline_package_path=str(path), pipeline_name=PIPELINE_NAME, description=text
        )
        return {
            "action": "created",
            "pipeline": PIPELINE_NAME,
            "pipeline_id": getattr(created, "pipeline_id", None),
            "version": version_name,
            "package": str(path),
        }
    added = client.upload_pipeline_version(
        pipeline_package_path=str(path),
        pipeline_version_name=version_name,
        pipeline_id=pipeline_id,
        description=text,
    )
    return {
        "action": "version",
        "pipeline": PIPELINE_NAME,
        "pipeline_id": pipeline_id,
        "version": version_name,
        "version_id": getattr(added, "pipeline_version_id", None),
        "package": str(path),
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
    from twt.config import ConfigError, load_config
    from twt.slices import PARAMETERS, resolve

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
    package: str | os.PathLike | None = None,
    overrides: Mapping[str, object] | None = None,
    run_name: str | None = None,
    experiment: str | None = None,
    service_account: str = SERVICE_ACCOUNT,
    version: str = VERSION,
):
    """Submit one run of the compiled pipeline with the configuration's parameters; returns KFP's result."""
    from twt.config import load_config

    path = Path(package) if package is not None else package_path(version)
    if not path.is_file():
        raise ReleaseError(f"{path}: no compiled pipeline; run `python -m pipelines compile` first")
    check_images(path, version)
    arguments = run_arguments(config_path, overrides=overrides)
    name = load_config(config_path).name
    return client.create_run_from_pipeline_package(
        str(path),
        arguments=arguments,
        run_name=run_name or f"{name}-{version}",
        experiment_name=experiment or name,
        service_account=service_account,
    )
