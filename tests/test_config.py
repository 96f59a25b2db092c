"""twt.core.schema and twt.core.load: packaged configs load, malformed ones name file, field and line, stages
merge, paths resolve, dumps round-trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from twt.core import load as load_module
from twt.core import schema as config_module
from twt.core.load import data_dir, default_config_path, load_config, parse_config
from twt.core.prompts import PromptTemplates
from twt.core.schema import ConfigError, RunConfig, StageConfig, StagesConfig
from twt.embedded.task import WEIGHTS
from twt.training.sft import SFTConfig

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
CLUSTER = REPO / "configs" / "example-cluster.yaml"


def minimal(**sections) -> dict:
    """The smallest valid configuration, with sections replaced/added."""
    data = {
        "name": "t",
        "teachers": [{"name": "a", "model": "./models/a"}, {"name": "b", "model": "./models/b"}],
        "student": {"model": "./models/student"},
    }
    data.update(sections)
    return data


def write(tmp_path: Path, data: dict | str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_demo_config_loads_with_the_tiny_models(monkeypatch):
    monkeypatch.delenv("TWT_DATA", raising=False)
    assert default_config_path() == DEMO
    config = load_config(default_config_path())
    assert config.name == "demo"
    assert config.workdir == "runs/demo"  # an output: stays relative to the current directory
    assert config.teacher_names == ["teacher-large", "teacher-verbose", "teacher-noisy"]
    tiny = (Path(config_module.__file__).parents[1] / "data" / "tiny").resolve()
    assert [t.model for t in config.teachers] == [str(tiny / n) for n in config.teacher_names]
    assert config.student.model == str(tiny / "student-base")
    assert all(t.backend == "transformers" and t.templates() == PromptTemplates() for t in config.teachers)
    assert config.task.kind == "embedded" and tuple(config.task.weights) == WEIGHTS
    assert config.compression_teacher().name == "teacher-large"
    # budgets from the measured curves; nothing of a previous stage mixed back in (RESULTS.md)
    assert [config.stage(n).updates for n in (1, 2, 3)] == [1500, 400, 600]
    assert [config.stage(n).mix_previous for n in (1, 2, 3)] == [0, 0, 0]


def test_twt_data_moves_the_demo_models(monkeypatch, tmp_path):
    monkeypatch.setenv("TWT_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    config = load_config(DEMO)
    assert config.teachers[1].model == str(tmp_path / "tiny" / "teacher-verbose")


def test_cluster_example_loads():
    config = load_config(CLUSTER)
    assert config.workdir == "s3://twt-artifacts/runs/gsm8k-qwen"
    assert config.task.kind == "files" and config.task.eval == "s3://twt-data/gsm8k/test.jsonl"
    assert [t.backend for t in config.teachers] == ["vllm", "vllm", "openai"]
    assert config.teachers[0].model == "Qwen/Qwen2.5-7B-Instruct"  # a hub id is not a path
    remote = config.teacher("qwen-72b")
    assert remote.api_key_env == "TEACHER_API_KEY" and remote.base_url.endswith("/v1")
    templates = remote.templates()
    assert templates.render("solve", question="1+1").endswith("Problem: 1+1\n")
    assert "Answer: 5" in templates.render("rewrite", question="q", reasoning="r", answer="5")
    assert config.registry.uri == "s3://twt-registry/models"
    assert config.stage(3).learning_rate == 5e-6 and config.stage(3).grad_accum == 8


def test_stage_merging_common_then_overrides(tmp_path):
    stages = {
        "common": {"epochs": 3, "learning_rate": 0.01, "lora": True},
        "stage1": {},
        "stage2": {"learning_rate": 0.002, "mix_previous": 0.5},
        "stage3": {"epochs": 1, "updates": 500},
    }
    config = load_config(write(tmp_path, minimal(stages=stages)))
    one, two, three = (config.stage(n) for n in (1, 2, 3))
    assert isinstance(one, StageConfig)
    assert (one.epochs, one.learning_rate, one.lora, one.mix_previous) == (3, 0.01, True, 0)
    assert (two.epochs, two.learning_rate, two.lora, two.mix_previous) == (3, 0.002, True, 0.5)
    assert (three.epochs, three.learning_rate, three.mix_previous) == (
        1,
        0.01,
        0,
    )  # stage3 replaced, not merged
    assert one.batch_size == StageConfig().batch_size  # untouched settings keep their defaults
    assert (one.updates, three.updates) == (None, 500)
    assert SFTConfig.from_stage(three).updates == 500  # the trainer gets the budget
    with pytest.raises(ValueError, match="no stage 4"):
        config.stage(4)


def test_stage_defaults_mix_previous_data_in_later_stages():
    stages = StagesConfig()
    assert [stages.stage(n).mix_previous for n in (1, 2, 3)] == [0, 0.2, 0.2]


def test_yaml_1_1_float_spelling_is_accepted(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string; it must still mean 0.001.
    path = write(tmp_path, yaml.safe_dump(minimal()) + "stages:\n  common: {learning_rate: 1e-3}\n")
    assert load_config(path).stage(2).learning_rate == 0.001


def test_workdir_defaults_to_runs_name(tmp_path):
    assert load_config(write(tmp_path, minimal(name="exp-7"))).workdir == "runs/exp-7"


def test_relative_inputs_resolve_against_the_config_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TWT_TEST_BUCKET", "my-bucket")
    data = minimal(
        workdir="s3://${TWT_TEST_BUCKET}/runs/t",
        task={"kind": "files", "questions": "data/q.jsonl", "eval": "s3://b/eval.jsonl"},
        teachers=[
            {"name": "local", "model": "./models/a"},
            {"name": "deep", "model": "models/tiny/b"},  # more than org/name: a path
            {"name": "hub", "model": "Qwen/Qwen2.5-0.5B-Instruct"},
            {"name": "abs", "model": "/opt/models/c"},
            {"name": "api", "model": "served-name/x/y", "backend": "openai", "base_url": "http://h:8000/v1"},
        ],
        student={"model": "gpt2"},
        dcrs={"embedding_model": "../models/minilm"},
    )
    (tmp_path / "cfg").mkdir()
    config = load_config(write(tmp_path / "cfg", data))
    base = (tmp_path / "cfg").resolve()
    assert config.workdir == "s3://my-bucket/runs/t"
    assert config.task.questions == str(base / "data" / "q.jsonl")
    assert config.task.eval == "s3://b/eval.jsonl"
    assert [t.model for t in config.teachers] == [
        str(base / "models" / "a"),
        str(base / "models" / "tiny" / "b"),
        "Qwen/Qwen2.5-0.5B-Instruct",
        "/opt/models/c",
        "served-name/x/y",  # an openai model is the name the server serves, never a path
    ]
    assert config.student.model == "gpt2"
    assert config.dcrs.embedding_model == str(tmp_path.resolve() / "models" / "minilm")
    other = tmp_path / "elsewhere"
    rebased = load_config(tmp_path / "cfg" / "run.yaml", base_dir=other)
    assert rebased.teachers[0].model == str(other.resolve() / "models" / "a")


def test_prompt_overrides_keep_the_other_defaults(tmp_path):
    teachers = [{"name": "a", "model": "m/x/y", "prompts": {"solve": "Think: {question}\n"}}]
    teacher = load_config(write(tmp_path, minimal(teachers=teachers))).teachers[0]
    assert teacher.templates() == PromptTemplates(solve="Think: {question}\n")
    assert teacher.templates().render("solve", question="1+2") == "Think: 1+2\n"


@pytest.mark.parametrize("config_path", [DEMO, CLUSTER])
def test_dump_and_load_round_trip(tmp_path, config_path):
    config = load_config(config_path)
    text = config.model_dump_yaml()
    again = load_config(write(tmp_path, text, "resolved.yaml"))
    assert again == config
    assert again.model_dump_yaml() == text
    assert "${" not in text  # the dump is resolved: no environment needed to read it
    dumped_stages = yaml.safe_load(text)["stages"]
    assert set(dumped_stages["stage2"]) <= set(yaml.safe_load(config_path.read_text())["stages"]["stage2"])


def test_every_field_is_documented():
    def models(model: type[BaseModel], seen: set) -> set:
        if model in seen:
            return seen
        seen.add(model)
        for field in model.model_fields.values():
            inner = load_module._model_in(field.annotation)
            if inner is not None:
                models(inner, seen)
        return seen

    undocumented = [
        f"{m.__name__}.{name}"
        for m in models(RunConfig, set())
        for name, field in m.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


TEACHER = "teachers[1]"
MALFORMED = {
    # case: (change to the minimal config, the field named, the problem)
    "unknown top-level key": ({"nmae": "x"}, "nmae", "Extra inputs are not permitted"),
    "unknown nested key": (
        {"teachers": [{"name": "a", "model": "m"}, {"name": "b", "model": "m", "tempreature": 0.5}]},
        f"{TEACHER}.tempreature",
        "did you mean 'temperature'?",
    ),
    "wrong type": ({"task": {"train_questions": "many"}}, "task.train_questions", "valid integer"),
    "negative k": (
        {"teachers": [{"name": "a", "model": "m"}, {"name": "b", "model": "m", "k": -1}]},
        f"{TEACHER}.k",
        "greater than or equal to 1",
    ),
    "negative temperature": (
        {"teachers": [{"name": "a", "model": "m"}, {"name": "b", "model": "m", "temperature": -0.1}]},
        f"{TEACHER}.temperature",
        "Input should be greater than or equal to 0",
    ),
    "duplicate teacher names": (
        {"teachers": [{"name": "a", "model": "m"}, {"name": "a", "model": "n"}]},
        f"{TEACHER}.name",
        "duplicate teacher name 'a'",
    ),
    "no teachers": ({"teachers": []}, "teachers", "at least 1 item"),
    "unsafe teacher name": (
        {"teachers": [{"name": "a", "model": "m"}, {"name": "b/c", "model": "m"}]},
        f"{TEACHER}.name",
        "String should match pattern",
    ),
    "openai without base_url": (
        {"teachers": [{"name": "a", "model": "m"}, {"name": "b", "model": "m", "backend": "openai"}]},
        f"{TEACHER}.base_url",
        "required when backend is 'openai'",
    ),
    "base_url on a local backend": (
        {"teachers": [{"name": "a", "model": "m"}, {"name": "b", "model": "m", "base_url": "http://x/v1"}]},
        f"{TEACHER}.base_url",
        "only used by backend 'openai'",
    ),
    "api key instead of its variable name": (
        {
            "teachers": [
                {"name": "a", "model": "m"},
                {
                    "name": "b",
                    "model": "m",
                    "backend": "openai",
                    "base_url": "http://x",
                    "api_key_env": "sk-12ab",
                },
            ]
        },
        f"{TEACHER}.api_key_env",
        "NAME of an environment variable",
    ),
    "unknown backend": (
        {"teachers": [{"name": "a", "model": "m"}, {"name": "b", "model": "m", "backend": "tgi"}]},
        f"{TEACHER}.backend",
        "'transformers', 'vllm' or 'openai'",
    ),
    "bad prompt placeholder": (
        {
            "teachers": [
                {"name": "a", "model": "m"},
                {"name": "b", "model": "m", "prompts": {"solve": "{qestion}"}},
            ]
        },
        f"{TEACHER}.prompts.solve",
        "unknown placeholder",
    ),
    "missing student": ({"student": None}, "student", "valid dictionary"),
    "files without questions": ({"task": {"kind": "files", "eval": "e.jsonl"}}, "task.questions", "required"),
    "files on an embedded task": (
        {"task": {"eval": "e.jsonl"}},
        "task.eval",
        "only used when kind is 'files'",
    ),
    "bad weights": ({"task": {"weights": [0, 0]}}, "task.weights", "positive sum"),
    "ratio zero": ({"compression": {"ratio": 0}}, "compression.ratio", "greater than 0"),
    "ratio above one": ({"compression": {"ratio": 1.5}}, "compression.ratio", "less than or equal to 1"),
    "similarity threshold out of range": (
        {"dcrs": {"similarity_threshold": 1.2}},
        "dcrs.similarity_threshold",
        "less than or equal to 1",
    ),
    "quality threshold out of range": (
        {"dcrs": {"quality_threshold": -0.5}},
        "dcrs.quality_threshold",
        "greater than or equal to 0",
    ),
    "unknown compression teacher": (
        {"compression": {"teacher": "z"}},
        "compression.teacher",
        "no teacher 'z'",
    ),
    "bad stage override": (
        {"stages": {"stage2": {"learning_rate": -1}}},
        "stages.stage2.learning_rate",
        "greater than 0",
    ),
    "mix into stage 1": (
        {"stages": {"stage1": {"mix_previous": 0.1}}},
        "stages.stage1.mix_previous",
        "must be 0",
    ),
    "unknown baseline": (
        {"evaluation": {"baselines": ["stage1", "stage9"]}},
        "evaluation.baselines[1]",
        "stage9",
    ),
    "gate baseline not evaluated": (
        {"evaluation": {"baselines": ["stage1"]}, "gate": {"drop_baseline": "stage2"}},
        "gate.drop_baseline",
        "not evaluated",
    ),
    "unset environment variable": ({"workdir": "s3://${TWT_TEST_UNSET_VAR}/x"}, "workdir", "is not set"),
}


UNFILLABLE_STRATA = {
    "fewer eval items than strata": ({"eval_questions": 3}, "3 items cannot fill 4 strata"),
    "a stratum larger than its chains": (
        {"eval_questions": 1000, "weights": [1.0, 1.0]},
        "500 chains of 1 operation(s) asked, but only 300 exist",
    ),
}


@pytest.mark.parametrize("case", UNFILLABLE_STRATA)
def test_a_held_out_set_that_cannot_fill_its_strata_is_refused_naming_the_field(tmp_path, case):
    """The schema does not know the embedded task; the questions step's settings, which every run builds
    before any step runs, check that the stratified held-out set can be drawn."""
    from twt.steps.settings import questions_settings

    change, problem = UNFILLABLE_STRATA[case]
    config = load_config(write(tmp_path, minimal(task={"kind": "embedded", **change})))
    with pytest.raises(ConfigError, match=r"^task\.eval_questions: .*" + re.escape(problem)):
        questions_settings(config)


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_config_names_the_file_and_field(tmp_path, case, monkeypatch):
    monkeypatch.delenv("TWT_TEST_UNSET_VAR", raising=False)
    change, field, problem = MALFORMED[case]
    path = write(tmp_path, minimal(**change))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert problem in message
    assert "\n" not in message  # one problem, one line


def test_error_gives_the_yaml_line(tmp_path):
    text = "name: t\nteachers:\n  - name: a\n    model: m\n    k: 0\nstudent:\n  model: s\n"
    with pytest.raises(ConfigError, match=r"teachers\[0\]\.k: .* \(line 5\)$"):
        load_config(write(tmp_path, text))


def test_every_problem_is_reported(tmp_path):
    data = minimal(teachers=[{"name": "a", "model": "m", "k": 0, "top_p": 2}])
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data))
    lines = str(caught.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == ["teachers[0].k", "teachers[0].top_p"]


def test_yaml_syntax_error_names_the_line(tmp_path):
    text = "name: t\nteachers:\n  - name: a\n    model: [unclosed\nstudent: {model: s}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert str(caught.value).startswith(f"{tmp_path / 'run.yaml'}:5:")
    assert "invalid YAML" in str(caught.value)


def test_repeated_key_is_refused(tmp_path):
    text = "name: t\nteachers:\n  - name: a\n    model: m\n    k: 2\n    k: 8\nstudent: {model: s}\n"
    with pytest.raises(ConfigError, match=r"run\.yaml:6: duplicate key 'k'"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "problem"), [("", "empty configuration"), ("- a\n- b\n", "must be a mapping")]
)
def test_top_level_must_be_a_mapping(tmp_path, text, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"absent\.yaml: no such file"):
        load_config(tmp_path / "absent.yaml")


def test_parse_config_text_names_its_source():
    with pytest.raises(ConfigError, match=r"^pipeline-param: teachers: Field required"):
        parse_config("name: t\nstudent: {model: s}\n", source="pipeline-param")
    assert isinstance(ConfigError("x"), ValueError)


@pytest.mark.parametrize(
    ("field", "value"), [("model_name", "Student"), ("version", "beta"), ("version", "01")]
)
def test_registry_names_follow_the_registry_rules(field: str, value: str) -> None:
    from twt.core.schema import RegistryConfig

    with pytest.raises(ValueError, match="String should match pattern"):
        RegistryConfig(**{field: value})
    assert RegistryConfig(model_name="twt-student.v2", version="1.2.3").version == "1.2.3"
