"""The embedded default, end to end, on a 2-core CPU with no download: ``twt demo`` (or ``make demo``).

    twt demo                            # configs/demo.yaml through kfp.local, artifacts under runs/demo
    twt demo --runner direct            # the same steps in this process, resumable
    twt demo --workdir /tmp/d --eval-questions 200

Steps:
  1. the tiny models: the committed package data, or trained now by ``twt.embedded.tiny`` when missing;
  2. the questions: ``questions/train.jsonl`` (what the teachers solve) and ``questions/eval.jsonl``
     (held out from every model's training data);
  3. how much the teachers need their reasoning: greedy accuracy on the held-out questions with
     reasoning ("solve") and without ("direct"), and their mean output tokens;
  4. the rest of the method: multi-teacher sampling, DCRS, stage 1, compression, stages 2 and 3, evaluation
     of every stage against the baselines, the gate, and — when it passes — promotion into a local registry
     (``<workdir>/registry``) and a verified pull; otherwise the report of why not.

Step 4 runs, by default (``runner="kfp"``), as the ``twt-distillation`` Kubeflow pipeline itself through
``kfp.local`` (``pipelines.local.run_demo_pipeline``, handed in by the CLI): the DAG a cluster runs, its
artifacts under ``<workdir>/kfp``, each task's own output and kfp's log lines in ``<workdir>/kfp/tasks.log``.
kfp.local caches tasks by their inputs, so a rerun reuses every step whose settings did not change.
``runner="direct"`` calls the same ``twt.steps.steps`` functions through ``twt.steps.workdir`` in this
process; each step writes its files under the work directory and a rerun reuses what a finished step left, so
an interrupted run resumes (steps 1–3 resume with either runner).

Everything the demo measured goes to ``demo.json`` in the work directory and is printed as tables; the
evaluation report holds the table, the accuracy-versus-tokens picture and the gate's verdict.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from twt.core.load import data_dir, default_config_path, load_config
from twt.core.records import Question, read_json, read_rows
from twt.core.schema import STAGES, RunConfig, TeacherConfig

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
THREADS_ENV = "TWT_THREADS"
HUB_BARS_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"  # huggingface_hub's switch, read by transformers on import


def demo_threads() -> int:
    """Torch threads of the demo's work: ``$TWT_THREADS``, else half the cores (at least 1) — the same on
    every machine of a kind, so runs repeat; kfp.local's tasks inherit it through ``OMP_NUM_THREADS``."""
    value = os.environ.get(THREADS_ENV)
    if value is not None:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return int(value)
    return max(1, (os.cpu_count() or 2) // 2)


def run_seeds(config: RunConfig) -> dict:
    """Every seed the run uses, as configured (the demo prints and records them)."""
    return {
        "task": config.task.seed,
        "teachers": {t.name: t.seed for t in config.teachers},
        "stages": {f"stage{n}": config.stage(n).seed for n in STAGES},
    }


@contextlib.contextmanager
def quiet_model_loading() -> Iterator[None]:
    """No "Loading weights" progress bars while the demo runs: transformers 5 draws one (its own tqdm,
    ``transformers.utils.logging``) for every model it loads, between the demo's lines. Off in this process,
    and through ``HF_HUB_DISABLE_PROGRESS_BARS`` in the kfp.local tasks it starts; only the bars go (log
    records and warnings still show, and so do the demo's own progress bars)."""
    from transformers.utils import logging as hf_logging

    was_on, before = hf_logging.is_progress_bar_enabled(), os.environ.get(HUB_BARS_ENV)
    os.environ[HUB_BARS_ENV] = "1"
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HUB_BARS_ENV, None)
        else:
            os.environ[HUB_BARS_ENV] = before
        if was_on:
            hf_logging.enable_progress_bar()


# (config path, work directory) -> run_dir, seconds, log, the paths of dcrs_report, compression_report,
# metrics, verdict and stage_models {1: dir, 2: dir, 3: dir}, plus promoted (the record) or rejected (a path)
PipelineRunner = Callable[[Path, Path], dict]


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
    from twt.embedded.tiny import build_all

    missing = missing_tiny_models(config)
    if missing:
        print(f"training the tiny models {missing} into {data_dir() / 'tiny'} (minutes on a CPU)")
        build_all(data_dir() / "tiny", only=missing, progress=progress)
    return missing


def score_teacher(teacher: TeacherConfig, questions: list[Question], backend=None) -> dict:
    """Greedy accuracy and mean output tokens of one teacher, with reasoning and answering directly."""
    from twt.method.evaluate import greedy_score
    from twt.method.teachers import load_teacher

    backend = backend or load_teacher(teacher)
    scores = {}
    for instruction in ("solve", "direct"):
        score = greedy_score(backend, questions, instruction, templates=teacher.templates())
        scores[instruction] = {
            "accuracy": score.accuracy,
            "mean_output_tokens": score.mean_output_tokens,
            "seconds": round(score.seconds, 2),
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
    runner: str = "kfp",
    pipeline_runner: PipelineRunner | None = None,
) -> dict:
    """Run the embedded default (see the module docstring); returns what ``demo.json`` holds.

    ``runner`` "direct" calls the steps of ``twt.steps.workdir`` in this process (resumable in ``workdir``);
    "kfp" runs the ``twt-distillation`` pipeline through ``pipeline_runner`` (the CLI passes
    ``pipelines.local.run_demo_pipeline``: kfp.local, artifacts under ``<workdir>/kfp``; the library does not
    import the pipeline layer). Both call the same ``twt.steps.steps`` functions.
    """
    from twt.steps import workdir as local

    if runner not in ("direct", "kfp"):
        raise ValueError(f"runner must be 'direct' or 'kfp', got {runner!r}")
    if runner == "kfp" and pipeline_runner is None:
        raise ValueError("runner 'kfp' needs the pipeline runner (pipelines.local.run_demo_pipeline)")
    config_path = Path(config_path or default_config_path())
    config = load_config(config_path)
    run = local.RunDir(config, Path(workdir or config.workdir))
    started = time.perf_counter()
    import torch

    threads = demo_threads()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    summary: dict = {"config": str(config_path), "workdir": str(run.root), "runner": runner}
    summary |= {"threads": threads, "seeds": run_seeds(config)}
    print(f"torch threads: {threads} (${THREADS_ENV} to change); seeds: {json.dumps(summary['seeds'])}")
    with quiet_model_loading():
        summary["trained_tiny_models"] = ensure_tiny_models(config, progress)
        train_path, eval_path = local.prepare_questions(run, eval_questions)
        evalq = list(read_rows(eval_path, Question))
        print(f"questions: {train_path} (train), {eval_path} ({len(evalq)} held out)")
        summary["teachers"] = teacher_scores(run, evalq)
        if runner == "kfp":
            summary |= _run_pipeline(pipeline_runner, config_path, run)
        else:
            summary |= _run_direct(run, progress)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (run.root / "demo.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\ndemo finished in {summary['seconds']} s; summary in {run.root / 'demo.json'}")
    return summary


def _run_direct(run, progress: bool) -> dict:
    """Sampling through promotion with ``twt.steps.workdir``'s steps, printing as it goes."""
    from twt.steps import workdir as local

    local.sample_teachers(run, progress)
    report = local.select_candidates(run)
    summary: dict = {"dcrs": _print_dcrs(report)}
    for stage in STAGES:
        if stage == 2:
            compression = local.compress_reasoning(run, progress)
            summary["compression"] = {k: v for k, v in compression.items() if k != "details"}
            print(f"\ncompression ({compression['method']}): {_compression_line(compression)}")
        _print_stage(stage, local.distill_stage(run, stage, progress))
    metrics = local.evaluate_students(run, progress)
    verdict = local.gate(run)
    summary |= {"evaluation": metrics["models"], "gate": verdict}
    _print_evaluation(metrics, verdict)
    if verdict["passed"]:
        summary["promoted"] = _print_promoted(local.promote_student(run))
    else:
        local.explain_rejection(run)
        print(f"why not promoted: {run.path('rejected.md')}")
    print(f"report: {run.path('eval', 'report.md')}")
    return summary


def _run_pipeline(pipeline_runner: PipelineRunner, config_path: Path, run) -> dict:
    """The pipeline through ``pipeline_runner``; the tables are read back from the files it names."""
    print("\nrunning the twt-distillation pipeline (each task's own log: see below)")
    result = pipeline_runner(config_path, run.root)
    report = read_json(result["dcrs_report"])
    metrics = read_json(result["metrics"])
    verdict = read_json(result["verdict"])
    summary = {"kfp_run": result["run_dir"], "dcrs": _print_dcrs(report)}
    compression = read_json(result["compression_report"])
    print(f"\ncompression ({compression['method']}): {_compression_line(compression)}")
    for stage, model_dir in sorted(result["stage_models"].items()):
        _print_stage(stage, read_json(Path(model_dir) / "twt.json"))
    _print_evaluation(metrics, verdict)
    summary |= {"evaluation": metrics["models"], "gate": verdict}
    if result.get("promoted"):
        summary["promoted"] = _print_promoted(result["promoted"])
    else:
        print(f"why not promoted: {result.get('rejected')}")
    print(f"pipeline run: {result['run_dir']} ({result['seconds']} s); task logs: {result.get('log')}")
    return summary


def _print_dcrs(report: dict) -> dict:
    """Print the DCRS counts; returns the part of the report that ``demo.json`` keeps."""
    print("\nDCRS (every candidate accounted for):")
    print(_dcrs_table(report))
    questions = report["questions"]
    print(
        f"kept {report['outputs']['rows']} rows; {questions['with_kept']}/{questions['total']} questions "
        f"keep at least one, {questions['left_with_nothing']} keep none; pseudo-label accuracy "
        f"{report['pseudo_label']['accuracy']}"
    )
    return {key: report[key] for key in ("candidates", "teachers", "questions", "pseudo_label")}


def _print_evaluation(metrics: dict, verdict: dict) -> None:
    from twt.method.gate import describe
    from twt.method.metrics_markdown import metrics_table

    print(f"\nheld-out evaluation ({metrics['questions']} questions, greedy):")
    print(metrics_table(metrics["models"]))
    print()
    print("\n".join(describe(verdict)))


def _print_stage(stage: int, record: dict) -> None:
    """One line per trained stage, from its lineage record (``twt.json``); a stage 2 trained as a stepwise
    schedule (``twt.training.internalize``) also gets one line per phase."""
    training = record.get("training", {})
    for phase in record.get("phases", []):
        print(
            f"stage 2 phase {phase['phase']}: {phase['kept_tokens_mean']:.1f} reasoning tokens kept, "
            f"{phase['training']['updates']} updates, loss -> {phase['training']['final_loss']}"
        )
    if record.get("phases"):
        training = {
            "examples": record["rows"],
            "updates": sum(p["training"]["updates"] for p in record["phases"]),
        }
    print(
        f"stage {stage}: {training.get('examples')} examples, {training.get('updates')} updates, "
        f"loss {training.get('first_loss')} -> {training.get('final_loss')}"
    )


def _print_promoted(promoted: dict) -> dict:
    print(f"\npromoted {promoted['model']}@{promoted['version']} to {promoted['uri']}")
    if promoted.get("verified"):
        where = f": {promoted['pulled_to']}" if promoted.get("pulled_to") else " (into a scratch directory)"
        print(f"pulled back and verified every checksum{where}")
    return promoted


def teacher_scores(run, evalq: list[Question]) -> dict:
    """Each teacher with and without reasoning on the held-out questions, printed as a table."""
    scores = {teacher.name: score_teacher(teacher, evalq) for teacher in run.config.teachers}
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


def _dcrs_table(report: dict) -> str:
    columns = ["in", "rejected_quality", "rejected_diversity", "kept"]
    rows = [[name, *(counts[c] for c in columns)] for name, counts in report["teachers"].items()]
    rows.append(["all", *(report["candidates"][c] for c in columns)])
    return _table(["teacher", *columns], rows)
