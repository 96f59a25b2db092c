"""Evaluation: the student and its baselines answer the same held-out questions, greedily, within a budget.

    targets = [EvalTarget("stage3", "runs/demo/stage3"), EvalTarget("student-base", base, "direct")]
    metrics = evaluate_models(targets, questions, "runs/demo/eval", EvaluationConfig(max_new_tokens=96))

For each model: accuracy (through ``evaluate`` with the local metric module
``twt/method/metrics/answer_accuracy``), answers missing an ``Answer:`` line, generations cut by the budget,
mean / p50 / p95 output tokens, tokens per correct answer (all output tokens ÷ correct answers: what one
right answer costs) and latency (wall seconds for the whole set and per question, batched). Output tokens are
what the backends report: every generated token, the EOS token included when the model stopped on one.

Writes into ``out_dir``: ``metrics.json`` (every model), ``answers/<name>.jsonl`` (one line per question),
``accuracy_vs_tokens.png`` and ``report.md`` (a table and the picture). ``models/<name>.json`` keeps each
finished model's numbers under the key of what was evaluated (``evaluation_key``: the model's content, the
prompt, the backend, the budget, the questions); a model whose key is unchanged is not evaluated again, so an
interrupted evaluation resumes, and a stage retrained into the same directory is evaluated afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from twt.core.prompts import PromptTemplates
from twt.core.records import Question, read_json, write_json, write_rows, write_text
from twt.core.schema import EvaluationConfig, TeacherConfig
from twt.method.metrics_markdown import render_report
from twt.method.sampling import Answer, answer_questions
from twt.method.teachers import TeacherBackend, load_teacher

METRIC_DIR = Path(__file__).parent / "metrics" / "answer_accuracy"
PLOT_NAME, REPORT_NAME, METRICS_NAME = "accuracy_vs_tokens.png", "report.md", "metrics.json"


@dataclass
class EvalTarget:
    """One model to evaluate.

    Attributes:
        name: how tables and the gate call it ("stage3", "student-base", a teacher's name).
        model: local model directory (or what ``backend`` accepts).
        instruction: "solve" (the distillation prompt; students and teachers) or "direct" (answer only).
        templates: prompt templates (default ``PromptTemplates()``).
        role: "student", "baseline" or "teacher" (for the report).
        backend: "transformers" (default), "vllm" or "openai"; extra settings in ``options``.
    """

    name: str
    model: str
    instruction: str = "solve"
    templates: PromptTemplates = field(default_factory=PromptTemplates)
    role: str = "baseline"
    backend: str = "transformers"
    options: dict = field(default_factory=dict)


def answer_accuracy(predictions: Sequence[str | None], references: Sequence[str]) -> dict:
    """Accuracy through the local ``evaluate`` metric module (no hub access)."""
    import evaluate

    metric = evaluate.load(str(METRIC_DIR))
    return metric.compute(predictions=[p or "" for p in predictions], references=list(references))


@dataclass
class GreedyScore:
    """One model's greedy answers to questions with gold answers, and how many are right."""

    answers: list[Answer]
    correct: int
    accuracy: float
    seconds: float  # wall time of answering

    @property
    def mean_output_tokens(self) -> float:
        return sum(a.tokens for a in self.answers) / len(self.answers) if self.answers else 0.0


def greedy_score(
    backend: TeacherBackend,
    questions: Sequence[Question],
    instruction: str,
    *,
    templates: PromptTemplates | None = None,
    max_new_tokens: int | None = None,
    chunk_size: int = 256,
) -> GreedyScore:
    """Greedy accuracy, the one way twt measures it: ``backend`` answers ``questions`` (which have gold
    answers) with ``instruction`` ("solve" or "direct"), compared to gold by ``answer_accuracy``."""
    started = time.perf_counter()
    answers = answer_questions(
        backend,
        questions,
        instruction=instruction,
        templates=templates,
        max_new_tokens=max_new_tokens,
        chunk_size=chunk_size,
    )
    seconds = time.perf_counter() - started
    scored = answer_accuracy([a.answer for a in answers], [q.answer for q in questions])
    return GreedyScore(answers, scored["correct"], scored["accuracy"], seconds)


def percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else 0.0


def evaluate_model(
    target: EvalTarget,
    questions: Sequence[Question],
    evaluation: EvaluationConfig | None = None,
    *,
    backend=None,
    answers_path: str | os.PathLike | None = None,
) -> dict:
    """Greedy answers of one model on ``questions`` (which need gold answers) and their metrics, within
    ``evaluation``'s budget and batch size (default: the section's defaults)."""
    evaluation = evaluation or EvaluationConfig()
    max_new_tokens, batch_size = evaluation.max_new_tokens, evaluation.batch_size
    missing = [q.id for q in questions if q.answer is None]
    if missing:
        raise ValueError(
            f"evaluation questions need gold answers; {len(missing)} lack one (first: {missing[0]})"
        )
    if backend is None:
        batched = target.backend in TeacherConfig.applies["batch_size"][1]  # openai has no batch size
        teacher = TeacherConfig(  # the target's name is a label ("stage 1 (seed 0)"); a teacher's is a slug
            name=re.sub(r"[^A-Za-z0-9._-]+", "-", target.name).strip("-._")[:63] or "model",
            model=target.model,
            backend=target.backend,
            max_new_tokens=max_new_tokens,
            **({"batch_size": batch_size} if batched else {}),
            **target.options,
        )
        backend = load_teacher(teacher)
    score = greedy_score(
        backend,
        questions,
        target.instruction,
        templates=target.templates,
        max_new_tokens=max_new_tokens,
        chunk_size=max(batch_size, 256),
    )
    answers, correct, seconds = score.answers, score.correct, score.seconds
    tokens = [a.tokens for a in answers]
    if answers_path is not None:
        from twt.core.prompts import normalize_answer

        rows = [
            {
                "id": q.id,
                "answer": a.answer,
                "gold": q.answer,
                "correct": a.answer is not None and a.answer == normalize_answer(q.answer),
                "tokens": a.tokens,
                "finish_reason": a.finish_reason,
                "text": a.text,
            }
            for q, a in zip(questions, answers, strict=True)
        ]
        write_rows(answers_path, rows)  # atomic: a crash leaves the previous answers file whole
    return {
        "name": target.name,
        "model": target.model,
        "role": target.role,
        "instruction": target.instruction,
        "questions": len(questions),
        "accuracy": score.accuracy,
        "correct": correct,
        "no_answer": sum(a.answer is None for a in answers),
        "cut_by_budget": sum(a.finish_reason == "length" for a in answers),
        "mean_output_tokens": score.mean_output_tokens,
        "p50_output_tokens": percentile(tokens, 50),
        "p95_output_tokens": percentile(tokens, 95),
        "tokens_per_correct": sum(tokens) / correct if correct else None,
        "seconds": round(seconds, 3),
        "seconds_per_question": round(seconds / len(questions), 5) if questions else None,
    }


def model_digest(model: str) -> str:
    """The sha256 of a local model's files (each relative path and its content): weights, config and
    tokenizer all decide the answers. A model that is not a local path (a hub id, a served model) has no
    content to read here: its name stands for it."""
    from twt.core.store import sha256_file

    root = Path(model)
    if root.is_file():
        return sha256_file(root)
    if not root.is_dir():
        return f"name:{model}"
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def evaluation_key(
    target: EvalTarget, questions: Sequence[Question], *, max_new_tokens: int, batch_size: int
) -> str:
    """A digest of what an evaluation's numbers depend on: the model's content (not its name or path), how
    it is asked (instruction, templates, backend and its options), the budget and the questions."""
    what = {
        "model": model_digest(target.model),
        "instruction": target.instruction,
        "templates": asdict(target.templates),
        "backend": target.backend,
        "options": target.options,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "questions": [[q.id, q.question, q.answer] for q in questions],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _reusable(done: Path, key: str) -> dict | None:
    """The numbers saved in ``done`` when they were measured for ``key``, else None."""
    if not done.is_file():
        return None
    saved = read_json(done)
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("result"), dict):
        return None
    return saved["result"]


def evaluate_models(
    targets: Sequence[EvalTarget],
    questions: Sequence[Question],
    out_dir: str | os.PathLike,
    evaluation: EvaluationConfig | None = None,
    *,
    progress: bool = True,
) -> dict:
    """Evaluate every target (resumable per model) within ``evaluation``'s budget and batch size (default:
    the section's defaults) and write metrics.json, the answers, plot and report."""
    evaluation = evaluation or EvaluationConfig()
    max_new_tokens, batch_size = evaluation.max_new_tokens, evaluation.batch_size
    from tqdm.auto import tqdm

    out = Path(out_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluation targets need distinct names, got {names}")
    results = {}
    for target in tqdm(targets, desc="evaluate", disable=not progress):
        done = out / "models" / f"{target.name}.json"
        key = evaluation_key(target, questions, max_new_tokens=max_new_tokens, batch_size=batch_size)
        result = _reusable(done, key)
        if result is not None:  # the same content asked the same way: the path may have moved
            results[target.name] = {**result, "model": target.model, "role": target.role}
            continue
        result = evaluate_model(
            target,
            questions,
            evaluation,
            answers_path=out / "answers" / f"{target.name}.jsonl",
        )
        write_json(done, {"key": key, "result": result})
        results[target.name] = result
    metrics = {"questions": len(questions), "max_new_tokens": max_new_tokens, "models": results}
    write_json(out / METRICS_NAME, metrics)
    plot_accuracy_vs_tokens(results, out / PLOT_NAME)
    write_text(out / REPORT_NAME, render_report(metrics, plot=PLOT_NAME))
    return metrics


# --- the report --------------------------------------------------------------------------------------------

ROLE_STYLE = {"student": ("tab:red", "o"), "baseline": ("tab:blue", "s"), "teacher": ("tab:gray", "^")}


def plot_accuracy_vs_tokens(results: Mapping[str, Mapping], path: str | os.PathLike) -> Path:
    """Accuracy against mean output tokens, one labelled point per model (up and left is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    x_max = max([r["mean_output_tokens"] for r in results.values()] + [1.0])
    placed: list[tuple[float, float]] = []
    for name, r in sorted(results.items(), key=lambda item: (item[1]["mean_output_tokens"], item[0])):
        color, marker = ROLE_STYLE.get(r.get("role", "baseline"), ("tab:blue", "s"))
        x, y = r["mean_output_tokens"], 100 * r["accuracy"]
        ax.scatter([x], [y], color=color, marker=marker, s=60, zorder=3)
        # labels of nearby points are stacked downwards instead of printed over each other
        near = sum(abs(x - px) < 0.06 * x_max and abs(y - py) < 6 for px, py in placed)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4 - 11 * near), fontsize=9)
        placed.append((x, y))
    for role, (color, marker) in ROLE_STYLE.items():
        if any(r.get("role") == role for r in results.values()):
            ax.scatter([], [], color=color, marker=marker, label=role)
    ax.set_xlabel("mean output tokens per answer (fewer is better)")
    ax.set_ylabel("accuracy, % (higher is better)")
    ax.set_ylim(-2, 108)
    ax.set_xlim(0, 1.25 * x_max)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Accuracy against output tokens on the held-out questions")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
