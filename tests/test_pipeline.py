"""The twt-distillation pipeline: the compiled spec, versioned compile/check/upload/run, and the same DAG
run end to end with kfp.local on the tiny models.

    python -m pytest tests/test_pipeline.py -q

The local run (module fixture ``local_run``: ``twt demo``, the README's first command) uses the small
settings: 40 training questions, 2 samples per teacher, one epoch per stage, a gate that lets any student
through. It takes about 100 s on 2 cores (OMP_NUM_THREADS=1), so it is not marked slow. (No
``from __future__ import annotations`` here: KFP reads the test pipeline's annotations as types.)
"""

import builtins
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from components.images import VERSION
from pipelines import release
from pipelines.__main__ import main as pipelines_main
from pipelines.distillation import SECRET_KEYS, TEACHER_KEY_ENVS
from twt.core.load import default_config_path

ROOT = Path(__file__).resolve().parents[1]
# Credentials present in the compiling environment: none may reach the spec.
FAKE_CREDENTIALS = {
    "TWT_S3_ACCESS_KEY": "minioadmin",
    "TWT_S3_SECRET_KEY": "minioadmin-secret-4242",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-9f8e7d",
    "HF_TOKEN": "hf_fAkEtOkEn1234567890",
    "TEACHER_API_KEY": "sk-test-0123456789abcdef",
    "OPENAI_API_KEY": "sk-openai-fedcba9876543210",
}
GPU_TASKS = {
    "sample-teacher",
    "distill-stage",
    "distill-stage-2",
    "distill-stage-3",
    "compress-reasoning",
    "evaluate-students",
}
CPU_TASKS = {
    "preflight",
    "prepare-questions",
    "select-candidates",
    "gate",
    "promote-student",
    "explain-rejection",
}
# the placement parameters' prefix of each GPU task (the training stages: gpu_*)
POOL = {"sample-teacher": "sample", "compress-reasoning": "compress", "evaluate-students": "eval"}
# every task that can read or write s3:// (questions, models, checkpoints, training jobs, the registry)
S3_TASKS = GPU_TASKS | {
    "resolve-settings",
    "preflight",
    "prepare-questions",
    "select-candidates",
    "promote-student",
}
SECRET_PARAMETERS = {"minio_secret", "hf_token_secret", "teacher_keys_secret", "model_registry_secret"}


# --- the compiled spec -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled") / "twt-distillation.yaml"
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_CREDENTIALS.items():
            env.setenv(name, value)
        return release.compile_pipeline(out)


@pytest.fixture(scope="module")
def spec(compiled: Path) -> dict:
    return release.load_spec(compiled)


def dag_tasks(spec: dict) -> dict[str, tuple[str, dict]]:
    """Every task of the root DAG and of the sub-DAGs: name -> (the DAG's component, the task)."""
    found = {name: ("root", task) for name, task in spec["root"]["dag"]["tasks"].items()}
    for component, body in spec["components"].items():
        for name, task in body.get("dag", {}).get("tasks", {}).items():
            found[name] = (component, task)
    return found


def executor(spec: dict, task_name: str) -> dict:
    component = dag_tasks(spec)[task_name][1]["componentRef"]["name"]
    label = spec["components"][component]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def kubernetes_config(spec: dict, task_name: str) -> dict:
    component = dag_tasks(spec)[task_name][1]["componentRef"]["name"]
    label = spec["components"][component]["executorLabel"]
    return spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label]


def parameter(value: str) -> str:
    """The pipeline parameter a placeholder or input name refers to (``pipelinechannel--`` dropped)."""
    match = re.fullmatch(r"\{\{\$\.inputs\.parameters\['(.+)'\]\}\}", value)
    return (match.group(1) if match else value).removeprefix("pipelinechannel--")


def test_every_box_is_a_task(spec: dict) -> None:
    assert set(dag_tasks(spec)) >= GPU_TASKS | CPU_TASKS
    assert spec["pipelineInfo"]["name"] == "twt-distillation"


def test_sampling_loops_over_the_teacher_parameter_and_dcrs_collects(spec: dict) -> None:
    component, sample = dag_tasks(spec)["sample-teacher"]
    loop_task_name = next(
        n for n, (_, t) in dag_tasks(spec).items() if t["componentRef"]["name"] == component
    )
    loop = spec["root"]["dag"]["tasks"][loop_task_name]
    # the loop runs over the teachers' settings, resolved from the typed parameter by the first tasks
    items = loop["parameterIterator"]["items"]["inputParameter"]
    assert items == "pipelinechannel--teacher-settings-Output"
    assert loop["inputs"]["parameters"][items]["taskOutputParameter"]["producerTask"] == "teacher-settings"
    item = loop["parameterIterator"]["itemInput"]
    assert sample["inputs"]["parameters"]["settings"]["componentInputParameter"] == item
    collected = spec["root"]["dag"]["tasks"]["select-candidates"]["inputs"]["artifacts"]["candidates"]
    assert collected["taskOutputArtifact"]["producerTask"] == loop_task_name
    assert spec["components"]["comp-select-candidates"]["inputDefinitions"]["artifacts"]["candidates"][
        "isArtifactList"
    ]
    # KFP 2.17 does not route resource-only parameters into the loop by itself (see _on_gpu)
    loop_inputs = spec["components"][component]["inputDefinitions"]["parameters"]
    for name in ("sample_accelerator_type", "sample_accelerator_limit", "sample_cpu", "sample_memory"):
        assert f"pipelinechannel--{name}" in loop_inputs


def test_the_gate_boolean_chooses_promotion_or_the_rejection_report(spec: dict) -> None:
    tasks = dag_tasks(spec)
    assert spec["components"]["comp-gate"]["outputDefinitions"]["parameters"]["passed"]["parameterType"] == (
        "BOOLEAN"
    )
    triggers, parents = {}, set()
    for name in ("promote-student", "explain-rejection"):
        branch = tasks[name][0]
        parent, branch_task = next((c, t) for c, t in tasks.values() if t["componentRef"]["name"] == branch)
        triggers[name] = branch_task["triggerPolicy"]["condition"]
        parents.add(parent)
    (parent,) = parents  # If and Else are branches of one group, fed the gate's boolean at the root
    group = next(t for t in spec["root"]["dag"]["tasks"].values() if t["componentRef"]["name"] == parent)
    wired = group["inputs"]["parameters"]["pipelinechannel--gate-passed"]["taskOutputParameter"]
    assert wired == {"outputParameterKey": "passed", "producerTask": "gate"}
    assert triggers["promote-student"] == "inputs.parameter_values['pipelinechannel--gate-passed'] == true"
    assert (
        triggers["explain-rejection"] == "!(inputs.parameter_values['pipelinechannel--gate-passed'] == true)"
    )


def test_gpu_tasks_take_accelerators_and_resources_from_parameters(spec: dict) -> None:
    for name in GPU_TASKS:
        resources = executor(spec, name)["resources"]
        prefix = POOL.get(name, "gpu")  # per-step placement (pipelines.layout); training: gpu_*
        assert parameter(resources["accelerator"]["resourceType"]) == f"{prefix}_accelerator_type", name
        assert parameter(resources["accelerator"]["resourceCount"]) == f"{prefix}_accelerator_limit", name
        assert parameter(resources["resourceCpuRequest"]) == f"{prefix}_cpu", name
        assert parameter(resources["resourceMemoryRequest"]) == f"{prefix}_memory", name
    for name in CPU_TASKS:
        resources = executor(spec, name)["resources"]
        assert "accelerator" not in resources, name
        assert float(resources["resourceCpuRequest"]) >= 1 and resources["resourceMemoryRequest"], name


def test_gpu_node_selector_and_tolerations_are_parameters(spec: dict) -> None:
    for name in GPU_TASKS:
        config = kubernetes_config(spec, name)
        prefix = POOL.get(name, "gpu")  # a step with no accelerator can leave the GPU pool on its own
        selector = config["nodeSelector"]
        assert set(selector) == {"nodeSelectorJson"}, name  # no constant labels
        assert parameter(selector["nodeSelectorJson"]["componentInputParameter"]) == f"{prefix}_node_selector"
        assert [parameter(t["tolerationJson"]["componentInputParameter"]) for t in config["tolerations"]] == [
            f"{prefix}_tolerations"
        ]
    for name in CPU_TASKS:
        config = kubernetes_config(spec, name)
        assert "nodeSelector" not in config and "tolerations" not in config, name
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    for prefix in ("gpu", *POOL.values()):
        assert defaults[f"{prefix}_node_selector"]["defaultValue"] == {"nvidia.com/gpu.present": "true"}
        # GPU-operator clusters taint nvidia.com/gpu with other values than GKE's "present": Exists fits all
        assert defaults[f"{prefix}_tolerations"]["defaultValue"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]


def _demo_with(**sections):
    from twt.core.load import parse_config

    data = yaml.safe_load(default_config_path().read_text())
    data.update(sections)
    return parse_config(yaml.safe_dump(data), base_dir=default_config_path().parent)


def test_steps_without_an_accelerator_leave_the_gpu_pool(spec: dict) -> None:
    """HTTP teachers: sampling and compression ask for no GPU, no GPU node, no 8 CPUs/64Gi. A stage that
    trains in a TrainJob only submits and waits: its pod holds no GPU either."""
    from pipelines.layout import accelerator_arguments

    parameters = spec["root"]["inputDefinitions"]["parameters"]
    demo = yaml.safe_load(default_config_path().read_text())
    served = [
        {**t, "backend": "openai", "base_url": "http://vllm.twt.svc:8000/v1", "model": "served"}
        for t in demo["teachers"]
    ]
    arguments = accelerator_arguments(_demo_with(teachers=served))
    assert set(arguments) <= set(parameters)  # every one is a pipeline parameter
    for step in ("sample", "compress"):
        assert arguments[f"{step}_accelerator_limit"] == 0
        assert arguments[f"{step}_node_selector"] == {} and arguments[f"{step}_tolerations"] == []
        assert float(arguments[f"{step}_cpu"]) < float(parameters[f"{step}_cpu"]["defaultValue"])
    assert not any(name.startswith(("gpu_", "eval_")) for name in arguments)
    distributed = {"processes": 4, "device": "cuda", "engine": "trainjob", "checkpoints": "s3://twt/ckpt"}
    arguments = accelerator_arguments(_demo_with(training=distributed))
    assert arguments["gpu_accelerator_limit"] == 0 and arguments["gpu_node_selector"] == {}
    assert arguments["gpu_tolerations"] == [] and set(arguments) <= set(parameters)
    assert not any(name.startswith(("sample_", "compress_")) for name in arguments)
    assert accelerator_arguments(_demo_with()) == {}


def test_every_task_that_can_touch_s3_gets_the_endpoint_and_the_keys(spec: dict) -> None:
    minio = SECRET_KEYS["minio"]
    for name in S3_TASKS:
        (secret,) = [
            s
            for s in kubernetes_config(spec, name).get("secretAsEnv", [])
            if parameter(s["secretNameParameter"]["componentInputParameter"]) == "minio_secret"
        ]
        assert {pair["secretKey"]: pair["envVar"] for pair in secret["keyToEnv"]} == minio, name
        endpoint = dag_tasks(spec)[name][1]["inputs"]["parameters"]["s3_endpoint"]
        assert parameter(endpoint["componentInputParameter"]) == "s3_endpoint", name
    for name in ("teacher-settings", "gate", "explain-rejection"):  # settings and local artifacts only
        assert "secretAsEnv" not in kubernetes_config(spec, name), name


def test_model_registry_registration_names_the_runs_object_store_secret(spec: dict) -> None:
    # Kubeflow Model Registry records the artifact's storage_key: the Secret this run reads the store with
    key = dag_tasks(spec)["promote-student"][1]["inputs"]["parameters"]["storage_key"]
    assert parameter(key["componentInputParameter"]) == "minio_secret"


def _upstream(spec: dict, name: str) -> set[str]:
    """Every task ``name`` waits for, through sub-DAGs (a task inside a loop or branch waits for what its
    group waits for)."""
    tasks = dag_tasks(spec)
    groups = {t["componentRef"]["name"]: n for n, (_, t) in tasks.items()}
    found, todo = set(), [name]
    while todo:
        parent, task = tasks[todo.pop()]
        waits = list(task.get("dependentTasks", []))
        if parent != "root":
            waits.append(groups[parent])
        for other in waits:
            if other not in found:
                found.add(other)
                todo.append(other)
    return found


def test_preflight_comes_before_any_gpu_work(spec: dict) -> None:
    tasks = dag_tasks(spec)
    assert _upstream(spec, "preflight") == {"resolve-settings"}
    for name in GPU_TASKS | {"prepare-questions", "select-candidates"}:
        assert "preflight" in _upstream(spec, name), name
    assert not tasks["preflight"][1]["cachingOptions"].get("enableCache")  # the cluster may have changed
    assert "accelerator" not in executor(spec, "preflight")["resources"]
    config = kubernetes_config(spec, "preflight")
    secrets = {parameter(s["secretNameParameter"]["componentInputParameter"]) for s in config["secretAsEnv"]}
    assert secrets == {"minio_secret", "teacher_keys_secret"}


def test_serving_is_an_optional_step_after_promotion_off_by_default(spec: dict) -> None:
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["serve_student"]["parameterType"] == "BOOLEAN"
    assert parameters["serve_student"]["defaultValue"] is False
    assert parameters["serving_runtime"]["defaultValue"] == "twt-vllm"
    tasks = dag_tasks(spec)
    branch = tasks["serve-student"][0]
    (condition,) = [t for c, t in tasks.values() if t["componentRef"]["name"] == branch]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--serve_student'] == true"
    )
    assert "promote-student" in _upstream(spec, "serve-student")
    served = tasks["serve-student"][1]
    promoted = served["inputs"]["artifacts"]["promoted"]["componentInputArtifact"]
    assert parameter(promoted) == "promote-student-promoted"  # routed into the branch from promotion
    assert not served["cachingOptions"].get("enableCache")
    assert parameter(served["inputs"]["parameters"]["node_selector"]["componentInputParameter"]) == (
        "eval_node_selector"
    )


def test_the_stages_read_the_run_id_outside_the_cache_key(spec: dict) -> None:
    """Checkpoints and training-job names are keyed by the KFP run id, which the stages read from their
    pod's ``pipeline/runid`` label: not an input (KFP's cache key holds the inputs), so caching works."""
    for name in ("distill-stage", "distill-stage-2", "distill-stage-3"):
        (env,) = kubernetes_config(spec, name)["fieldPathAsEnv"]
        assert env == {"name": "KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"}
        inputs = dag_tasks(spec)[name][1]["inputs"]["parameters"]
        assert "{{$.pipeline_job_uuid}}" not in json.dumps(inputs), name
        assert dag_tasks(spec)[name][1]["cachingOptions"]["enableCache"] is True


def test_secrets_are_named_by_parameters(spec: dict) -> None:
    used: dict[str, set[str]] = {}
    for name in GPU_TASKS | CPU_TASKS:
        for secret in kubernetes_config(spec, name).get("secretAsEnv", []):
            assert "secretName" not in secret, name  # a constant name would be fixed at compile time
            which = parameter(secret["secretNameParameter"]["componentInputParameter"])
            assert which in SECRET_PARAMETERS, name
            used.setdefault(which, set()).add(name)
            env = {pair["envVar"] for pair in secret["keyToEnv"]}
            assert env <= {v for keys in SECRET_KEYS.values() for v in keys.values()}
    assert used["minio_secret"] == S3_TASKS - {"resolve-settings"}
    assert used["teacher_keys_secret"] == {
        "preflight",
        "sample-teacher",
        "compress-reasoning",
        "evaluate-students",
    }
    assert used["hf_token_secret"] >= GPU_TASKS
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["minio_secret"]["defaultValue"] == "twt-minio-credentials"  # manifests/base
    assert set(TEACHER_KEY_ENVS) == set(SECRET_KEYS["teacher_keys"].values())


def test_no_credential_anywhere(compiled: Path) -> None:
    text = compiled.read_text()
    for value in FAKE_CREDENTIALS.values():
        assert value not in text
    assert "minioadmin" not in text and "CHANGE_ME" not in text


def test_retries_on_sampling_and_training(spec: dict) -> None:
    tasks = dag_tasks(spec)
    for name in (
        "sample-teacher",
        "distill-stage",
        "distill-stage-2",
        "distill-stage-3",
        "compress-reasoning",
    ):
        assert tasks[name][1]["retryPolicy"]["maxRetryCount"] >= 2, name
    for name in ("distill-stage", "distill-stage-2", "distill-stage-3"):  # a retry resumes from checkpoints
        policy = tasks[name][1]["retryPolicy"]
        assert policy["backoffDuration"] != "0s" and float(policy["backoffFactor"]) > 1, name
    for name in ("gate", "promote-student"):
        assert "retryPolicy" not in tasks[name][1], name


def test_caching_is_chosen_per_task(spec: dict) -> None:
    tasks = dag_tasks(spec)
    for name in ("promote-student", "explain-rejection"):
        assert not tasks[name][1]["cachingOptions"].get("enableCache"), name
    for name in (
        "prepare-questions",
        "sample-teacher",
        "select-candidates",
        "distill-stage",
        "evaluate-students",
    ):
        assert tasks[name][1]["cachingOptions"]["enableCache"] is True, name


def test_images_are_versioned_and_tasks_run_non_root(spec: dict) -> None:
    for name in GPU_TASKS | CPU_TASKS:
        kind = "gpu" if name in GPU_TASKS else "cpu"
        assert executor(spec, name)["image"] == f"ghcr.io/twt-project/twt-{kind}:{VERSION}", name
        security = kubernetes_config(spec, name)["securityContext"]
        assert security["runAsNonRoot"] is True and int(security["runAsUser"]) == 10001
        mounts = {m["mountPath"] for m in kubernetes_config(spec, name)["emptyDirMounts"]}
        assert "/s3" in mounts  # the launcher's local copies of s3:// artifacts, writable by uid 10001


def test_the_reports_are_markdown_artifacts_in_the_pipeline_root_the_namespace_chooses(spec: dict) -> None:
    """No root pinned to twt's bucket (which KFP 2.17's UI cannot read in a Profile namespace): the
    namespace's kfp-launcher decides, and every report is a Markdown output the UI renders."""
    assert "defaultPipelineRoot" not in spec
    markdown = {}
    for name, (_, task) in dag_tasks(spec).items():
        outputs = spec["components"][task["componentRef"]["name"]].get("outputDefinitions", {})
        kinds = {
            out: body["artifactType"]["schemaTitle"] for out, body in outputs.get("artifacts", {}).items()
        }
        markdown[name] = {out for out, kind in kinds.items() if kind == "system.Markdown"}
    assert markdown["select-candidates"] == {"summary"} and markdown["compress-reasoning"] == {"summary"}
    for name in ("evaluate-students", "gate", "explain-rejection", "preflight"):
        assert markdown[name] == {"report"}, name


def test_every_parameter_is_documented(spec: dict) -> None:
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert len(parameters) >= 13
    missing = [name for name, body in parameters.items() if len(body.get("description", "")) < 20]
    assert missing == []


def test_demo_defaults_make_a_runnable_pipeline(spec: dict) -> None:
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["config_override"]["defaultValue"] == ""
    demo = yaml.safe_load(default_config_path().read_text())
    assert [t["name"] for t in defaults["teachers"]["defaultValue"]] == [t["name"] for t in demo["teachers"]]
    assert defaults["teachers"]["parameterType"] == "LIST"
    assert defaults["dcrs_quality_threshold"]["parameterType"] == "NUMBER_DOUBLE"
    assert defaults["gate_min_accuracy"]["defaultValue"] == demo["gate"]["min_accuracy"]


# --- versioned compile, check, upload, run -----------------------------------------------------------------


def _compile_in_subprocess(out: Path, seed: str) -> bytes:
    code = "import sys; from pipelines.release import compile_pipeline; compile_pipeline(sys.argv[1])"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, env=env, check=True, timeout=120)
    return out.read_bytes()


def test_compile_is_byte_identical_across_processes(compiled: Path, tmp_path: Path) -> None:
    # different hash seeds: KFP's own header printed dict defaults in hash order before normalising
    first = _compile_in_subprocess(tmp_path / "a.yaml", "1")
    second = _compile_in_subprocess(tmp_path / "b.yaml", "2")
    assert first == second == compiled.read_bytes()
    header = first.decode().split("\ncomponents:\n")[0]
    assert all(line.startswith("#") for line in header.splitlines())


def test_default_package_path_is_versioned() -> None:
    assert release.package_path() == ROOT / "dist" / f"twt-distillation-{VERSION}.yaml"


def _retagged(compiled: Path, tmp_path: Path, old: str, new: str) -> Path:
    bad = tmp_path / "bad.yaml"
    text = compiled.read_text()
    assert old in text
    bad.write_text(text.replace(old, new, 1))
    return bad


def test_check_fails_on_a_mismatched_tag(compiled: Path, tmp_path: Path) -> None:
    assert set(release.check_images(compiled).values()) == {
        f"ghcr.io/twt-project/twt-cpu:{VERSION}",
        f"ghcr.io/twt-project/twt-gpu:{VERSION}",
    }
    bad = _retagged(compiled, tmp_path, f"twt-gpu:{VERSION}", "twt-gpu:9.9.9")
    with pytest.raises(release.ReleaseError, match=r"twt-gpu:9\.9\.9"):
        release.check_images(bad)
    other = _retagged(compiled, tmp_path, f"ghcr.io/twt-project/twt-cpu:{VERSION}", f"python:{VERSION}")
    with pytest.raises(release.ReleaseError, match="do not match"):
        release.check_images(other)
    with pytest.raises(release.ReleaseError, match=r"pyproject\.toml says"):
        release.check_images(compiled, version="9.9.9")  # an installed package older than the tree


def test_cli_compile_and_check(tmp_path: Path, compiled: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.yaml"
    assert pipelines_main(["compile", "--out", str(out)]) == 0
    assert out.read_bytes() == compiled.read_bytes()
    assert pipelines_main(["check", str(out)]) == 0
    bad = _retagged(compiled, tmp_path, f"twt-cpu:{VERSION}", "twt-cpu:0.0.1")
    capsys.readouterr()
    assert pipelines_main(["check", str(bad)]) == 2
    assert "image tags do not match" in capsys.readouterr().err


def test_git_sha_names_the_commit() -> None:
    assert re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", release.git_sha())


def test_run_arguments_refuse_unknown_parameters_and_unpassed_keys(tmp_path: Path) -> None:
    config = ROOT / "configs" / "demo.yaml"
    with pytest.raises(release.ReleaseError, match="no pipeline parameter 'gpu_count'"):
        release.run_arguments(config, overrides={"gpu_count": 2})
    data = yaml.safe_load(config.read_text())
    data["teachers"].append(
        {"name": "api", "model": "m", "backend": "openai", "base_url": "http://x/v1", "api_key_env": "MY_KEY"}
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(release.ReleaseError, match="MY_KEY"):
        release.run_arguments(tmp_path / "c.yaml")
    assert release.parse_value('{"a": "b"}') == {"a": "b"} and release.parse_value("16Gi") == "16Gi"


# --- the same DAG locally ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_run(small_config: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``twt demo`` (what ``make demo`` runs: the pipeline through kfp.local) on the small configuration."""
    import contextlib
    import io

    from twt.app.cli import main

    work = tmp_path_factory.mktemp("kfp-local") / "demo"
    print_before, printed = builtins.print, io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(printed):
        env.setenv("OMP_NUM_THREADS", "1")  # the subprocesses share 2 cores with other work
        env.setenv("TOKENIZERS_PARALLELISM", "false")
        started = time.perf_counter()
        assert main(["demo", "--config", str(small_config), "--workdir", str(work)]) == 0
    summary = json.loads((work / "demo.json").read_text())
    result = {
        "work": work,
        "summary": summary,
        "printed": printed.getvalue(),
        "run_dir": summary["kfp_run"],
        "promoted": summary["promoted"],
        "registry_uri": str(work / "registry"),
        "wall_s": round(time.perf_counter() - started, 1),
        "print_restored": builtins.print is print_before,
    }
    print(f"twt demo through kfp.local: {result['wall_s']} s")
    return result


def test_the_installed_twt_command_finds_the_pipeline_outside_the_source_tree(tmp_path: Path) -> None:
    """``make demo`` runs the console script from anywhere: pipelines/ and components/ are installed too."""
    code = "import components.gate, pipelines.local, twt.app.demo; print(pipelines.local.__name__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pipelines.local"


def test_the_demo_runs_the_pipeline_by_default(local_run: dict) -> None:
    summary, printed = local_run["summary"], local_run["printed"]
    assert summary["runner"] == "kfp" and summary["trained_tiny_models"] == []
    assert Path(summary["kfp_run"]).is_relative_to(local_run["work"] / "kfp")
    shown = ("acc. reasoning", "DCRS", "held-out evaluation", "gate: PROMOTE stage", "students considered")
    for expected in (*shown, "twt-student@1"):
        assert expected in printed, expected
    assert "pulled back and verified every checksum" in printed
    # the tasks' own chatter goes to the log, not to the console
    log = (local_run["work"] / "kfp" / "tasks.log").read_text()
    assert "executor" in log.lower() and "executor" not in printed.lower()
    assert set(summary["evaluation"]) >= {"stage1", "stage2", "stage3", "student-base"}


def test_local_run_promotes_and_the_model_pulls_back_verified(local_run: dict, tmp_path: Path) -> None:
    from twt.registry import models as registry

    promoted = local_run["promoted"]
    assert promoted["verified"] and promoted["ref"] == "twt-student@1"
    run_dir = Path(local_run["run_dir"])
    task = {"stage1": "distill-stage", "stage2": "distill-stage-2", "stage3": "distill-stage-3"}
    student = run_dir / task[promoted["student"]] / "model"
    pulled = tmp_path / "pulled"
    version = registry.pull(promoted["ref"], local_run["registry_uri"], pulled)
    assert version.version == "1"
    assert (pulled / "model.safetensors").read_bytes() == (student / "model.safetensors").read_bytes()
    assert version.metadata["lineage"]["dcrs"]["candidates"]["in"] == 3 * 40 * 2
    assert version.metadata["gate"]["student"] == promoted["student"]
    lineage = json.loads((pulled / "twt.json").read_text())
    assert [s["stage"] for s in lineage["stages"]] == list(range(1, int(promoted["student"][-1]) + 1))
    assert not (run_dir / "explain-rejection").exists()  # dsl.Else did not run
    assert local_run["print_restored"]  # kfp.local's racy print swap does not leak into this process
    assert local_run["wall_s"] < 600


def test_local_run_sampled_each_teacher_in_the_loop(local_run: dict) -> None:
    run_dir = Path(local_run["run_dir"])
    merged = sorted(run_dir.glob("for-loop-*/sample-teacher/candidates/*/candidates.jsonl"))
    assert sorted(p.parent.name for p in merged) == ["teacher-large", "teacher-noisy", "teacher-verbose"]
    report = json.loads((run_dir / "select-candidates" / "report").read_text())
    assert report["candidates"]["in"] == 3 * 40 * 2 and report["candidates"]["kept"] > 0
    stage2 = json.loads((run_dir / "distill-stage-2" / "model" / "twt.json").read_text())
    assert stage2["compression"]["method"] == "teacher"
    for markdown in (run_dir / "evaluate-students" / "report", run_dir / "gate" / "report"):
        assert "](data:image/png;base64," in markdown.read_text()
    assert "## Gate: PASSED" in (run_dir / "gate" / "report").read_text()


def test_local_run_writes_what_twt_run_writes(local_run: dict, small_config: Path, tmp_path: Path) -> None:
    """The CLI and the pipeline call the same functions, so they write the same files."""
    import torch

    from twt.core.load import load_config
    from twt.steps import workdir

    run = workdir.RunDir(load_config(small_config), tmp_path / "work")
    workdir.prepare_questions(run)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the pipeline's tasks ran: the thread count changes float sums, so samples
    try:
        workdir.sample_teachers(run, progress=False)
    finally:
        torch.set_num_threads(threads)
    workdir.select_candidates(run)
    run_dir = Path(local_run["run_dir"])
    kfp_questions = run_dir / "prepare-questions"
    assert run.train_questions.read_bytes() == (kfp_questions / "train_questions").read_bytes()
    assert run.eval_questions.read_bytes() == (kfp_questions / "eval_questions").read_bytes()
    for name in run.config.teacher_names:
        (kfp,) = run_dir.glob(f"for-loop-*/sample-teacher/candidates/{name}/candidates.jsonl")
        assert run.path("candidates", name, "candidates.jsonl").read_bytes() == kfp.read_bytes(), name
    assert (
        run.path("dcrs", "distill.jsonl").read_bytes()
        == (run_dir / "select-candidates" / "distill").read_bytes()
    )


def test_the_else_branch_reports_why(local_run: dict, small_config: Path, tmp_path: Path) -> None:
    """The gate's boolean drives dsl.If/dsl.Else locally too: a strict policy on the same evaluation
    leads to the rejection report, not to promotion."""
    from kfp import dsl, local

    from components.explain_rejection import explain_rejection
    from components.gate import gate
    from pipelines.local import kfp_local_session
    from twt.core.load import load_config
    from twt.steps import settings as slices

    config = load_config(small_config)
    config.gate = config.gate.model_copy(update={"min_accuracy": 1.0, "max_accuracy_drop": None})
    config.gate = config.gate.model_copy(update={"min_token_reduction": None})
    evaluation = Path(local_run["run_dir"]) / "evaluate-students" / "evaluation"

    @dsl.pipeline(name="gate-branches")
    def branches(gate_settings: str, explain_settings: str):
        imported = dsl.importer(artifact_uri=str(evaluation), artifact_class=dsl.Artifact, reimport=True)
        verdict = gate(settings=gate_settings, evaluation=imported.output)
        with dsl.If(verdict.outputs["passed"] == True):  # noqa: E712
            explain_rejection(
                settings="unused", verdict=verdict.outputs["verdict"], evaluation=imported.output
            )
        with dsl.Else():
            explain_rejection(
                settings=explain_settings, verdict=verdict.outputs["verdict"], evaluation=imported.output
            )

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    with kfp_local_session():
        branches(
            gate_settings=slices.gate_settings(config).model_dump_json(),
            explain_settings=slices.explain_settings(config).model_dump_json(),
        )
    reports = list((tmp_path / "root").glob("gate-branches-*/explain-rejection*/report"))
    assert len(reports) == 1
    text = reports[0].read_text()
    assert text.startswith("# Not promoted: the gate did not pass") and "`min_accuracy`: 1.0" in text


def test_a_local_session_puts_print_back() -> None:
    from pipelines.local import kfp_local_session

    original = builtins.print
    try:
        with kfp_local_session():
            builtins.print = lambda *args, **kwargs: None  # what a racing kfp.local task leaves behind
        assert builtins.print is original
    finally:
        builtins.print = original


def test_a_local_session_can_send_task_output_to_a_log(tmp_path: Path, capsys) -> None:
    from pipelines.local import kfp_local_session

    original = builtins.print
    with kfp_local_session(tmp_path / "tasks.log"):
        print("executor input: {...}")
    print("after")
    assert builtins.print is original
    assert (tmp_path / "tasks.log").read_text() == "executor input: {...}\n"
    assert capsys.readouterr().out == "after\n"


def test_the_runner_records_and_the_task_output_share_one_log_handle(tmp_path: Path) -> None:
    """Task output (progress bars: multi-byte characters) and the runner's records go through one
    line-buffered handle: whole lines, in the order written, and the log reads back as UTF-8."""
    from pipelines.local import kfp_local_session, open_log

    with open_log(tmp_path / "tasks.log") as stream, kfp_local_session(stream):
        for i in range(3000):
            print(f"stage1: {'█' * (i % 37)}▏ {i}")
            stream.write(f"record {i} ✓\n")
    lines = (tmp_path / "tasks.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6000 and lines[-2:] == [f"stage1: {'█' * (2999 % 37)}▏ 2999", "record 2999 ✓"]


def test_task_progress_bars_are_redrawn_on_one_console_line(tmp_path: Path) -> None:
    import io
    import logging

    from pipelines.local import ConsoleProgress, RunnerRecords, kfp_local_session

    console = io.StringIO()
    bars = ConsoleProgress(console, width=40)
    with kfp_local_session(tmp_path / "tasks.log", bars):
        print("    executor input: {...}")  # kfp indents task output
        print("    train model:   3%|▎         | 93/3000 [00:06<02:55, 16.52it/s]")
        print("    train model:  50%|█████     | 1500/3000 [01:40<01:40, 15.00it/s]")
    assert console.getvalue() == (
        "\r\x1b[K" + "train model:   3%|▎         | 93/3000 [0"
        "\r\x1b[K" + "train model:  50%|█████     | 1500/3000 "
    )
    assert "executor input" in (tmp_path / "tasks.log").read_text()  # every line still goes to the log
    records = RunnerRecords(None, progress=False, bars=bars)
    records.emit(
        logging.LogRecord("kfp", logging.INFO, "", 0, "Task 'gate' finished with status SUCCESS", (), None)
    )
    assert records.finished == {"gate": "SUCCESS"}
    bars.clear()
    assert console.getvalue().endswith("\r\x1b[K") and not bars.shown
