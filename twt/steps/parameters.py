"""The pipeline's typed parameters and the run configuration: each parameter's value from the config
(the defaults the pipeline is compiled with), the parameters and a YAML override applied to the config, and
each step's slice resolved from them."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from typing import Any

import yaml

from twt.core.load import is_uri, parse_config
from twt.core.schema import STAGES, ConfigError, RunConfig, TeacherConfig
from twt.steps.settings import step_settings

# parameter → where it goes in the configuration
PARAMETERS: dict[str, tuple[str, ...]] = {
    "run_name": ("name",),
    "teachers": ("teachers",),
    "dcrs_quality_threshold": ("dcrs", "quality_threshold"),
    "dcrs_similarity_threshold": ("dcrs", "similarity_threshold"),
    "compression": ("compression",),
    **{
        f"stage{n}_{field}": ("stages", f"stage{n}", field)
        for n in STAGES
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
# how a parameter writes "not set" (KFP parameters cannot be null): stage budgets 0, gate rules negative
UNSET_UPDATES, UNCHECKED_RULE = 0, -1.0

# question files given by a parameter make the task 'files'
QUESTION_FILES = ("questions_uri", "eval_uri")


# The registry a cluster run publishes to by default: the bucket manifests/base/minio creates.
CLUSTER_REGISTRY_URI = "s3://twt-registry"


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

    from twt.core import store

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
    from twt.core.safe_yaml import YAMLLimitError, load_yaml

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
