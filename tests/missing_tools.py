"""A tool a test needs and cannot find: the test skips, except in CI, where the tool must be there and the
test fails (a skip would pass the build with the check never run)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import NoReturn

import pytest

MIN_KUSTOMIZE_MAJOR = 4  # `labels`, `components` and `patches` with targets


def in_ci() -> bool:
    """CI set, as GitHub Actions and .ci/run set it (any value but empty, false or 0)."""
    return os.environ.get("CI", "").lower() not in ("", "false", "0")


def missing_tool(reason: str) -> NoReturn:
    """Skip the test with ``reason``; in CI, fail it."""
    if in_ci():
        pytest.fail(f"{reason}, and CI needs it", pytrace=False)
    pytest.skip(reason)


def kubectl_or_skip() -> str:
    """kubectl with a kustomize >= v4: skips without one, fails in CI (``missing_tool``)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing_tool("kubectl not installed (run .ci/install-tools.sh)")
    version = json.loads(
        subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    kustomize = version.get("kustomizeVersion", "unknown")
    major = re.match(r"v?(\d+)", kustomize)
    if major is None or int(major.group(1)) < MIN_KUSTOMIZE_MAJOR:
        missing_tool(f"kubectl's kustomize {kustomize} is older than v{MIN_KUSTOMIZE_MAJOR}")
    return kubectl
