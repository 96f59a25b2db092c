"""What each step of a run reads from the configuration: one small settings model per step (its "slice").

    slices = step_settings(config)            # step name → JSON-ready dict, e.g. slices["gate"]
    GateSettings.model_validate(slices["gate"]).gate.min_accuracy

A step receives only its slice, so a changed setting changes the inputs of exactly the steps that use it:
Kubeflow's cache (keyed by a task's inputs) then reruns those steps and reuses the rest. A changed gate
threshold reruns the gate and promotion, never sampling or training. The slices are built from one
validated ``RunConfig`` (``twt.core.schema``), so every default is still the schema's.

The pipeline's typed parameters (``PARAMETERS``: teachers, DCRS thresholds, compression, per-stage budgets
and learning rates, the gate policy, the registry) are applied to a configuration by ``apply_parameters``;
``resolve`` does that at the start of a pipeline run and returns the slices.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twt.core.schema import (
    STAGES,
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


STEP_MODELS: dict[str, type[_Slice]] = {
    "questions": QuestionsSettings,
    "sample": SampleSettings,
    "select": SelectSettings,
    "stage1": StageSettings,
    "stage2": StageSettings,
    "stage3": StageSettings,
    "compress": CompressSettings,
    "evaluate": EvaluateSettings,
    "gate": GateSettings,
    "promote": PromoteSettings,
    "explain": ExplainSettings,
    "preflight": PreflightSettings,
}


def questions_settings(config: RunConfig) -> QuestionsSettings:
    """The embedded task's held-out set is stratified by chain length, so its size must fill every stratum:
    refused here, where every run builds its slices, before any step runs."""
    task = config.task
    if task.kind == "embedded" and (problem := stratum_error(task.eval_questions, task.weights)):
        raise ConfigError(f"task.eval_questions: the held-out set is stratified by chain length: {problem}")
    return QuestionsSettings(task=task)


def sample_settings(config: RunConfig, teacher: str) -> SampleSettings:
    return SampleSettings(teacher=config.teacher(teacher))


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


def step_settings(config: RunConfig) -> dict[str, Any]:
    """Every step's slice as JSON-ready data; ``sample`` is a list, one slice per teacher."""

    def dump(model: BaseModel) -> dict:
        return model.model_dump(mode="json")

    return {
        "questions": dump(questions_settings(config)),
        "sample": [dump(sample_settings(config, name)) for name in config.teacher_names],
        "select": dump(select_settings(config)),
        **{f"stage{n}": dump(stage_settings(config, n)) for n in STAGES},
        "compress": dump(compress_settings(config)),
        "evaluate": dump(evaluate_settings(config)),
        "gate": dump(gate_settings(config)),
        "promote": dump(promote_settings(config)),
        "explain": dump(explain_settings(config)),
        "preflight": dump(preflight_settings(config)),
    }


def parse_slice(model: type[_Slice], value: Any, name: str = "settings") -> Any:
    """A slice from a model, a dict or JSON text; an error names the field, e.g. ``settings.gate``."""
    if isinstance(value, model):
        return value
    try:
        if isinstance(value, str):
            return model.model_validate_json(value)
        return model.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in (name, *first["loc"]))
        raise ConfigError(f"{where}: {first['msg']}") from None
