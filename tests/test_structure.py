"""Structure rules checked on the source: the library imports no KFP and no pipeline layer, each settings
default is written once (in ``twt.core.schema``), no two library classes share a name, the library's floors
import downwards only, and no test module imports another."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from twt.core import schema

TWT = Path(__file__).resolve().parents[1] / "twt"
FORBIDDEN = ("kfp", "pipelines", "components")
# the console entry point is an adapter: ``twt demo`` hands the kfp.local runner (pipelines.local) in
ADAPTER_IMPORTS = {"app/cli.py": {"pipelines.local"}}


def _modules() -> list[Path]:
    return sorted(TWT.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _forbidden(path: Path) -> set[str]:
    bad = {m for m in _imports(path) if m.split(".")[0] in FORBIDDEN}
    return bad - ADAPTER_IMPORTS.get(path.relative_to(TWT).as_posix(), set())


def test_the_library_imports_no_kfp_and_no_pipeline_layer() -> None:
    offenders = {p.relative_to(TWT).as_posix(): sorted(_forbidden(p)) for p in _modules() if _forbidden(p)}
    assert offenders == {}


def test_the_import_check_catches_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "x.py"
    module.write_text("def f():\n    from pipelines.local import run_local\n    import kfp.dsl\n")
    assert {m for m in _imports(module) if m.split(".")[0] in FORBIDDEN} == {"pipelines.local", "kfp.dsl"}


def _settings_fields() -> dict[str, set[type]]:
    """Field name → the settings sections (``twt.core.schema``) that define it with a default."""
    fields: dict[str, set[type]] = defaultdict(set)
    for value in vars(schema).values():
        if isinstance(value, type) and issubclass(value, schema._Section) and value is not schema._Section:
            for name, info in value.model_fields.items():
                if not info.is_required():
                    fields[name].add(value)
    return fields


def _literal_defaults(path: Path) -> list[tuple[str, str, int]]:
    """(class, field, line) of every class-level field with a literal default in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)
                    and isinstance(item.value, ast.Constant | ast.UnaryOp)
                ):
                    found.append((node.name, item.target.id, item.lineno))
    return found


# library classes that mirror settings sections: their shared fields must take the schema's default
MIRRORS = {
    "SFTConfig": (schema.StageConfig, schema.TrainingConfig),
}
# library functions whose keywords mirror settings sections: (module, function) → sections
FUNCTION_MIRRORS = {
    ("training/distributed.py", "make_accelerator"): (schema.TrainingConfig,),
    ("training/distributed.py", "torchrun_command"): (schema.TrainingConfig,),
    ("training/jobs.py", "submit_and_wait"): (schema.TrainingConfig,),
    ("training/stages.py", "run_stage"): (schema.StageConfig,),
    ("registry/models.py", "publish"): (schema.RegistryConfig,),
    ("training/internalize.py", "run_internalize"): (schema.InternalizeConfig,),
}
# a keyword that shares a field's name but not its meaning, and why
NOT_MIRRORED = {
    ("SFTConfig", "device"): "None lets accelerate pick; the launcher turns the section's 'auto' into None",
}


def _repeats(owner: str, field: str, sections) -> bool:
    """Whether ``owner``'s literal default for ``field`` repeats a field of one of ``sections``."""
    return (owner, field) not in NOT_MIRRORED and any(field in section.model_fields for section in sections)


def _literal_keywords(path: Path, function: str) -> list[tuple[str, int]]:
    """(keyword, line) of every keyword of ``function`` in ``path`` whose default is a literal (not None)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
            return [
                (arg.arg, default.lineno)
                for arg, default in pairs
                if isinstance(default, ast.Constant | ast.UnaryOp)
                and not (isinstance(default, ast.Constant) and default.value is None)
            ]
    raise AssertionError(f"{path.name} has no function {function}")


def test_each_settings_default_is_written_once() -> None:
    """A library class mirroring a settings section writes no literal default for a field the section
    has: it takes ``schema_default(...)``, so the value lives only in twt/core/schema.py."""
    duplicates = []
    for path in _modules():
        if path.relative_to(TWT).as_posix() == "core/schema.py":
            continue
        for cls, field, line in _literal_defaults(path):
            if _repeats(cls, field, MIRRORS.get(cls, ())):
                duplicates.append(f"{path.relative_to(TWT)}:{line} {cls}.{field}")
    assert duplicates == []


def test_each_settings_default_is_written_once_in_function_keywords() -> None:
    """A library function mirroring a settings section takes ``schema_default(...)`` (or None: "not
    given") for every keyword the section has, never the literal again."""
    duplicates = []
    for (module, function), sections in FUNCTION_MIRRORS.items():
        for keyword, line in _literal_keywords(TWT / module, function):
            if _repeats(function, keyword, sections):
                duplicates.append(f"twt/{module}:{line} {function}({keyword}=...)")
    assert duplicates == []


def test_the_keyword_check_catches_a_repeated_default(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('def publish(root, version: str = "auto", *, tags=(), note=None, n=-1):\n    pass\n')
    assert [k for k, _ in _literal_keywords(module, "publish")] == ["version", "n"]


def test_mirrored_defaults_equal_the_schema() -> None:
    from twt.training.sft import SFTConfig

    mirrors = ((SFTConfig, schema.StageConfig),)
    for cls, section in mirrors:
        for name, field in cls.__dataclass_fields__.items():
            if name in section.model_fields and not section.model_fields[name].is_required():
                assert field.default == schema.schema_default(section, name), f"{cls.__name__}.{name}"


def test_no_two_library_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in _modules():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(path.relative_to(TWT).as_posix())
    assert {name: files for name, files in where.items() if len(files) > 1} == {}


def test_settings_sections_are_pydantic_models() -> None:
    assert issubclass(schema.DCRSConfig, BaseModel)
    import twt.method.dcrs
    import twt.method.gate

    assert twt.method.dcrs.DCRSConfig is schema.DCRSConfig and twt.method.gate.GateConfig is schema.GateConfig
    assert _settings_fields()["max_per_question"] == {schema.DCRSConfig}


def test_the_readme_settings_section_is_generated_from_the_schema() -> None:
    from twt.app.settings_docs import README, readme_section, reference_markdown

    assert readme_section(README.read_text(encoding="utf-8")) == reference_markdown(), (
        "README.md's settings section is stale: run `python -m twt.app.settings_docs --write`"
    )
    for name, info in schema.GateConfig.model_fields.items():
        assert f"`gate.{name}`" in reference_markdown() and info.description in reference_markdown()


def test_twt_distill_writes_the_lineage_the_pipeline_step_writes(tmp_path) -> None:
    """``twt distill`` goes through ``twt.steps.steps.distill_stage``: the model records the run and
    teachers."""
    import json

    from twt.app.cli import main
    from twt.core.load import data_dir, default_config_path, load_config
    from twt.core.records import DistillRow, write_rows

    rows = tmp_path / "rows.jsonl"
    write_rows(
        rows,
        [
            DistillRow(
                id=f"q{i}",
                question=f"{i}+1",
                reasoning=f"{i}+1={(i + 1) % 10}",
                answer=str((i + 1) % 10),
                source="t#0",
            )
            for i in range(8)
        ],
    )
    out = tmp_path / "stage1"
    base = data_dir() / "tiny" / "student-base"
    argv = ["distill", "--stage", "1", "--data", str(rows), "--base", str(base), "--out", str(out)]
    assert main([*argv, "--max-updates", "1", "--device", "cpu", "--quiet"]) == 0
    lineage = json.loads((out / "twt.json").read_text())
    config = load_config(default_config_path())
    assert lineage["run"] == config.name
    assert [t["name"] for t in lineage["teachers"]] == config.teacher_names


# --- floors: imports point down only, and no circle ---------------------------------------------------------

# a floor imports its own package and the floors of lower rank; equal ranks do not import each other
FLOOR_RANKS = {"core": 0, "method": 1, "training": 2, "embedded": 3, "registry": 3, "steps": 4, "app": 5}


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the modules of the same tree it imports, lazy imports inside functions included."""
    paths = sorted(root.rglob("*.py"))
    modules = {_module_name(root, p) for p in paths}
    graph = {}
    for path in paths:
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        name = _module_name(root, path)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _floor(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import that does not point down (or within a's own floor)."""
    bad = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            here, there = _floor(module), _floor(target)
            if there is None or here == there:
                continue  # the package itself (its version) or the same floor
            if here not in FLOOR_RANKS or FLOOR_RANKS[there] >= FLOOR_RANKS[here]:
                bad.append(f"{module} -> {target}")
    return bad


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_library_module_lives_on_a_floor() -> None:
    strays = [m for m in _import_graph(TWT) if m != "twt" and _floor(m) not in FLOOR_RANKS]
    assert strays == []


def test_imports_point_down_the_floors() -> None:
    assert _upward_imports(_import_graph(TWT)) == []


def test_no_import_circle() -> None:
    assert _circles(_import_graph(TWT)) == []


def test_the_floor_checks_catch_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    root = tmp_path / "twt"
    for package in ("core", "method", "steps"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "core" / "schema.py").write_text("def f():\n    from twt.steps import run\n")  # lazy, upward
    (root / "steps" / "run.py").write_text("from twt.core import schema\n")
    (root / "method" / "a.py").write_text("from twt.method.b import x\n")
    (root / "method" / "b.py").write_text("import twt.method.a\nx = 1\n")
    graph = _import_graph(root)
    assert _upward_imports(graph) == ["twt.core.schema -> twt.steps", "twt.core.schema -> twt.steps.run"]
    assert _circles(graph) == [["twt.core.schema", "twt.steps.run"], ["twt.method.a", "twt.method.b"]]


# --- tests: test modules share helpers through tests/conftest.py and tests/helpers.py, never each other ----

TESTS = Path(__file__).resolve().parent


def _test_module_imports(tests: Path) -> dict[str, list[str]]:
    """Test module → the ``test_*`` modules it imports (lazy imports included)."""
    found = {}
    for path in sorted(tests.glob("test_*.py")):
        imported = sorted(m for m in _imports(path) if m.split(".")[0].startswith("test_"))
        if imported:
            found[path.name] = imported
    return found


def test_no_test_module_imports_another() -> None:
    assert _test_module_imports(TESTS) == {}


def test_the_test_import_check_catches_one(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("from helpers import x\nfrom test_b import y\n")
    (tmp_path / "test_c.py").write_text("def test():\n    import test_a\n")
    (tmp_path / "helpers.py").write_text("from test_b import y\n")  # not a test module: not checked
    assert _test_module_imports(tmp_path) == {"test_a.py": ["test_b"], "test_c.py": ["test_a"]}
