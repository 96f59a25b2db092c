"""The embedded default, end to end, on a 2-core CPU with no download: ``twt demo`` (or ``make demo``).

    twt demo                                   # configs/demo.yaml, artifacts under runs/demo
    twt demo --workdir /tmp/d --eval-questions 200

Steps (each writes files under the work directory; a rerun reuses what a finished step left, so an
interrupted demo resumes):
  1. the tiny models: the committed package data, or trained now by ``twt.tiny`` when missing;
  2. the questions: ``questions/train.jsonl`` (what the teachers solve) and ``questions/eval.jsonl``
     (held out from every model's training data);
  3. how much the teachers need their reasoning: greedy accuracy on the held-out questions with
     reasoning ("solve") and without ("direct"), and their mean output tokens;
  4. the rest of the method through ``twt.run``: multi-teacher sampling, DCRS, stage 1, compression,
     stages 2 and 3, evaluation of every stage against the baselines, the gate, and — when it passes —
     promotion into a local registry (``<workdir>/registry``) and a verified pull.

Everything the demo measured goes to ``demo.json`` in the work directory and is printed as tables;
``eval/report.md`` holds the evaluation table, the accuracy-versus-tokens picture and the gate's verdict.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from twt.config import RunConfig, data_dir, default_config_path, load_config
from twt.records import Question, read_rows
from twt.teachers import TeacherSpec

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def missing_tiny_models(config: RunConfig) -> list[str]:
    """Names of the tiny models the configuration uses that are not on disk yet."""
    tiny = (data_dir() / "tiny").resolve()
    wanted = [*(t.model for t in config.teachers if t.backend == "transformers"), config.student.model]
    missing = []
    for model in wanted:
        path = Path(model).resolve()
        if path.parent == tiny and not all((path / name).is_file() for name in MODEL_FILES):
            missing.append(path.name)
    return missing


def ensure_tiny_models(config: RunConfig, progress: bool = True) -> list[str]:
    """Train the tiny models the configuration needs and does not find (normally none: they ship)."""
    from twt.tiny import build_all

    missing = missing_tiny_models(config)
    if missing:
        print(f"training the tiny models {missing} into {data_dir() / 'tiny'} (minutes on a CPU)")
        build_all(data_dir() / "tiny", only=missing, progress=progress)
    return missing


def score_teacher(spec: TeacherSpec, questions: list[Question], backend=None) -> dict:
    """Greedy accuracy and mean output tokens of one teacher, with reasoning and answering directly."""
    from twt.sampling import answer_questions
    from twt.teachers import load_teacher

    backend = backend or load_teacher(spec)
    scores = {}
    for instruction in ("solve", "direct"):
        started = time.perf_counter()
        answers = answer_questions(
            backend, questions, instruction=instruction, templates=spec.templates, chunk_size=256
        )
        correct = sum(a.answer == q.answer for a, q in zip(answers, questions, strict=True))
        scores[instruction] = {
            "accuracy": correct / len(questions),
            "mean_output_tokens": sum(a.tokens for a in answers) / len(questions),
            "seconds": round(time.perf_counter() - started, 2),
        }
    return scores


def _table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def run_demo(
    config_path: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    eval_questions: int | None = None,
    progress: bool = True,
) -> dict:
    """Run the embedded default (see the module docstring); returns what ``demo.json`` holds."""
    from twt import run as steps

    config = load_config(config_path or default_config_path())
    run = steps.RunDir(config, Path(workdir or config.workdir))
    started = time.perf_counter()
    summary: dict = {"config": str(config_path or default_config_path()), "workdir": str(run.root)}
    summary["trained_tiny_models"] = ensure_tiny_models(config, progress)
    train_path, eval_path = steps.questions_step(run, eval_questions)
    evalq = list(read_rows(eval_path, Question))
    print(f"questions: {train_path} (train), {eval_path} ({len(evalq)} held out)")

    summary["teachers"] = teacher_scores(run, evalq)
    steps.sample_step(run, progress)
    report = steps.dcrs_step(run)
    summary["dcrs"] = {key: report[key] for key in ("candidates", "teachers", "questions", "pseudo_label")}
    print("\nDCRS (every candidate accounted for):")
    print(_dcrs_table(report))
    questions = report["questions"]
    print(
        f"kept {report['outputs']['rows']} rows; {questions['with_kept']}/{questions['total']} questions "
        f"keep at least one, {questions['left_with_nothing']} keep none; pseudo-label accuracy "
        f"{report['pseudo_label']['accuracy']}"
    )

    for stage in (1, 2, 3):
        if stage == 2:
            compression = steps.compress_step(run, progress)
            summary["compression"] = {k: v for k, v in compression.items() if k != "details"}
            print(f"\ncompression ({compression['method']}): {_compression_line(compression)}")
        result = steps.stage_step(run, stage, progress)
        training = result.get("training", {})
        print(
            f"stage {stage}: {training.get('examples')} examples, {training.get('updates')} updates, "
            f"loss {training.get('first_loss')} -> {training.get('final_loss')}"
        )
    metrics = steps.evaluate_step(run, progress)
    verdict = steps.gate_step(run)
    summary["evaluation"] = metrics["models"]
    summary["gate"] = verdict
    print(f"\nheld-out evaluation ({metrics['questions']} questions, greedy):")
    print(_eval_table(metrics["models"]))
    print(
        f"\ngate: {'PASSED' if verdict['passed'] else 'FAILED'}"
        + (f" (student {verdict['student']})" if verdict["student"] else "")
    )
    for reason in verdict["reasons"]:
        print(f"  - {reason}")
    if verdict["passed"]:
        promoted = steps.promote_step(run)
        summary["promoted"] = promoted
        print(f"\npromoted {promoted['model']}@{promoted['version']} to {promoted['uri']}")
        print(f"pulled back and verified every checksum: {promoted['pulled_to']}")
    print(f"report: {run.path('eval', 'report.md')}")

    summary["seconds"] = round(time.perf_counter() - started, 1)
    (run.root / "demo.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\ndemo finished in {summary['seconds']} s; summary in {run.root / 'demo.json'}")
    return summary


def teacher_scores(run, evalq: list[Question]) -> dict:
    """Each teacher with and without reasoning on the held-out questions, printed as a table."""
    scores = {spec.name: score_teacher(spec, evalq) for spec in run.teacher_specs()}
    rows = [
        [
            name,
            f"{s['solve']['accuracy']:.1%}",
            f"{s['direct']['accuracy']:.1%}",
            f"{100 * (s['solve']['accuracy'] - s['direct']['accuracy']):+.1f}",
            f"{s['solve']['mean_output_tokens']:.1f}",
            f"{s['direct']['mean_output_tokens']:.1f}",
        ]
        for name, s in scores.items()
    ]
    print(f"\nteachers on {len(evalq)} held-out questions (greedy):")
    headers = ["teacher", "acc. reasoning", "acc. direct", "points", "tokens reasoning", "tokens direct"]
    print(_table(headers, rows))
    return scores


def _compression_line(report: dict) -> str:
    rejected = ", ".join(f"{k} {v}" for k, v in report.get("rejected", {}).items() if v) or "none"
    return (
        f"{report['rows_in']} rows -> {report['rows_out']}, length {report['length_in']} -> "
        f"{report['length_out']} {report['unit']} (ratio {report['achieved_ratio']:.3f}); "
        f"rejected: {rejected}"
    )


def _eval_table(models: dict) -> str:
    rows = [
        [
            name,
            r["role"],
            f"{r['accuracy']:.1%}",
            f"{r['mean_output_tokens']:.1f}",
            f"{r['tokens_per_correct']:.1f}" if r["tokens_per_correct"] is not None else "-",
        ]
        for name, r in models.items()
    ]
    return _table(["model", "role", "accuracy", "mean tokens", "tokens per correct"], rows)


def _dcrs_table(report: dict) -> str:
    columns = ["in", "rejected_quality", "rejected_diversity", "kept"]
    rows = [[name, *(counts[c] for c in columns)] for name, counts in report["teachers"].items()]
    rows.append(["all", *(report["candidates"][c] for c in columns)])
    return _table(["teacher", *columns], rows)
