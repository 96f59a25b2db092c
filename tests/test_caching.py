"""KFP caching reruns only what changed: the pipeline twice through kfp.local with caching on, the second
time with only a gate threshold changed. kfp.local's own records decide what ran: its log lines
"Task <name> cache hit" / "finished with status" (collected by ``pipelines.local.RunnerRecords``) and the
task directories each run wrote (a cached task writes none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from twt.core.load import default_config_path

UPSTREAM = {
    "prepare-questions",
    "sample-teacher",
    "select-candidates",
    "distill-stage",
    "compress-reasoning",
    "distill-stage-2",
    "distill-stage-3",
    "evaluate-students",
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pipelines.local import run_local

    data = yaml.safe_load(default_config_path().read_text())
    data["task"].update(train_questions=12, eval_questions=8)
    data["teachers"] = data["teachers"][:2]
    for teacher in data["teachers"]:
        teacher.update(k=1, max_new_tokens=40)
    data["compression"]["teacher"] = data["teachers"][0]["name"]
    data["stages"] = {"common": {"updates": 2, "batch_size": 4, "max_length": 96}}
    data["evaluation"] = {"max_new_tokens": 40, "baselines": ["stage1"]}
    data["gate"] = {"min_accuracy": 0.0, "max_accuracy_drop": None, "min_token_reduction": None}
    root = tmp_path_factory.mktemp("cache")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(data))

    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        env.setenv("TOKENIZERS_PARALLELISM", "false")
        runs = []
        for overrides in ({}, {"gate_min_accuracy": 1.0}):  # only a gate threshold changes
            registry = str(root / "registry")
            result = run_local(config, root / "kfp", registry_uri=registry, overrides=overrides)
            written = {p.name for p in Path(result["run_dir"]).iterdir() if p.is_dir()}
            runs.append({"result": result, "hits": set(result["cache_hits"]), "written": written})
    return {"runs": runs, "root": root}


def _base(name: str) -> str:
    """A ParallelFor iteration's task name without its index (sample-teacher-0 → sample-teacher)."""
    return re.sub(r"-\d+$", "", name) if name.startswith("sample-teacher") else name


def test_first_run_executes_everything_and_promotes(two_runs: dict) -> None:
    first = two_runs["runs"][0]
    assert first["hits"] == set()
    assert first["result"]["tasks"]["gate"] == "SUCCESS"
    assert "promoted" in first["result"]
    assert {"gate", "promote-student"} <= first["written"]


def test_changing_a_gate_threshold_reruns_only_the_gate_onward(two_runs: dict) -> None:
    second = two_runs["runs"][1]
    hit = {_base(name) for name in second["hits"]}
    assert hit == UPSTREAM, f"cache hits: {sorted(second['hits'])}"
    # the gate ran again (it has new outputs in this run) and so did its branch: the rejection report
    assert {"gate", "explain-rejection"} <= second["written"]
    assert not (UPSTREAM & {_base(name) for name in second["written"]})
    assert "rejected" in second["result"] and "promoted" not in second["result"]
    ran = {_base(name) for name in second["result"]["tasks"]}
    assert {"gate", "explain-rejection"} <= ran and not (ran & UPSTREAM)


def test_a_cached_output_is_found_through_the_cache_entry(two_runs: dict) -> None:
    from pipelines.local import task_outputs

    first, second = (run["result"] for run in two_runs["runs"])
    outputs = task_outputs(second)
    evaluation = Path(outputs("evaluate-students", "evaluation"))  # cached: run 1's artifact
    assert evaluation.parent.parent == Path(first["run_dir"]) and (evaluation / "metrics.json").is_file()
    assert Path(outputs("gate", "verdict")).parent.parent == Path(second["run_dir"])  # executed again


def test_a_metrics_artifact_gets_its_file_so_its_cache_entry_stays_valid(tmp_path: Path) -> None:
    """kfp.local takes a cache entry whose artifact file is missing for a miss; a component never writes its
    Metrics file (KFP keeps the numbers in metadata), so ``run_local`` writes it from the entry."""
    import json

    from pipelines.local import write_metrics_files

    metrics, model = tmp_path / "task" / "metrics", tmp_path / "task" / "model"
    entry = {
        "metrics": {"schema_title": "system.Metrics", "uri": str(metrics), "metadata": {"rows": 3.0}},
        "model": {"schema_title": "system.Model", "uri": str(model), "metadata": {}},
        "passed": True,
    }
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "key.json").write_text(json.dumps(entry))
    assert write_metrics_files(tmp_path / "cache") == [metrics]
    assert json.loads(metrics.read_text()) == {"rows": 3.0} and not model.exists()
    assert write_metrics_files(tmp_path / "cache") == []  # there already: left as it is
