"""One run of the whole method, step by step, in a local work directory: what ``twt run`` and the demo call.

    config = load_config("configs/demo.yaml")
    run = RunDir(config, "runs/demo")
    prepare_questions(run); sample_teachers(run); select_candidates(run); distill_stage(run, 1); ...
    run_step(run, "compress_reasoning")       # a step by its name (``twt.steps.settings.LOCAL_STEPS``)

Each step reads what earlier steps wrote under the work directory and writes its own outputs there; a step
whose outputs exist is skipped (sampling and evaluation also resume inside a step), so a crashed run goes on
where it stopped. Every step calls the function of ``twt.steps.steps`` of its name with its slice
(``twt.steps.settings``), what the Kubeflow component of that name calls on its artifacts, so ``twt run`` and
a pipeline run write the same files.

    questions/train.jsonl, eval.jsonl     the task (embedded: drawn here; files: copied)
    candidates/<teacher>/                  sampling shards, DONE.json, candidates.jsonl
    dcrs/distill.jsonl, report.json        DCRS
    stage1/, stage2/, stage3/              the students (HF directories with twt.json lineage)
    checkpoints/<run>/local/stage<n>/      training checkpoints (unless training.checkpoints names a root)
    compress/rows.jsonl, report.json       stage-2 data (+ attempts.json for teacher-guided compression)
    eval/metrics.json, report.md, *.png    evaluation of the students and baselines
    gate.json                              the verdict
    promoted.json                          registry version and the verified pull (pulled/<model>-<version>/)
    rejected.md                            why the gate refused promotion (when it did)
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path

from twt.core.records import read_json
from twt.core.schema import STAGES, RunConfig
from twt.steps import settings as slices
from twt.steps import steps


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
        # this directory is the run's work directory: what defaults under the configuration's workdir
        # (the stages' checkpoints) goes here, so `twt run --workdir X` writes nothing outside X
        self.config = self.config.model_copy(update={"workdir": str(self.root)})

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # the layout (the module docstring): the one place that names the run's files
    train_questions = property(lambda self: self.path("questions", "train.jsonl"))
    eval_questions = property(lambda self: self.path("questions", "eval.jsonl"))
    candidates = property(lambda self: self.path("candidates"))
    distill_rows = property(lambda self: self.path("dcrs", "distill.jsonl"))
    dcrs_report = property(lambda self: self.path("dcrs", "report.json"))
    embeddings = property(lambda self: self.path("dcrs", "embeddings"))
    compressed_rows = property(lambda self: self.path("compress", "rows.jsonl"))
    compress_report = property(lambda self: self.path("compress", "report.json"))
    attempts = property(lambda self: self.path("compress", "attempts.json"))
    eval_dir = property(lambda self: self.path("eval"))
    metrics = property(lambda self: self.path("eval", "metrics.json"))
    eval_report = property(lambda self: self.path("eval", "report.md"))
    verdict = property(lambda self: self.path("gate.json"))
    promoted = property(lambda self: self.path("promoted.json"))
    pulled = property(lambda self: self.path("pulled"))
    rejected = property(lambda self: self.path("rejected.md"))
    registry = property(lambda self: self.path("registry"))

    def stage_dir(self, stage: int) -> Path:
        return self.path(f"stage{stage}")


def _done(model_dir: Path) -> bool:
    return (model_dir / "twt.json").is_file() and (model_dir / "model.safetensors").is_file()


# --- steps -------------------------------------------------------------------------------------------------
# Each maps the work directory's paths onto the function of twt.steps.steps of the same name (what the KFP
# component of that name calls), with the slice cut from the run's configuration, and skips itself when its
# outputs are already there.


def prepare_questions(run: RunDir, eval_questions: int | None = None) -> tuple[Path, Path]:
    """The training questions (what the teachers solve) and the held-out evaluation questions."""
    settings = slices.questions_settings(run.config)
    steps.prepare_questions(settings, run.train_questions, run.eval_questions, eval_questions)
    return run.train_questions, run.eval_questions


def sample_teachers(run: RunDir, progress: bool = True) -> list[Path]:
    """k candidates per question from every teacher (resumable shards); the merged candidate files."""
    return [
        steps.sample_teacher(settings, run.train_questions, run.candidates, progress)
        for settings in slices.teachers_settings(run.config)
    ]


def select_candidates(run: RunDir) -> dict:
    """DCRS over every teacher's candidates: ``dcrs/distill.jsonl`` and ``dcrs/report.json``."""
    report_path = run.dcrs_report
    if report_path.is_file() and run.distill_rows.is_file():
        return read_json(report_path)
    return steps.select_candidates(
        slices.select_settings(run.config),
        run.train_questions,
        [run.candidates],
        run.distill_rows,
        report_path,
        cache_dir=run.embeddings,
    )


def distill_stage(run: RunDir, stage: int, progress: bool = True) -> dict:
    """Train stage ``stage`` from the base student (stage 1) or the previous stage's model."""
    out = run.stage_dir(stage)
    if _done(out):
        return read_json(out / "twt.json")
    settings = slices.stage_settings(run.config, stage)
    if stage == 1:
        return steps.distill_stage(settings, 1, run.distill_rows, None, out, None, progress)
    return steps.distill_stage(
        settings,
        stage,
        run.compressed_rows,
        run.stage_dir(stage - 1),
        out,
        run.compress_report,
        progress,
    )


def compress_reasoning(run: RunDir, progress: bool = True) -> dict:
    """Stage-2 data: every kept reasoning compressed by the configured method."""
    report_path, out = run.compress_report, run.compressed_rows
    if report_path.is_file() and out.is_file():
        return read_json(report_path)
    return steps.compress_reasoning(
        slices.compress_settings(run.config),
        run.distill_rows,
        run.stage_dir(1),
        out,
        report_path,
        attempts_path=run.attempts,
        progress=progress,
    )


def stage_models(run: RunDir) -> dict[str, Path]:
    """The students of the three stages: name → model directory."""
    return {f"stage{s}": run.stage_dir(s) for s in STAGES}


def evaluate_students(run: RunDir, progress: bool = True) -> dict:
    """Every stage's student and the baselines on the held-out questions: ``eval/``."""
    settings = slices.evaluate_settings(run.config)
    return steps.evaluate_students(
        settings, run.eval_questions, stage_models(run), run.eval_dir, progress=progress
    )


def gate(run: RunDir) -> dict:
    """The gate's verdict on the evaluated students (``gate.json``); the report gains the verdict."""
    steps.gate(slices.gate_settings(run.config), run.metrics, run.verdict, run.eval_report)
    return read_json(run.verdict)


def promote_student(run: RunDir) -> dict:
    """Publish the gate's student to the registry, then pull it back verified (``promoted.json``)."""
    verdict = read_json(run.verdict)
    if not verdict["passed"]:
        raise ValueError(f"the gate did not pass; nothing to promote ({'; '.join(verdict['reasons'])})")
    if run.promoted.is_file():
        return read_json(run.promoted)
    return steps.promote_student(
        slices.promote_settings(run.config),
        run.verdict,
        run.metrics,
        stage_models(run),
        run.dcrs_report,
        registry_uri=run.config.registry.uri or str(run.registry),
        promoted_out=run.promoted,
        pulled_dir=run.pulled,
    )


def explain_rejection(run: RunDir) -> str:
    """Why the gate refused promotion, as Markdown (``rejected.md``)."""
    return steps.explain_rejection(
        slices.explain_settings(run.config), run.verdict, run.metrics, run.rejected
    )


def run_step(run: RunDir, name: str, progress: bool = True, eval_questions: int | None = None):
    """The step called ``name`` (one of ``twt.steps.settings.LOCAL_STEPS``): this module's function of that
    name (sampling: ``sample_teachers``, every teacher; ``stage<n>``: ``distill_stage``); returns what it
    returns."""
    if name not in slices.LOCAL_STEPS:
        raise ValueError(f"no step {name!r}; the steps are {', '.join(slices.LOCAL_STEPS)}")
    if name.startswith("stage"):
        return distill_stage(run, int(name.removeprefix("stage")), progress)
    if name == "prepare_questions":
        return prepare_questions(run, eval_questions)
    runner = globals()["sample_teachers" if name == "sample_teacher" else name]
    shows_progress = "progress" in inspect.signature(runner).parameters
    return runner(run, progress) if shows_progress else runner(run)


def run_all(run: RunDir, eval_questions: int | None = None, progress: bool = True) -> dict:
    """Every step in order (promotion when the gate passes, else the rejection report); returns the
    timings and the main results."""
    results, timings, started = {}, {}, time.perf_counter()
    for name in slices.LOCAL_STEPS:
        # after the gate: promotion when it passed, else the report of why not
        if name in ("promote_student", "explain_rejection") and results["gate"]["passed"] != (
            name == "promote_student"
        ):
            continue
        tick = time.perf_counter()
        results[name] = run_step(run, name, progress, eval_questions)
        timings[name] = round(time.perf_counter() - tick, 1)
    timings["total"] = round(time.perf_counter() - started, 1)
    return {
        "dcrs": results["select_candidates"],
        "compression": results["compress_reasoning"],
        "metrics": results["evaluate_students"],
        "gate": results["gate"],
        "promoted": results.get("promote_student"),
        "timings": timings,
    }
