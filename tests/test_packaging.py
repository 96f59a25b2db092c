"""The built wheel carries every default the CLI needs: installed into a fresh virtual environment (not
editable, away from the source tree), ``twt`` samples with the packaged demo configuration and tiny models.

The fresh venv reuses this venv's already-installed dependencies through a ``.pth`` line (no download);
only the ``twt`` wheel itself is installed into it, with ``--no-deps``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str | os.PathLike, cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        out,
        ROOT,
        cwd=out,
    )
    (built,) = out.glob("twt-*.whl")
    return built


def test_wheel_carries_the_demo_config_and_tiny_models(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = zipfile.ZipFile(wheel).read("twt/data/configs/demo.yaml")
    assert packaged == (ROOT / "configs" / "demo.yaml").read_bytes()
    assert "twt/data/tiny/student-base/config.json" in names
    assert any(name.startswith("twt/method/metrics/") for name in names)
    assert {"components/images.py", "pipelines/distillation.py"} <= names
    assert not any(name.startswith(("tests/", "configs/")) for name in names)


def test_cli_from_the_installed_wheel_uses_packaged_defaults(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    bin_dir = venv / "bin"
    site = Path(
        run(
            bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
        ).strip()
    )
    # dependencies from this venv (a .pth line adds the directory; its own .pth files, such as the
    # editable install of twt, are not processed, so `import twt` finds only the wheel)
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        bin_dir / "python",
        "install",
        "-q",
        "--no-deps",
        wheel,
        cwd=tmp_path,
    )
    env = {key: value for key, value in os.environ.items() if key not in ("TWT_DATA", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"

    where = run(
        bin_dir / "python",
        "-c",
        "import twt, twt.core.load as c; print(c.default_config_path())",
        cwd=tmp_path,
        env=env,
    )
    assert Path(where.strip()).is_relative_to(site), where  # the packaged copy, not the source tree's

    run(
        bin_dir / "twt",
        "task",
        "questions",
        "--train",
        "3",
        "--eval",
        "4",  # the held-out draw fills each chain length's stratum (task.eval_questions)
        "--out",
        tmp_path / "q",
        cwd=tmp_path,
        env=env,
    )
    out = run(
        bin_dir / "twt",
        "sample",
        "--questions",
        tmp_path / "q" / "train.jsonl",
        "--out",
        tmp_path / "s",
        "--teacher",
        "teacher-large",
        "--quiet",
        cwd=tmp_path,
        env=env,
    )
    assert "teacher-large:" in out
    rows = (tmp_path / "s" / "teacher-large" / "candidates.jsonl").read_text().splitlines()
    assert len(rows) == 3 * 2  # 3 questions, k=2 in the demo configuration
    assert json.loads(rows[0])["teacher"] == "teacher-large"
