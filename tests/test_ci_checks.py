"""The CI checks themselves (`make tag-check`, `make spec-check`): each passes on a good input and fails on a
deliberately broken one, run the way CI runs it (.ci/run, .github/workflows/release.yml)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.images import VERSION

ROOT = Path(__file__).resolve().parents[1]


def run(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``command`` through bash, with this interpreter as the Makefile's $(PY) and no registry settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWT_", "MAKE"))}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env={**clean, "PY": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # -o install: use the venv running these tests (PY on the command line overrides the Makefile's)
    return run(" ".join(["make", "-s", "-o", "install", f"PY={sys.executable}", *args]), cwd)


# --- the tag check ------------------------------------------------------------------------------------------


def ci_run_line(target: str) -> str:
    lines = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith(f"make {target}")
    ]
    assert len(lines) == 1, f".ci/run runs {target} {len(lines)} times"
    return lines[0]


@pytest.fixture
def tagged_repo(tmp_path: Path):
    """A git repository with this Makefile and tag check, at version 1.2.3; ``tag(name)`` tags HEAD."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / ".ci" / "tag-check.sh", tmp_path / ".ci" / "tag-check.sh")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.2.3"\n')
    git = "git -c user.name=t -c user.email=t@t -c commit.gpgsign=false -c tag.gpgsign=false"
    assert run(f"git init -q && git add -A && {git} commit -q -m x", tmp_path).returncode == 0

    def tag(name: str) -> None:
        assert run(f"{git} tag {name}", tmp_path).returncode == 0

    return tmp_path, tag


def test_ci_here_checks_the_tag_on_head_not_the_version_against_itself(tagged_repo) -> None:
    repo, tag = tagged_repo
    line = ci_run_line("tag-check")
    untagged = run(line, repo)
    assert untagged.returncode == 0 and "no release tag" in untagged.stdout
    tag("v1.2.4")
    wrong = run(line, repo)
    assert wrong.returncode != 0 and "tag 'v1.2.4' is not v1.2.3" in wrong.stderr
    run("git tag -d v1.2.4", repo)
    tag("v1.2.3")
    assert run(line, repo).returncode == 0


def test_the_release_workflow_checks_the_pushed_tag() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML reads the key `on` as true
    steps = [s for s in workflow["jobs"]["release"]["steps"] if "make tag-check" in s.get("run", "")]
    assert len(steps) == 1
    step = steps[0]["run"]
    # GitHub sets GITHUB_REF_NAME to the pushed tag; run the step as the workflow does
    assert run(step, ROOT, GITHUB_REF_NAME=f"v{VERSION}").returncode == 0
    for wrong in (f"v{VERSION}.1", VERSION, ""):
        failed = run(step, ROOT, GITHUB_REF_NAME=wrong)
        assert failed.returncode != 0 and f"is not v{VERSION}" in failed.stderr, wrong


# --- the spec check -----------------------------------------------------------------------------------------


def test_the_spec_check_compares_the_committed_spec(tmp_path: Path) -> None:
    committed = "pipelines/spec/twt-distillation.yaml"
    assert (ROOT / committed).is_file(), f"{committed} is missing: make spec"
    assert f"--committed {committed}" in make("-n", "spec-check").stdout  # the default, as CI runs it

    spec = tmp_path / "spec.yaml"
    assert make("spec", f"SPEC={spec}").returncode == 0
    current = make("spec-check", f"SPEC={spec}")
    assert current.returncode == 0 and "is current" in current.stdout, current.stderr
    spec.write_text(spec.read_text().replace("Samples every teacher", "Samples each teacher", 1))
    stale = make("spec-check", f"SPEC={spec}")
    assert stale.returncode != 0 and f"{spec} is stale" in stale.stderr
    spec.unlink()
    gone = make("spec-check", f"SPEC={spec}")
    assert gone.returncode != 0 and f"{spec}: no committed spec there" in gone.stderr


# --- the tools CI needs -------------------------------------------------------------------------------------


@pytest.fixture
def bare_path(tmp_path: Path) -> Path:
    """A PATH directory with the few commands `make tools` uses, and neither kubectl nor apt-get."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "sh", "sed", "id", "tr", "head", "cat"):
        (bin_dir / name).symlink_to(shutil.which(name))
    return bin_dir


def fake_kubectl(bin_dir: Path, kustomize: str) -> None:
    (bin_dir / "kubectl").write_text(
        "#!/bin/sh\n"
        f"""case "$*" in *-o\\ json*) echo '{{"kustomizeVersion": "{kustomize}"}}' ;; """
        f"""*) echo 'Client Version: v1.32.0'; echo 'Kustomize Version: {kustomize}' ;; esac\n"""
    )
    (bin_dir / "kubectl").chmod(0o755)


def make_tools(bin_dir: Path, ci: str) -> subprocess.CompletedProcess:
    return run(f"{shutil.which('make')} -s tools", ROOT, PATH=str(bin_dir), CI=ci)


def test_make_tools_fails_in_ci_when_kubectl_cannot_be_installed(bare_path: Path) -> None:
    missing = make_tools(bare_path, "true")
    assert missing.returncode != 0 and "CI=true needs kubectl" in missing.stderr, missing.stderr
    local = make_tools(bare_path, "")
    assert local.returncode == 0 and "will skip" in local.stderr, local.stderr
    fake_kubectl(bare_path, "v3.8.7")  # too old a kustomize, and no apt-get to install another
    assert make_tools(bare_path, "true").returncode != 0
    fake_kubectl(bare_path, "v5.5.0")
    assert make_tools(bare_path, "true").returncode == 0


def test_ci_makes_the_tests_that_need_kubectl_fail_not_skip(bare_path: Path) -> None:
    test = "tests/test_manifests.py::test_minio_refuses_placeholder_credentials"
    argv = f"{sys.executable} -m pytest -q -p no:cacheprovider -rs {test}"
    failed = run(argv, ROOT, PATH=str(bare_path), CI="true")
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout
    assert "kubectl not installed (run .ci/install-tools.sh), and CI needs it" in failed.stdout
    skipped = run(argv, ROOT, PATH=str(bare_path), CI="")
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert "CI=true" in (ROOT / ".ci" / "run").read_text()  # CI here sets it, as GitHub Actions does
