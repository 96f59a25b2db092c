"""What each step of a run reads from the configuration: one small settings model per step (its "slice").

    STEPS                                     # the steps in run order: name, slice model, slice builder
    slices = step_settings(config)            # step name → JSON-ready dict, e.g. slices["gate"]
    GateSettings.model_validate(slices["gate"]).gate.min_accuracy

A step receives only its slice, so a changed setting changes the inputs of exactly the steps that use it:
Kubeflow's cache (keyed by a task's inputs) then reruns those steps and reuses the rest. A changed gate
threshold reruns the gate and promotion, never sampling or training. The slices are built from one
validated ``RunConfig`` (``twt.core.schema``), so every default is still the schema's.

A step's name is its component's and its function's (``twt.steps.steps``, ``twt.steps.workdir``); the three
training stages, ``stage1`` to ``stage3``, share ``distill_stage``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twt.core.schema import (
    CompressionConfig,
    ConfigError,
    DCRSConfig,
    EvaluationConfig,
    GateConfig,
    InternalizeConfig,
    ReferenceConfig,
    RegistryConfig,
    RunConfig,
    StageConfig,
    StageNumber,
    StudentConfig,
    TaskConfig,
    TeacherConfig,
    TrainingConfig,
)
from twt.embedded.task import stratum_error


class _Slice(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuestionsSettings(_Slice):
    """prepare-questions: where the questions come from."""

    task: TaskConfig


class SampleSettings(_Slice):
    """sample-teacher: one teacher and how to sample it."""

    teacher: TeacherConfig


class SelectSettings(_Slice):
    """select-candidates (DCRS): the sampled teachers, in configuration order, and the thresholds."""

    teachers: list[str] = Field(min_length=1)
    dcrs: DCRSConfig


class TeacherLineage(_Slice):
    """What a trained model's lineage records of a teacher."""

    name: str
    model: str
    backend: str


class StageSettings(_Slice):
    """distill-stage: one stage's training settings and what its lineage records."""

    run: str
    stage: StageNumber
    training: StageConfig
    student: StudentConfig
    teachers: list[TeacherLineage]
    launch: TrainingConfig = Field(
        default_factory=TrainingConfig,
        description="Where the stage trains (processes, nodes, jobs) and its durable checkpoint root.",
    )
    internalize: InternalizeConfig | None = Field(
        None, description="Stage 2 with a stepwise schedule (twt.training.internalize); None: trained once."
    )
    reference_model: str | None = Field(
        None, description="With internalize schedule 'cts': the scoring model (null: the base model)."
    )
    condition: str | None = Field(
        None, description="With an internalize schedule: what CTS scoring is conditioned on (compression)."
    )
    window: int | None = Field(
        None, description="With an internalize schedule: CTS scoring's window in tokens (compression)."
    )


class CompressSettings(_Slice):
    """compress-reasoning: the method, and for method 'teacher' the teacher that rewrites."""

    compression: CompressionConfig
    teacher: TeacherConfig | None = None
    reference: ReferenceConfig | None = Field(
        None, description="cts/unconditional with a reference model trained apart (base_model set)."
    )


class EvaluateSettings(_Slice):
    """evaluate-students: generation settings and the baselines (the base student, teachers)."""

    evaluation: EvaluationConfig
    student: StudentConfig | None = None
    teachers: list[TeacherConfig] = Field(default_factory=list)


class GateSettings(_Slice):
    """gate: the promotion policy."""

    gate: GateConfig


class PromoteSettings(_Slice):
    """promote-student: where and under which name the student is published."""

    registry: RegistryConfig


class ExplainSettings(_Slice):
    """explain-rejection: the run's name and the policy the report quotes."""

    run: str
    gate: GateConfig


class PreflightSettings(_Slice):
    """preflight (twt.steps.preflight): what the run reaches outside its pods."""

    uris: list[str] = Field(description="Every s3:// URI of the configuration (buckets to find).")
    teachers: list[TeacherConfig] = Field(description="The teachers served over HTTP (backend openai).")
    training: TrainingConfig = Field(
        description="Where the stages train (a TrainJob/PyTorchJob needs its API)."
    )


def questions_settings(config: RunConfig) -> QuestionsSettings:
    """The embedded task's held-out set is stratified by chain length, so its size must fill every stratum:
    refused here, where every run builds its slices, before any step runs."""
    task = config.task
    if task.kind == "embedded" and (problem := stratum_error(task.eval_questions, task.weights)):
        raise ConfigError(f"task.eval_questions: the held-out set is stratified by chain length: {problem}")
    return QuestionsSettings(task=task)


def sample_settings(config: RunConfig, teacher: str) -> SampleSettings:
    if teacher not in config.teacher_names:
        raise ValueError(f"no teacher {teacher!r} in the configuration; it has {config.teacher_names}")
    return SampleSettings(teacher=config.teacher(teacher))


def teachers_settings(config: RunConfig) -> list[SampleSettings]:
    """One sampling slice per configured teacher (the pipeline's loop over ``sample_teacher``)."""
    return [sample_settings(config, name) for name in config.teacher_names]


def select_settings(config: RunConfig, teachers: list[str] | None = None) -> SelectSettings:
    names = [n for n in config.teacher_names if teachers is None or n in teachers]
    return SelectSettings(teachers=names, dcrs=config.dcrs)


def stage_settings(config: RunConfig, stage: int) -> StageSettings:
    lineage = [TeacherLineage(name=t.name, model=t.model, backend=t.backend) for t in config.teachers]
    # checkpoints default under the work directory: resolved here so the step needs no other setting
    launch = config.training.model_copy(
        update={"checkpoints": config.training.checkpoints or f"{config.workdir}/checkpoints"}
    )
    stepwise = stage == 2 and config.internalize.schedule != "none"
    return StageSettings(
        run=config.name,
        stage=stage,
        training=config.stage(stage),
        student=config.student,
        teachers=lineage,
        launch=launch,
        internalize=config.internalize if stepwise else None,
        reference_model=config.compression.reference_model if stepwise else None,
        condition=config.compression.condition if stepwise else None,
        window=config.compression.window if stepwise else None,
    )


def compress_settings(config: RunConfig) -> CompressSettings:
    teacher = config.compression_teacher() if config.compression.method == "teacher" else None
    reference = None
    if config.compression.method != "teacher" and config.reference.train:
        base = config.reference.base_model or config.student.model
        reference = config.reference.model_copy(update={"base_model": base})
    return CompressSettings(compression=config.compression, teacher=teacher, reference=reference)


def evaluate_settings(config: RunConfig) -> EvaluateSettings:
    baselines = config.evaluation.baselines
    teachers = [t for t in config.teachers if "teachers" in baselines or t.name in baselines]
    student = config.student if "student-base" in baselines else None
    return EvaluateSettings(evaluation=config.evaluation, student=student, teachers=teachers)


def gate_settings(config: RunConfig) -> GateSettings:
    return GateSettings(gate=config.gate)


def promote_settings(config: RunConfig) -> PromoteSettings:
    return PromoteSettings(registry=config.registry)


def explain_settings(config: RunConfig) -> ExplainSettings:
    return ExplainSettings(run=config.name, gate=config.gate)


def _s3_uris(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith("s3://") else []
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [uri for item in items for uri in _s3_uris(item)]


def preflight_settings(config: RunConfig) -> PreflightSettings:
    uris = _s3_uris(config.model_dump(mode="json"))
    uris += _s3_uris(stage_settings(config, 1).launch.checkpoints)  # the default under an s3:// workdir
    teachers = [t for t in config.teachers if t.backend == "openai"]
    return PreflightSettings(uris=list(dict.fromkeys(uris)), teachers=teachers, training=config.training)


@dataclass(frozen=True)
class RunStep:
    """One step of a run: its name, the model of its slice and how the slice is cut from a configuration."""

    name: str
    settings: type[_Slice]
    build: Callable[[RunConfig], _Slice | list[_Slice]]


# the steps in run order, the one list: resolve-settings' outputs, the local runner's steps, `twt run --step`
STEPS = (
    RunStep("preflight", PreflightSettings, preflight_settings),
    RunStep("prepare_questions", QuestionsSettings, questions_settings),
    RunStep("sample_teacher", SampleSettings, teachers_settings),  # a list: one slice per teacher
    RunStep("select_candidates", SelectSettings, select_settings),
    RunStep("stage1", StageSettings, partial(stage_settings, stage=1)),
    RunStep("compress_reasoning", CompressSettings, compress_settings),
    RunStep("stage2", StageSettings, partial(stage_settings, stage=2)),
    RunStep("stage3", StageSettings, partial(stage_settings, stage=3)),
    RunStep("evaluate_students", EvaluateSettings, evaluate_settings),
    RunStep("gate", GateSettings, gate_settings),
    RunStep("promote_student", PromoteSettings, promote_settings),
    RunStep("explain_rejection", ExplainSettings, explain_settings),
)
# the steps of a local run (twt.steps.workdir, ``twt run --step``): preflight checks a cluster's pods
LOCAL_STEPS = tuple(step.name for step in STEPS if step.name != "preflight")


def step_settings(config: RunConfig) -> dict[str, Any]:
    """Every step's slice as JSON-ready data, by step name; ``sample_teacher`` is a list, one per teacher."""

    def dump(built: _Slice | list[_Slice]) -> dict | list[dict]:
        if isinstance(built, list):
            return [one.model_dump(mode="json") for one in built]
        return built.model_dump(mode="json")

    return {step.name: dump(step.build(config)) for step in STEPS}


def parse_slice(model: type[_Slice], value: _Slice | str, name: str = "settings") -> Any:
    """A step's slice: the model itself, or its JSON text (what a component receives); an error names the
    field, e.g. ``settings.gate``."""
    if isinstance(value, model):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a {model.__name__} or its JSON text, got {type(value).__name__}")
    try:
        return model.model_validate_json(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in (name, *first["loc"]))
        raise ConfigError(f"{where}: {first['msg']}") from None
