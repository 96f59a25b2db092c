"""Each step gets only its settings: the compiled spec's components take their slice
(``twt.steps.settings``) and plumbing, never the run's parameters; a changed setting changes the slices of
exactly the steps that use it; the steps are listed once; a bad pipeline parameter is one line naming it."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from pipelines import release
from twt.core.load import default_config_path
from twt.core.schema import ConfigError, RunConfig
from twt.steps import parameters as kfp_parameters
from twt.steps import settings as slices

# the step (resolve-settings output, twt.steps.settings.STEPS) each task's settings come from: the
# component's name, but for the three runs of distill-stage
STEP_OF_TASK = {
    "prepare-questions": "prepare_questions",
    "select-candidates": "select_candidates",
    "distill-stage": "stage1",
    "distill-stage-2": "stage2",
    "distill-stage-3": "stage3",
    "compress-reasoning": "compress_reasoning",
    "evaluate-students": "evaluate_students",
    "gate": "gate",
    "promote-student": "promote_student",
    "explain-rejection": "explain_rejection",
    "preflight": "preflight",
}
# inputs a component may take besides its settings: where the object store is, which stage it trains
# run identity and wiring, not settings: run_id (durable checkpoints), pipeline_run_id (Model Registry)
# the names preflight quotes in its failure lines and the claim it checks; storage_key (the object store
# Secret's name, which Kubeflow Model Registry records)
PLUMBING = {"s3_endpoint", "stage", "run_id", "pipeline_run_id", "model_cache_pvc", "minio_secret",
            "teacher_keys_secret", "storage_key"}  # fmt: skip


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("compiled") / "twt.yaml"
    return release.load_spec(release.compile_pipeline(out))


def _tasks(spec: dict) -> dict[str, dict]:
    found = dict(spec["root"]["dag"]["tasks"])
    for body in spec["components"].values():
        found |= body.get("dag", {}).get("tasks", {})
    return found


def test_every_component_takes_its_own_settings_and_nothing_else(spec: dict) -> None:
    tasks = _tasks(spec)
    run_parameters = set(spec["root"]["inputDefinitions"]["parameters"])
    checked = set()
    for name, task in tasks.items():
        component = spec["components"][task["componentRef"]["name"]]
        # serve-student deploys what promotion published: its inputs are the deployment's (runtime, service
        # account, placement), not the run's configuration, and it never caches
        if "executorLabel" not in component or name in (
            "resolve-settings",
            "teacher-settings",
            "serve-student",
        ):
            continue
        inputs = set(component.get("inputDefinitions", {}).get("parameters", {}))
        assert inputs - PLUMBING == {"settings"}, f"{name} takes {sorted(inputs)}"
        assert not (inputs - PLUMBING) & run_parameters, name
        source = task["inputs"]["parameters"]["settings"]
        if name == "sample-teacher":  # one teacher's settings: the loop's item
            assert "loop-item" in source["componentInputParameter"]
        elif "componentInputParameter" in source:  # inside a dsl.If branch: passed down from the root DAG
            expected = f"pipelinechannel--resolve-settings-{STEP_OF_TASK[name]}"
            assert source["componentInputParameter"] == expected
        else:
            assert source["taskOutputParameter"] == {
                "producerTask": "resolve-settings",
                "outputParameterKey": STEP_OF_TASK[name],
            }, name
        checked.add(name)
    assert checked == set(STEP_OF_TASK) | {"sample-teacher"}


def test_the_steps_are_listed_once_and_everything_else_follows(spec: dict) -> None:
    from components.resolve_settings import resolve_settings
    from twt.app.cli import build_parser
    from twt.steps import workdir

    names = [step.name for step in slices.STEPS]
    outputs = spec["components"]["comp-resolve-settings"]["outputDefinitions"]["parameters"]
    assert sorted(outputs) == sorted(names)
    assert list(resolve_settings.component_spec.outputs) == names  # in order: steps.resolve_settings' tuple
    assert list(slices.step_settings(RunConfig.model_validate(_demo()))) == names
    assert tuple(n for n in names if n != "preflight") == slices.LOCAL_STEPS
    assert build_parser().parse_args(["run", "--step", *slices.LOCAL_STEPS]).step == list(slices.LOCAL_STEPS)
    for name in slices.LOCAL_STEPS:  # each local step is this module's function of its name
        function = "distill_stage" if name.startswith("stage") else name
        function = "sample_teachers" if name == "sample_teacher" else function
        assert callable(getattr(workdir, function)), name


def test_typed_parameters_carry_their_descriptions(spec: dict) -> None:
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name in kfp_parameters.PARAMETERS:
        assert len(parameters[name].get("description", "")) >= 20, name
    assert parameters["stage2_learning_rate"]["parameterType"] == "NUMBER_DOUBLE"
    assert parameters["stage3_updates"]["parameterType"] == "NUMBER_INTEGER"
    assert parameters["teachers"]["parameterType"] == "LIST"
    assert parameters["compression"]["parameterType"] == "STRUCT"


def _demo() -> dict:
    return yaml.safe_load(default_config_path().read_text())


def _slices_with(change) -> dict:
    data = _demo()
    change(data)
    return json.loads(json.dumps(slices.step_settings(RunConfig.model_validate(data))))


@pytest.mark.parametrize(
    ("change", "steps"),
    [
        (lambda d: d["gate"].update(min_accuracy=0.9), {"gate", "explain_rejection"}),
        (lambda d: d["dcrs"].update(quality_threshold=0.7), {"select_candidates"}),
        (lambda d: d["stages"]["stage2"].update(learning_rate=1e-4), {"stage2"}),
        (lambda d: d["stages"]["common"].update(batch_size=4), {"stage1", "stage2", "stage3"}),
        (lambda d: d["registry"].update(model_name="other"), {"promote_student"}),
        (lambda d: d["evaluation"].update(max_new_tokens=64), {"evaluate_students"}),
        (lambda d: d["task"].update(train_questions=10), {"prepare_questions"}),
        (lambda d: d.update(compression={"method": "cts"}), {"compress_reasoning"}),
        (lambda d: d["teachers"][1].update(temperature=0.3), {"sample_teacher", "evaluate_students"}),
    ],
)
def test_a_setting_changes_only_the_steps_that_use_it(change, steps: set[str]) -> None:
    before, after = _slices_with(lambda d: None), _slices_with(change)
    changed = {step for step in before if before[step] != after[step]}
    assert changed == steps
    if "sample_teacher" in steps:  # only the changed teacher's sampling task
        pairs = zip(before["sample_teacher"], after["sample_teacher"], strict=True)
        assert [a == b for a, b in pairs] == [True, False, True]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"gate_min_accuracy": 1.5}, r"^gate_min_accuracy \(gate\.min_accuracy: .*less than or equal to 1"),
        ({"teachers": "teacher-large"}, r"^teachers: expected a JSON list of teachers"),
        ({"compression": {"method": "teacher", "ratio": 0.3}}, r"^compression \(compression\.ratio: has no"),
        ({"stage1_learning_rate": 0}, r"^stage1_learning_rate \(stages\.stage1\.learning_rate: "),
        ({"gpus": 2}, r"^gpus: no such pipeline parameter"),
    ],
)
def test_a_bad_parameter_is_one_line_naming_it(parameters: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        kfp_parameters.resolve(default_config_path().read_text(), "", parameters)
    assert "\n" not in str(err.value)


def test_parameters_apply_and_an_override_keeps_what_they_leave_at_default(tmp_path) -> None:
    base = default_config_path().read_text()
    applied = kfp_parameters.resolve(base, "", {"gate_min_accuracy": 0.8, "gate_min_token_reduction": -1})
    assert applied["gate"]["gate"]["min_accuracy"] == 0.8
    assert applied["gate"]["gate"]["min_token_reduction"] is None  # negative = not checked
    override = _demo()
    override["gate"]["min_accuracy"] = 0.25
    override["dcrs"]["quality_threshold"] = 0.6
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(override))
    defaults = kfp_parameters.parameter_values(RunConfig.model_validate(_demo()))
    resolved = kfp_parameters.resolve(base, str(path), {**defaults, "dcrs_quality_threshold": 0.8})
    assert resolved["gate"]["gate"]["min_accuracy"] == 0.25  # parameter at its default: the file's value
    assert resolved["select_candidates"]["dcrs"]["quality_threshold"] == 0.8  # parameter changed: it applies


def test_parameter_values_reproduce_the_configuration() -> None:
    config = RunConfig.model_validate(_demo())
    again = kfp_parameters.apply_parameters(_demo(), kfp_parameters.parameter_values(config))
    assert slices.step_settings(RunConfig.model_validate(again)) == slices.step_settings(config)


def test_submission_refuses_a_bad_parameter_before_anything_runs() -> None:
    config = default_config_path()
    with pytest.raises(release.ReleaseError, match=r"^gate_min_accuracy \(gate\.min_accuracy: "):
        release.run_arguments(config, overrides={"gate_min_accuracy": 2.0})
    arguments = release.run_arguments(config, overrides={"gate_min_accuracy": 0.7})
    assert arguments["gate_min_accuracy"] == 0.7 and "gate:" in arguments["config_override"]


def test_pipeline_defaults_are_the_packaged_configuration() -> None:
    from pipelines.distillation import DEFAULTS, twt_distillation

    inputs = twt_distillation.component_spec.inputs
    for name in kfp_parameters.PARAMETERS:
        assert inputs[name].default == DEFAULTS[name], name


def test_student_and_question_files_are_typed_parameters(spec: dict) -> None:
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("student_model", "questions_uri", "eval_uri"):
        assert parameters[name]["parameterType"] == "STRING", name
    given = {"student_model": "Qwen/Qwen2.5-0.5B-Instruct", "questions_uri": "s3://data/q.jsonl"}
    resolved = kfp_parameters.resolve(
        default_config_path().read_text(), "", {**given, "eval_uri": "s3://data/e.jsonl"}
    )
    assert resolved["stage1"]["student"]["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    task = resolved["prepare_questions"]["task"]
    assert (task["kind"], task["questions"], task["eval"]) == (
        "files",
        "s3://data/q.jsonl",
        "s3://data/e.jsonl",
    )
    with pytest.raises(ConfigError, match="eval") as err:  # files go in pairs
        kfp_parameters.resolve(default_config_path().read_text(), "", given)
    assert "\n" not in str(err.value)


def test_promotion_has_a_registry_by_default_and_an_override_keeps_its_own() -> None:
    from pipelines.distillation import DEFAULTS

    base = default_config_path().read_text()
    assert DEFAULTS["registry_uri"] == "s3://twt-registry"  # the bucket manifests/base/minio creates
    assert (
        kfp_parameters.resolve(base, "", DEFAULTS)["promote_student"]["registry"]["uri"]
        == "s3://twt-registry"
    )
    override = _demo()
    override["registry"]["uri"] = "s3://elsewhere/models"
    resolved = kfp_parameters.resolve(base, yaml.safe_dump(override), DEFAULTS)
    assert resolved["promote_student"]["registry"]["uri"] == "s3://elsewhere/models"
    override["registry"]["uri"] = None  # the file names none: the pipeline's default applies
    assert kfp_parameters.resolve(base, yaml.safe_dump(override), DEFAULTS)["promote_student"]["registry"][
        "uri"
    ] == ("s3://twt-registry")


def test_an_override_can_be_one_line_or_an_s3_uri(s3) -> None:
    """The KFP UI's string field is a single line: a configuration fits as flow-style YAML (or JSON), or
    as the s3:// URI of a file that resolve-settings fetches."""
    override = _demo()
    override["gate"]["min_accuracy"] = 0.33
    one_line = yaml.safe_dump(override, default_flow_style=True, width=10**6).strip()
    assert "\n" not in one_line
    base = default_config_path().read_text()
    assert kfp_parameters.resolve(base, one_line)["gate"]["gate"]["min_accuracy"] == 0.33
    s3.client.put_object(s3.bucket, "runs/one.yaml", io.BytesIO(yaml.safe_dump(override).encode()), -1,
                         part_size=5 * 2**20)  # fmt: skip
    assert kfp_parameters.resolve(base, s3.uri("runs/one.yaml"))["gate"]["gate"]["min_accuracy"] == 0.33
    with pytest.raises(ConfigError, match=r"^config_override: cannot read s3://.*/runs/missing\.yaml"):
        kfp_parameters.resolve(base, s3.uri("runs/missing.yaml"))


def test_numbers_kfp_turned_into_floats_come_back_whole() -> None:
    teachers = [{"name": "t", "model": "org/m", "k": 2.0, "temperature": 1.0, "max_new_tokens": 64.0}]
    compression = {"method": "teacher", "teacher": "t"}
    resolved = kfp_parameters.resolve(
        default_config_path().read_text(), "", {"teachers": teachers, "compression": compression}
    )
    teacher = resolved["sample_teacher"][0]["teacher"]
    assert teacher["k"] == 2 and isinstance(teacher["k"], int) and teacher["max_new_tokens"] == 64
