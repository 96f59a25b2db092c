"""The KFP components (components/) and the boxes they call (twt/steps/steps.py), without running a pipeline.

    python -m pytest tests/test_components.py -q

Components are checked as source (ast: what is imported where, which function the body calls) and as
compiled component specs (image, no pip install of kfp, typed and documented inputs and outputs). The
model-free tasks (questions, candidate lookup, gate, rejection report, registry choice) run here on
small files; the whole DAG runs in tests/test_pipeline.py.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest
import yaml

import twt
from components.images import CPU_IMAGE, GPU_IMAGE, VERSION
from twt.core.load import default_config_path, parse_config
from twt.core.records import Question, read_rows
from twt.core.schema import ConfigError, RunConfig
from twt.steps import settings as slices
from twt.steps import steps

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS_DIR = ROOT / "components"
# module -> image; each module's component, and the twt.steps.steps function it calls, have its name
COMPONENTS = {
    "prepare_questions": "cpu",
    "resolve_settings": "cpu",
    "teacher_settings": "cpu",
    "sample_teacher": "gpu",
    "select_candidates": "cpu",
    "distill_stage": "gpu",
    "compress_reasoning": "gpu",
    "evaluate_students": "gpu",
    "gate": "cpu",
    "promote_student": "cpu",
    "explain_rejection": "cpu",
    "preflight": "cpu",
    "serve_student": "cpu",
}
NOT_COMPONENTS = {"__init__", "images"}
# What a component module may import at module level: kfp, typing's NamedTuple (named outputs) and the
# image names (components/images.py, standard library only).
ALLOWED_MODULE_IMPORTS = {"kfp", "kfp.dsl", "typing", "components.images"}


def module_level_imports(source: str) -> set[str]:
    """Modules imported by top-level statements of ``source``."""
    found = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module or "")
    return found


def body_imports_and_task_calls(source: str, function: str) -> tuple[set[str], list[str]]:
    """Inside ``function``: the modules imported, and the ``steps.<name>`` functions called."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    imports, calls = set(), []
    for child in ast.walk(node):
        if isinstance(child, ast.Import):
            imports |= {alias.name for alias in child.names}
        elif isinstance(child, ast.ImportFrom):
            imports |= {f"{child.module}.{alias.name}" for alias in child.names}
        elif (
            isinstance(child, ast.Call)
            and isinstance(child.func, ast.Attribute)
            and isinstance(child.func.value, ast.Name)
            and child.func.value.id == "steps"
        ):
            calls.append(child.func.attr)
    return imports, calls


def load_component(module: str):
    return getattr(importlib.import_module(f"components.{module}"), module)


def test_every_component_module_is_known() -> None:
    modules = {p.stem for p in COMPONENTS_DIR.glob("*.py")} - NOT_COMPONENTS
    assert modules == set(COMPONENTS)


@pytest.mark.parametrize("module", sorted(COMPONENTS))
def test_module_level_imports_only_kfp(module: str) -> None:
    source = (COMPONENTS_DIR / f"{module}.py").read_text()
    assert module_level_imports(source) <= ALLOWED_MODULE_IMPORTS
    assert "kfp" in {name.split(".")[0] for name in module_level_imports(source)}


def test_images_module_uses_only_the_standard_library() -> None:
    assert module_level_imports((COMPONENTS_DIR / "images.py").read_text()) == {"importlib.metadata"}


def test_the_import_check_catches_a_heavy_import() -> None:
    bad = "import torch\nfrom kfp import dsl\nfrom twt.steps import steps\n"
    assert not module_level_imports(bad) <= ALLOWED_MODULE_IMPORTS


@pytest.mark.parametrize("module", sorted(COMPONENTS))
def test_body_imports_twt_steps_and_calls_the_function_of_its_name(module: str) -> None:
    imports, calls = body_imports_and_task_calls((COMPONENTS_DIR / f"{module}.py").read_text(), module)
    assert imports == {"twt.steps.steps"}
    assert calls == [module]
    assert callable(getattr(steps, module))


def test_the_body_check_catches_two_calls() -> None:
    source = "def f(x):\n    from twt.steps import steps\n    steps.gate(x)\n    steps.promote_student(x)\n"
    assert body_imports_and_task_calls(source, "f")[1] == ["gate", "promote_student"]


@pytest.mark.parametrize("module", sorted(COMPONENTS))
def test_component_runs_on_the_versioned_image_without_installing_kfp(module: str) -> None:
    container = load_component(module).component_spec.implementation.container
    kind = COMPONENTS[module]
    assert container.image == f"ghcr.io/twt-project/twt-{kind}:{twt.__version__}"
    assert container.image == {"cpu": CPU_IMAGE, "gpu": GPU_IMAGE}[kind]
    assert "pip install" not in " ".join(container.command + (container.args or []))


def test_version_is_the_package_version() -> None:
    from pipelines.release import pyproject_version

    assert VERSION == twt.__version__ == pyproject_version()


@pytest.mark.parametrize("module", sorted(COMPONENTS))
def test_every_input_is_documented(module: str) -> None:
    spec = load_component(module).component_spec
    assert spec.description
    undocumented = [name for name, item in spec.inputs.items() if not item.description]
    assert undocumented == []


def _types(module: str, direction: str) -> dict[str, str]:
    spec = load_component(module).component_spec
    return {name: item.type.split("@")[0] for name, item in getattr(spec, direction).items()}


def test_inputs_and_outputs_are_typed() -> None:
    assert _types("prepare_questions", "outputs") == {
        "train_questions": "system.Dataset",
        "eval_questions": "system.Dataset",
        "metrics": "system.Metrics",
    }
    assert _types("sample_teacher", "outputs") == {
        "candidates": "system.Dataset",
        "metrics": "system.Metrics",
    }
    assert _types("select_candidates", "inputs")["candidates"] == "system.Dataset"
    assert load_component("select_candidates").component_spec.inputs["candidates"].is_artifact_list
    assert _types("distill_stage", "outputs")["model"] == "system.Model"
    distill_inputs = load_component("distill_stage").component_spec.inputs
    assert distill_inputs["base_model"].optional and distill_inputs["compression_report"].optional
    assert _types("evaluate_students", "outputs") == {
        "evaluation": "system.Artifact",
        "metrics": "system.Metrics",
        "report": "system.Markdown",
    }
    assert _types("gate", "outputs") == {
        "verdict": "system.Artifact",
        "report": "system.Markdown",
        "passed": "Boolean",
        "student": "String",
    }
    assert _types("promote_student", "outputs") == {
        "promoted": "system.Artifact",
        "ref": "String",
        "uri": "String",
    }
    assert _types("explain_rejection", "outputs") == {"report": "system.Markdown"}


# --- twt.steps.steps without models -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> RunConfig:
    """configs/demo.yaml with few questions (the tiny models are never loaded here)."""
    data = yaml.safe_load(default_config_path().read_text())
    data["task"].update(train_questions=30, eval_questions=12)
    return RunConfig.model_validate(data)


def test_a_step_takes_its_slice_or_its_json_text_and_nothing_else(config: RunConfig) -> None:
    gate = slices.gate_settings(config)
    assert slices.parse_slice(slices.GateSettings, gate) is gate
    assert slices.parse_slice(slices.GateSettings, gate.model_dump_json()) == gate
    with pytest.raises(ConfigError, match=r"^settings\.gate\.min_accuracy: "):
        slices.parse_slice(slices.GateSettings, '{"gate": {"min_accuracy": 2}}')
    with pytest.raises(TypeError, match="GateSettings or its JSON text"):
        slices.parse_slice(slices.GateSettings, config)  # a whole configuration is cut by the caller


def test_prepare_questions_draws_disjoint_sets_and_keeps_identical_files(
    config: RunConfig, tmp_path: Path
) -> None:
    train, evalq = tmp_path / "q" / "train.jsonl", tmp_path / "q" / "eval.jsonl"
    seen = {}
    settings = slices.questions_settings(config).model_dump_json()  # what the component receives
    assert steps.prepare_questions(settings, train, evalq, log_metric=seen.__setitem__) == (30, 12)
    assert seen == {"train_questions": 30.0, "eval_questions": 12.0}
    train_rows, eval_rows = list(read_rows(train, Question)), list(read_rows(evalq, Question))
    assert not {q.question for q in train_rows} & {q.question for q in eval_rows}
    stamps = (train.stat().st_mtime_ns, evalq.stat().st_mtime_ns)
    steps.prepare_questions(settings, train, evalq)
    assert (train.stat().st_mtime_ns, evalq.stat().st_mtime_ns) == stamps
    assert steps.prepare_questions(settings, train, evalq, eval_questions=5) == (30, 5)


def test_prepare_questions_copies_question_files(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"id": "a", "question": "1+2"}\n')
    (tmp_path / "eval.jsonl").write_text('{"id": "b", "question": "3+4", "answer": "7"}\n')
    data = yaml.safe_load(default_config_path().read_text())
    data["task"] = {
        "kind": "files",
        "questions": str(tmp_path / "train.jsonl"),
        "eval": "file://" + str(tmp_path / "eval.jsonl"),
    }
    out = tmp_path / "out"
    settings = slices.questions_settings(parse_config(yaml.safe_dump(data)))
    assert steps.prepare_questions(settings, out / "t.jsonl", out / "e.jsonl") == (1, 1)
    assert [q.answer for q in read_rows(out / "e.jsonl", Question)] == ["7"]


def _candidates(directory: Path, teacher: str) -> Path:
    path = directory / teacher / "candidates.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("")
    return path


def test_candidate_files_in_configuration_order_across_task_directories(
    config: RunConfig, tmp_path: Path
) -> None:
    select = slices.select_settings(config)
    noisy = _candidates(tmp_path / "task-a", "teacher-noisy")
    large = _candidates(tmp_path / "task-b", "teacher-large")
    dirs = [tmp_path / "task-a", tmp_path / "task-b"]
    assert steps.candidate_files(select, dirs, ["teacher-noisy", "teacher-large"]) == [large, noisy]
    with pytest.raises(FileNotFoundError, match="teacher-verbose"):
        steps.candidate_files(select, dirs)  # default: every configured teacher
    with pytest.raises(ValueError, match="not in the configuration"):
        steps.candidate_files(select, dirs, ["teacher-huge"])
    _candidates(tmp_path / "task-c", "teacher-large")
    with pytest.raises(ValueError, match="more than once"):
        steps.candidate_files(select, [*dirs, tmp_path / "task-c"], ["teacher-large"])
    assert steps.candidate_files(select, [noisy, large]) == [noisy, large]  # files (twt dcrs): as given
    with pytest.raises(ValueError, match="unlike the other candidates"):
        steps.candidate_files(select, [*dirs, noisy])


def _metrics(tmp_path: Path) -> Path:
    def model(name: str, role: str, accuracy: float, tokens: float) -> dict:
        return {
            "name": name,
            "role": role,
            "accuracy": accuracy,
            "mean_output_tokens": tokens,
            "p50_output_tokens": tokens,
            "p95_output_tokens": tokens,
            "tokens_per_correct": tokens / accuracy if accuracy else None,
            "no_answer": 0,
            "seconds_per_question": 0.01,
        }

    models = {
        "stage3": model("stage3", "student", 0.6, 3.0),
        "stage2": model("stage2", "student", 0.8, 9.0),
        "stage1": model("stage1", "student", 0.9, 20.0),
        "student-base": model("student-base", "baseline", 0.2, 4.0),
    }
    path = tmp_path / "eval" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"questions": 10, "max_new_tokens": 96, "models": models}))
    (path.parent / "accuracy_vs_tokens.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return path


def _with_gate(config: RunConfig, **gate) -> RunConfig:
    return config.model_copy(update={"gate": config.gate.model_copy(update=gate)})


def test_gate_returns_the_boolean_and_student_and_writes_the_report(
    config: RunConfig, tmp_path: Path
) -> None:
    metrics = _metrics(tmp_path)
    permissive = _with_gate(config, min_accuracy=0.5, max_accuracy_drop=0.35, min_token_reduction=0.5)
    permissive = slices.gate_settings(permissive)
    passed, student = steps.gate(
        permissive, metrics.parent, tmp_path / "v.json", tmp_path / "r.md", embed_plot=True
    )
    assert (passed, student) == (True, "stage3")
    assert json.loads((tmp_path / "v.json").read_text())["student"] == "stage3"
    report = (tmp_path / "r.md").read_text()
    assert "## Gate: PASSED — student stage3" in report and "](data:image/png;base64," in report
    steps.gate(permissive, metrics, tmp_path / "v.json", tmp_path / "linked.md")
    assert "](accuracy_vs_tokens.png)" in (tmp_path / "linked.md").read_text()

    strict = _with_gate(config, min_accuracy=0.95)
    assert steps.gate(slices.gate_settings(strict), metrics, tmp_path / "v2.json") == (False, "")
    explain = slices.explain_settings(strict)
    text = steps.explain_rejection(explain, tmp_path / "v2.json", metrics, tmp_path / "why.md")
    assert text == (tmp_path / "why.md").read_text()
    assert text.startswith("# Not promoted: the gate did not pass")
    assert "no student passes the accuracy policy" in text and "`min_accuracy`: 0.95" in text
    assert "| stage1 | fail |" in text and "| stage3 | student |" in text


def test_promote_refuses_a_failed_verdict_and_needs_a_registry(config: RunConfig, tmp_path: Path) -> None:
    metrics = _metrics(tmp_path)
    steps.gate(slices.gate_settings(_with_gate(config, min_accuracy=0.95)), metrics, tmp_path / "v.json")
    promote = slices.promote_settings(config)
    with pytest.raises(ValueError, match="did not pass"):
        steps.promote_student(
            promote, tmp_path / "v.json", metrics, {}, tmp_path / "dcrs.json", str(tmp_path)
        )
    assert steps.registry_root(promote, "s3://twt-registry") == "s3://twt-registry"
    with pytest.raises(ValueError, match="no registry"):
        steps.registry_root(promote, "")
    registry = config.registry.model_copy(update={"uri": "s3://from-config"})
    assert steps.registry_root(slices.PromoteSettings(registry=registry), "") == "s3://from-config"


def test_metrics_are_logged_as_numbers_only() -> None:
    seen: dict = {}
    steps._log(seen.__setitem__, {"a": 1, "b": 0.5, "c": None, "d": True, "e": "x"})
    assert seen == {"a": 1.0, "b": 0.5}
    steps._log(None, {"a": 1})  # the local runner passes no logger
