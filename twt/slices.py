"""What each step of a run reads from the configuration: one small settings model per step (its "slice").

    slices = step_settings(config)            # step name → JSON-ready dict, e.g. slices["gate"]
    GateSettings.model_validate(slices["gate"]).gate.min_accuracy

A step receives only its slice, so a changed setting changes the inputs of exactly the steps that use it:
Kubeflow's cache (keyed by a task's inputs) then reruns those steps and reuses the rest. A changed gate
threshold reruns the gate and promotion, never sampling or training. The slices are built from one
validated ``RunConfig`` (``twt.config``), so every default is still the schema's.

The pipeline's typed parameters (``PARAMETERS``: teachers, DCRS thresholds, compression, per-stage budgets
and learning rates, the gate policy, the registry) are applied to a configuration by ``apply_parameters``;
``resolve`` does that at the start of a pipeline run and returns the slices.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twt.config import (
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
    StudentConfig,
    TaskConfig,
    TeacherConfig,
    TrainingConfig,
    is_uri,
    parse_config,
)


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
    stage: int = Field(ge=1, le=3)
    training: StageConfig
    student: StudentConfig
    teachers: list[TeacherLineage]
    launch: TrainingConfig = Field(
        default_factory=TrainingConfig,
        description="Where the stage trains (processes, nodes, jobs) and its durable checkpoint root.",
    )
    internalize: InternalizeConfig | None = Field(
        None, description="Stage 2 with a stepwise schedule (twt.internalize); None: trained once."
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
    """preflight (twt.preflight): what the run reaches outside its pods."""

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
    return QuestionsSettings(task=config.task)


def sample_settings(config: RunConfig, teacher: str) -> SampleSettings:
    return SampleSettings(teacher=config.teacher(teacher))


def select_settings(config: RunConfig, teachers: list[str] | None = None) -> SelectSettings:
    names = [n for n in config.teacher_names if teachers is None or n in teachers]
    return SelectSettings(teachers=names, dcrs=config.dcrs)


def stage_settings(config: RunConfig, stage: int) -> StageSettings:
    if stage not in (1, 2, 3):
        raise ValueError(f"no stage {stage}; stages are 1, 2 and 3")
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
        **{f"stage{n}": dump(stage_settings(config, n)) for n in (1, 2, 3)},
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


# --- the pipeline's typed parameters -----------------------------------------------------------------------

# parameter → where it goes in the configuration
PARAMETERS: dict[str, tuple[str, ...]] = {
    "run_name": ("name",),
    "teachers": ("teachers",),
    "dcrs_quality_threshold": ("dcrs", "quality_threshold"),
    "dcrs_similarity_threshold": ("dcrs", "similarity_threshold"),
    "compression": ("compression",),
    **{
        f"stage{n}_{field}": ("stages", f"stage{n}", field)
        for n in (1, 2, 3)
        for field in ("epochs", "updates", "learning_rate")
    },
    "gate_min_accuracy": ("gate", "min_accuracy"),
    "gate_max_accuracy_drop": ("gate", "max_accuracy_drop"),
    "gate_min_token_reduction": ("gate", "min_token_reduction"),
    "registry_uri": ("registry", "uri"),
    "registry_model_name": ("registry", "model_name"),
    "registry_tags": ("registry", "tags"),
    "student_model": ("student", "model"),
    "questions_uri": ("task", "questions"),
    "eval_uri": ("task", "eval"),
}
# question files given by a parameter make the task 'files'
QUESTION_FILES = ("questions_uri", "eval_uri")
# The registry a cluster run publishes to by default: the bucket manifests/base/minio creates.
CLUSTER_REGISTRY_URI = "s3://twt-registry"
# how a parameter writes "not set" (KFP parameters cannot be null): stage budgets 0, gate rules negative
UNSET_UPDATES, UNCHECKED_RULE = 0, -1.0
# the forms the structured parameters take, for error lines
PARAMETER_FORMS = {
    "teachers": 'a JSON list of teachers, e.g. [{"name": "t1", "model": "org/model", "backend": "vllm", '
    '"k": 4, "temperature": 0.7}]',
    "compression": 'a JSON object, e.g. {"method": "cts", "ratio": 0.5}',
    "registry_tags": 'a JSON list of strings, e.g. ["candidate"]',
}


def parameter_values(config: RunConfig) -> dict[str, Any]:
    """The pipeline parameters that reproduce ``config`` (per stage: its effective values)."""
    data = config.model_dump(mode="json")
    values: dict[str, Any] = {}
    for name, path in PARAMETERS.items():
        if path[0] == "stages":
            value = getattr(config.stage(int(path[1][-1])), path[2])
        else:
            value = data
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
        values[name] = value
    values["teachers"] = [_lean_teacher(t) for t in config.teachers]
    values["compression"] = config.compression.model_dump(mode="json", exclude_unset=True)
    for name, value in values.items():
        if value is None:
            values[name] = (
                UNSET_UPDATES
                if name.endswith("_updates")
                else UNCHECKED_RULE
                if name.startswith("gate_")
                else ""
            )
    return values


def pipeline_defaults(config: RunConfig) -> dict[str, Any]:
    """The pipeline parameters' defaults: ``parameter_values(config)``, with a registry to publish to
    (``CLUSTER_REGISTRY_URI``) when the configuration names none, so promotion works by default."""
    values = parameter_values(config)
    values["registry_uri"] = values["registry_uri"] or CLUSTER_REGISTRY_URI
    return values


def _lean_teacher(teacher: TeacherConfig) -> dict:
    """A teacher as a parameter: name, model and what was set (the rest is the schema's defaults)."""
    given = teacher.model_dump(mode="json", exclude_unset=True)
    return {"name": teacher.name, "model": teacher.model, **given}


def _whole_numbers(value: Any) -> Any:
    """KFP passes list and dict parameters through protobuf, which makes every number a float (k: 4 arrives
    as 4.0): whole floats inside them become ints again, so integer settings validate strictly."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    return value


def _as_setting(name: str, value: Any) -> Any:
    """A parameter's value as the configuration writes it (the "not set" forms become null)."""
    if name in ("teachers", "compression"):
        return _whole_numbers(value)
    if name.endswith("_updates") and value == UNSET_UPDATES:
        return None
    if name.startswith("gate_") and isinstance(value, int | float) and value < 0:
        return None
    if name in ("registry_uri", *QUESTION_FILES) and value == "":
        return None
    return value


def apply_parameters(data: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (a configuration as loaded from YAML) with the given pipeline parameters set.
    Raises ``ConfigError`` naming an unknown parameter or one of the wrong form."""
    out = copy.deepcopy(dict(data))
    for name, value in parameters.items():
        if name not in PARAMETERS:
            raise ConfigError(f"{name}: no such pipeline parameter; parameters: {sorted(PARAMETERS)}")
        _check_form(name, value)
        path = PARAMETERS[name]
        parent = out
        for part in path[:-1]:
            if not isinstance(parent.get(part), dict):
                parent[part] = {}
            parent = parent[part]
        parent[path[-1]] = _as_setting(name, value)
        if name in QUESTION_FILES and value:
            out["task"]["kind"] = "files"
    return out


def _override_text(config_override: str) -> tuple[str, str]:
    """(YAML text, its name in errors): ``config_override`` is YAML text, or a path or URI of a YAML file."""
    text = config_override.strip()
    if "\n" in text or not (is_uri(text) or text.endswith((".yaml", ".yml"))):
        return config_override, "config_override"
    import tempfile
    from pathlib import Path

    from twt import store

    try:
        with tempfile.TemporaryDirectory(prefix="twt-config-") as scratch:
            local = Path(scratch) / "config.yaml"
            store.get_file(text, local)
            return local.read_text(encoding="utf-8"), text
    except Exception as err:
        raise ConfigError(f"config_override: cannot read {text} ({err})") from None


def resolve(
    base_yaml: str, config_override: str = "", parameters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The slices of a pipeline run (``step_settings``), validated, paths resolved against the working
    directory. The configuration is ``config_override`` (YAML text, or a path or URI of a file) when given,
    else ``base_yaml``; each of the typed ``parameters`` is applied on top, except that with an override a
    parameter still at its default (``pipeline_defaults`` of ``base_yaml``) keeps the override's value
    (``registry_uri`` only where the override sets ``registry.uri``).
    An error is one ``ConfigError`` line naming the parameter (or the override's field)."""
    parameters = dict(parameters or {})
    base = _yaml_mapping(base_yaml, "defaults")
    if config_override.strip():
        text, source = _override_text(config_override)
        data = _yaml_mapping(text, source)
        defaults = pipeline_defaults(RunConfig.model_validate(base))
        parameters = {
            k: v
            for k, v in parameters.items()
            if k not in defaults or v != defaults[k] or (k == "registry_uri" and _unset(data, PARAMETERS[k]))
        }
    else:
        data, source = base, "defaults"
    merged = apply_parameters(data, parameters)
    try:
        config = parse_config(yaml.safe_dump(merged, sort_keys=False), source=source, base_dir=os.getcwd())
    except ConfigError as err:
        raise ConfigError(_name_parameter(str(err), source, parameters)) from None
    return step_settings(config)


def _unset(data: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether a loaded configuration leaves the field at ``path`` out (or null)."""
    value: Any = data
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value is None


def _yaml_mapping(text: str, source: str) -> dict:
    from twt.safe_yaml import YAMLLimitError, load_yaml

    try:
        data, _ = load_yaml(text, source)
    except YAMLLimitError as err:
        raise ConfigError(str(err)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data


def _name_parameter(message: str, source: str, parameters: Mapping[str, Any]) -> str:
    """``defaults: gate.min_accuracy: ...`` → ``gate_min_accuracy (gate.min_accuracy): ...`` when a
    parameter set that field; the first line only."""
    line = message.splitlines()[0]
    field = line.removeprefix(f"{source}: ").split(":")[0].split(" (line")[0]
    for name, path in PARAMETERS.items():
        dotted = ".".join(path)
        if name in parameters and (field == dotted or field.startswith((dotted + ".", dotted + "["))):
            rest = line.removeprefix(f"{source}: ").split(" (line")[0]
            return f"{name} ({rest})"
    return line


def _check_form(name: str, value: Any) -> None:
    expected = {"teachers": list, "compression": dict, "registry_tags": list}.get(name)
    if expected is not None and not isinstance(value, expected):
        raise ConfigError(f"{name}: expected {PARAMETER_FORMS[name]}, got {json.dumps(value)[:80]}")
