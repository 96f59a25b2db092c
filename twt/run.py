"""One run of the whole method, step by step, in a local work directory: what ``twt run`` and the demo call.

    config = load_config("configs/demo.yaml")
    run = RunDir(config, "runs/demo")
    sample_step(run); dcrs_step(run); stage_step(run, 1); compress_step(run); stage_step(run, 2); ...

Each step reads what earlier steps wrote under the work directory and writes its own outputs there; a step
whose outputs exist is skipped (sampling and evaluation also resume inside a step), so a crashed run goes on
where it stopped. The Kubeflow components call the same library functions on their artifacts.

    questions/train.jsonl, eval.jsonl     the task (embedded: drawn here; files: copied)
    candidates/<teacher>/                  sampling shards, DONE.json, candidates.jsonl
    dcrs/distill.jsonl, report.json        DCRS
    stage1/, stage2/, stage3/              the students (HF directories with twt.json lineage)
    compress/rows.jsonl, report.json       stage-2 data (+ attempts.jsonl for teacher-guided compression)
    eval/metrics.json, report.md, *.png    evaluation of the students and baselines
    gate.json                              the verdict
    promoted.json                          registry version and the verified pull
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from twt.config import RunConfig
from twt.records import DistillRow, Question, read_rows, write_rows
from twt.task import make_questions
from twt.teachers import TeacherSpec


@dataclass
class RunDir:
    """A run configuration and the local directory its artifacts go to."""

    config: RunConfig
    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if str(self.root).startswith("s3://"):
            raise ValueError("the local runner needs a local workdir; on a cluster the pipeline uses s3://")
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def train_questions(self) -> Path:
        return self.path("questions", "train.jsonl")

    @property
    def eval_questions(self) -> Path:
        return self.path("questions", "eval.jsonl")

    def stage_dir(self, stage: int) -> Path:
        return self.path(f"stage{stage}")

    def teacher_specs(self) -> list[TeacherSpec]:
        return [TeacherSpec.from_mapping(t) for t in self.config.teachers]


def _done(model_dir: Path) -> bool:
    return (model_dir / "twt.json").is_file() and (model_dir / "model.safetensors").is_file()


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- steps -------------------------------------------------------------------------------------------------


def questions_step(run: RunDir, eval_questions: int | None = None) -> tuple[Path, Path]:
    """The training questions (what the teachers solve) and the held-out evaluation questions."""
    task = run.config.task
    run.path("questions").mkdir(parents=True, exist_ok=True)
    if task.kind == "files":
        for src, dst in ((task.questions, run.train_questions), (task.eval, run.eval_questions)):
            rows = list(read_rows(src, Question))  # validates, names file and line on a bad row
            write_rows(dst, rows[:eval_questions] if dst == run.eval_questions and eval_questions else rows)
        return run.train_questions, run.eval_questions
    evalq = make_questions(eval_questions or task.eval_questions, task.seed, "eval", task.spec())
    train = make_questions(
        task.train_questions, task.seed, "train", task.spec(), exclude={q.question for q in evalq}
    )
    for path, rows in ((run.train_questions, train), (run.eval_questions, evalq)):
        if not path.exists() or [r.id for r in read_rows(path, Question)] != [r.id for r in rows]:
            write_rows(path, rows)
    return run.train_questions, run.eval_questions


def sample_step(run: RunDir, progress: bool = True) -> list[Path]:
    """k candidates per question from every teacher (resumable shards); the merged candidate files."""
    from twt.sampling import merge_candidates, sample_teacher

    files = []
    for spec in run.teacher_specs():
        sample_teacher(spec, run.train_questions, run.path("candidates"), progress=progress)
        files.append(merge_candidates(run.path("candidates"), spec.name))
    return files


def dcrs_step(run: RunDir) -> dict:
    """DCRS over every teacher's candidates: ``dcrs/distill.jsonl`` and ``dcrs/report.json``."""
    from twt.dcrs import DCRSConfig, run_dcrs

    report_path = run.path("dcrs", "report.json")
    if report_path.is_file() and run.path("dcrs", "distill.jsonl").is_file():
        return json.loads(report_path.read_text())
    files = [run.path("candidates", t.name, "candidates.jsonl") for t in run.config.teachers]
    config = DCRSConfig(**run.config.dcrs.model_dump(), cache_dir=str(run.path("dcrs", "embeddings")))
    return run_dcrs(run.train_questions, files, run.path("dcrs", "distill.jsonl"), report_path, config)


def stage_step(run: RunDir, stage: int, progress: bool = True) -> dict:
    """Train stage ``stage`` from the base student (stage 1) or the previous stage's model."""
    from twt.stages import run_stage
    from twt.train import SFTConfig

    out = run.stage_dir(stage)
    if _done(out):
        return json.loads((out / "twt.json").read_text())
    settings = run.config.stage(stage)
    base = run.config.student.model if stage == 1 else run.stage_dir(stage - 1)
    rows = run.path("dcrs", "distill.jsonl") if stage == 1 else run.path("compress", "rows.jsonl")
    lineage = {
        "run": run.config.name,
        "teachers": [{"name": t.name, "model": t.model, "backend": t.backend} for t in run.config.teachers],
        "base_model": run.config.student.model,
    }
    if stage > 1 and run.path("compress", "report.json").is_file():
        report = json.loads(run.path("compress", "report.json").read_text())
        lineage["compression"] = {k: report.get(k) for k in ("method", "target_ratio", "achieved_ratio")}
    return run_stage(
        stage,
        rows,
        base,
        out,
        SFTConfig.from_stage(settings),
        mix_previous=settings.mix_previous,
        extra_lineage=lineage,
        progress=progress,
    )


def student_attempts(model_dir: Path, rows: list[DistillRow], max_new_tokens: int) -> dict[str, str]:
    """The stage-1 student's own greedy solution of each question (what teacher-guided compression sees)."""
    from twt.sampling import answer_questions
    from twt.teachers import load_teacher

    questions = list({r.id: Question(id=r.id, question=r.question) for r in rows}.values())
    spec = TeacherSpec(
        name="stage1-student", model=str(model_dir), max_new_tokens=max_new_tokens, batch_size=64
    )
    answers = answer_questions(load_teacher(spec), questions, instruction="solve")
    return {a.id: a.text for a in answers}


def compress_step(run: RunDir, progress: bool = True) -> dict:
    """Stage-2 data: every kept reasoning compressed by the configured method."""
    from twt.compress import run_compress

    report_path, out = run.path("compress", "report.json"), run.path("compress", "rows.jsonl")
    if report_path.is_file() and out.is_file():
        return json.loads(report_path.read_text())
    settings = run.config.compression
    distill = run.path("dcrs", "distill.jsonl")
    kwargs: dict = {"method": settings.method, "progress": progress}
    if settings.method == "teacher":
        teacher = TeacherSpec.from_mapping(run.config.compression_teacher())
        rows = list(read_rows(distill, DistillRow))
        attempts_path = run.path("compress", "attempts.json")
        if not attempts_path.is_file():
            attempts = student_attempts(run.stage_dir(1), rows, teacher.max_new_tokens)
            _write_json(attempts_path, attempts)
        kwargs |= {"teacher": teacher, "attempts": json.loads(attempts_path.read_text())}
    else:
        reference = settings.reference_model or str(run.stage_dir(1))
        kwargs |= {
            "reference_model": reference,
            "ratio": settings.ratio,
            "condition": settings.condition,
            "window": settings.window,
        }
    return run_compress(distill, out, report_path, **kwargs)


def eval_targets(run: RunDir) -> list:
    """The students of every stage and the configured baselines, as evaluation targets."""
    from twt.evaluate import EvalTarget

    baselines = run.config.evaluation.baselines
    targets = [EvalTarget(f"stage{s}", str(run.stage_dir(s)), "solve", role="student") for s in (3, 2, 1)]
    if "student-base" in baselines:
        # the base student was only ever asked for direct answers: that is its fair baseline
        targets.append(EvalTarget("student-base", run.config.student.model, "direct", role="baseline"))
    for teacher in run.config.teachers:
        if "teachers" in baselines or teacher.name in baselines:
            options = {}
            if teacher.backend == "openai":
                options = {"base_url": teacher.base_url, "api_key_env": teacher.api_key_env}
            targets.append(
                EvalTarget(
                    teacher.name,
                    teacher.model,
                    "solve",
                    teacher.templates(),
                    role="teacher",
                    backend=teacher.backend,
                    options=options,
                )
            )
    return targets


def evaluate_step(run: RunDir, progress: bool = True) -> dict:
    """Every stage's student and the baselines on the held-out questions: ``eval/``."""
    from twt.evaluate import evaluate_models

    settings = run.config.evaluation
    questions = list(read_rows(run.eval_questions, Question))
    return evaluate_models(
        eval_targets(run),
        questions,
        run.path("eval"),
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        progress=progress,
    )


def gate_step(run: RunDir) -> dict:
    """The gate's verdict on the evaluated students (``gate.json``); the report gains the verdict."""
    from twt.evaluate import PLOT_NAME, REPORT_NAME, render_report
    from twt.gate import GatePolicy, decide

    metrics = json.loads(run.path("eval", "metrics.json").read_text())
    verdict = decide(metrics["models"], GatePolicy(**run.config.gate.model_dump())).to_dict()
    _write_json(run.path("gate.json"), verdict)
    run.path("eval", REPORT_NAME).write_text(render_report(metrics, PLOT_NAME, verdict), encoding="utf-8")
    return verdict


def promote_step(run: RunDir) -> dict:
    """Publish the gate's student to the registry, then pull it back verified (``promoted.json``)."""
    from twt import registry

    verdict = json.loads(run.path("gate.json").read_text())
    if not verdict["passed"]:
        raise ValueError(f"the gate did not pass; nothing to promote ({'; '.join(verdict['reasons'])})")
    if run.path("promoted.json").is_file():
        return json.loads(run.path("promoted.json").read_text())
    settings = run.config.registry
    root = settings.uri or str(run.path("registry"))
    metrics = json.loads(run.path("eval", "metrics.json").read_text())["models"]
    model_dir = run.path(verdict["student"])
    dcrs = json.loads(run.path("dcrs", "report.json").read_text())
    lineage = json.loads((model_dir / "twt.json").read_text())
    lineage["dcrs"] = {"candidates": dcrs["candidates"], "thresholds": dcrs.get("thresholds")}
    version = registry.publish(
        model_dir, root, settings.model_name, settings.version, metrics=metrics, gate=verdict, lineage=lineage
    )
    if settings.kubeflow_registry_address:
        registry.register_in_kubeflow(version, settings.kubeflow_registry_address, author="twt")
    pulled = run.path("pulled", f"{version.model}-{version.version}")
    shutil.rmtree(pulled, ignore_errors=True)
    registry.pull(f"{version.model}@{version.version}", root, pulled)
    result = {
        "model": version.model,
        "version": version.version,
        "uri": version.uri,
        "student": verdict["student"],
        "pulled_to": str(pulled),
        "verified": True,
    }
    _write_json(run.path("promoted.json"), result)
    return result


def run_all(run: RunDir, eval_questions: int | None = None, progress: bool = True) -> dict:
    """Every step in order; returns the timings and the main results."""
    timings, started = {}, time.perf_counter()

    def timed(name, fn, *args, **kwargs):
        tick = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - tick, 1)
        return out

    timed("questions", questions_step, run, eval_questions)
    timed("sample", sample_step, run, progress)
    dcrs = timed("dcrs", dcrs_step, run)
    timed("stage1", stage_step, run, 1, progress)
    compression = timed("compress", compress_step, run, progress)
    timed("stage2", stage_step, run, 2, progress)
    timed("stage3", stage_step, run, 3, progress)
    metrics = timed("evaluate", evaluate_step, run, progress)
    verdict = timed("gate", gate_step, run)
    promoted = timed("promote", promote_step, run) if verdict["passed"] else None
    timings["total"] = round(time.perf_counter() - started, 1)
    return {
        "dcrs": dcrs,
        "compression": compression,
        "metrics": metrics,
        "gate": verdict,
        "promoted": promoted,
        "timings": timings,
    }
