"""A tool a test needs and cannot find: the test skips, except in CI, where the tool must be there and the
test fails (a skip would pass the build with the check never run)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """CI set, as GitHub Actions and .ci/run set it (any value but empty, false or 0)."""
    return os.environ.get("CI", "").lower() not in ("", "false", "0")


def missing_tool(reason: str) -> NoReturn:
    """Skip the test with ``reason``; in CI, fail it."""
    if in_ci():
        pytest.fail(f"{reason}, and CI needs it", pytrace=False)
    pytest.skip(reason)
