"""Promotion to Kubeflow Model Registry with the real ``model-registry`` client against a local server that
follows its REST contract (tests/model_registry_server.py)."""

from __future__ import annotations

import dataclasses
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import MODEL_GATE, MODEL_METRICS, publish_with_records, write_model_dir
from model_registry_server import ModelRegistryServer

from twt.app.cli import main as twt_main
from twt.registry import models as registry
from twt.registry.kubeflow import (
    ENV_ADDRESS,
    ENV_STORAGE_KEY,
    ENV_TOKEN,
    ModelRegistryError,
    ModelRegistryUnauthorisedError,
    ModelRegistryUnreachableError,
    register,
    register_version,
    split_address,
)

TOKEN = "mr-t0k3n-for-tests"


@pytest.fixture
def server():
    started = ModelRegistryServer(token=TOKEN).start()
    yield started
    started.stop()


@pytest.fixture
def version(tmp_path: Path) -> registry.RegistryVersion:
    write_model_dir(tmp_path / "model")
    return publish_with_records(tmp_path / "model", tmp_path / "reg")


def env(server: ModelRegistryServer) -> dict[str, str]:
    """What the pipeline's model_registry_secret puts in the promote step's environment."""
    return {ENV_ADDRESS: f"http://127.0.0.1:{server.port}", ENV_TOKEN: TOKEN}


def properties(server: ModelRegistryServer, version: dict) -> dict:
    return {
        key: next(iter(v for k, v in value.items() if k != "metadataType"))
        for key, value in version["customProperties"].items()
    }


def test_the_version_carries_run_pipeline_artifact_and_gate(server, version) -> None:
    result = register(version, run_id="run-7f3a", pipeline_version="0.1.0", environ=env(server))
    assert result["action"] == "registered" and result["version"] == version.version
    (model,) = server.models.values()
    (registered,) = server.versions.values()
    (artifact,) = server.artifacts.values()
    assert model["name"] == "student" and registered["name"] == version.version
    props = properties(server, registered)
    assert props["pipeline_run_id"] == "run-7f3a" and props["pipeline_version"] == "0.1.0"
    assert props["artifact_uri"] == version.uri == artifact["uri"]
    assert props["gate_passed"] is True and props["gate_student"] == "stage3"
    assert (
        float(props["metric_stage3_accuracy"]) == 0.8
        and float(props["metric_stage1_mean_output_tokens"]) == 40.0
    )
    assert artifact["modelFormatName"] == "huggingface"


def test_promoting_the_same_run_twice_yields_one_version(server, version, tmp_path: Path) -> None:
    first = register(version, run_id="run-1", pipeline_version="0.1.0", environ=env(server))
    # the re-run published a second twt version of the same run; the registry keeps the first
    write_model_dir(tmp_path / "again", seed=1)
    again = registry.publish(
        tmp_path / "again", tmp_path / "reg", "student", metrics=MODEL_METRICS, gate=MODEL_GATE
    )
    second = register(again, run_id="run-1", pipeline_version="0.1.0", environ=env(server))
    assert second == {"action": "exists", "model": "student", "version": first["version"], "id": first["id"]}
    assert len(server.versions) == 1 and len(server.artifacts) == 1
    # another run gets its own version
    third = register(again, run_id="run-2", pipeline_version="0.1.0", environ=env(server))
    assert third["action"] == "registered" and len(server.versions) == 2


def test_a_version_name_taken_by_another_run_is_refused_in_one_line(server, version) -> None:
    register(version, run_id="run-1", pipeline_version="0.1.0", environ=env(server))
    with pytest.raises(ModelRegistryError, match=r"already has student version 1 from run-1$"):
        register_version(version, run_id="run-2", pipeline_version="0.1.0", environ=env(server))


def test_missing_address_or_token_names_the_secret_key(server, version) -> None:
    with pytest.raises(
        ModelRegistryError, match=rf"key 'address' of the pipeline's model_registry_secret .*{ENV_ADDRESS}"
    ):
        register_version(version, run_id="r", pipeline_version="0.1.0", environ={})
    with pytest.raises(ModelRegistryError, match=rf"key 'token' .*{ENV_TOKEN}"):
        register_version(
            version, run_id="r", pipeline_version="0.1.0", environ={ENV_ADDRESS: "https://mr.example.com"}
        )
    assert server.versions == {}


def test_a_wrong_token_is_unauthorised_not_unreachable_and_is_not_retried(server, version) -> None:
    pauses: list[float] = []
    wrong = {**env(server), ENV_TOKEN: "wrong"}
    with pytest.raises(
        ModelRegistryUnauthorisedError, match=r"refused the token \(401 Unauthorized\): check the key 'token'"
    ) as err:
        register_version(version, run_id="r", pipeline_version="0.1.0", environ=wrong, sleep=pauses.append)
    assert TOKEN not in str(err.value) and "\n" not in str(err.value) and "cannot reach" not in str(err.value)
    assert pauses == [] and server.versions == {}


def test_an_unreachable_registry_is_retried_with_backoff_then_named(server, version) -> None:
    pauses: list[float] = []
    server.unavailable = 2  # two 503s, then it answers
    result = register_version(
        version, run_id="r", pipeline_version="0.1.0", environ=env(server), sleep=pauses.append
    )
    assert result["action"] == "registered" and pauses == [2.0, 4.0]
    gone = {**env(server), ENV_ADDRESS: "http://127.0.0.1:9"}  # nothing listens on port 9
    pauses.clear()
    with pytest.raises(
        ModelRegistryUnreachableError, match=r"^cannot reach Kubeflow Model Registry at http://127\.0\.0\.1:9"
    ):
        register_version(
            version, run_id="r", pipeline_version="0.1.0", environ=gone, attempts=3, sleep=pauses.append
        )
    assert pauses == [2.0, 4.0]


def test_a_try_that_stopped_before_the_artifact_is_completed(server, version) -> None:
    # the model and version are created, then the artifact's POST fails (ids: model 1, version 2)
    server.unavailable_paths.add("/api/model_registry/v1/model_versions/2/artifacts")
    pauses: list[float] = []
    result = register_version(
        version, run_id="r", pipeline_version="0.1.0", environ=env(server), sleep=pauses.append
    )
    assert result["action"] == "completed" and pauses == [2.0]
    (registered,) = server.versions.values()
    (artifact,) = server.artifacts.values()
    assert artifact["modelVersionId"] == registered["id"] and artifact["modelSourceId"] == "r"


def test_a_failed_registration_leaves_the_student_published_and_says_how_to_retry(
    server, version, tmp_path: Path, capsys, monkeypatch
) -> None:
    wrong = {**env(server), ENV_TOKEN: "wrong"}
    result = register(version, run_id="run-9", pipeline_version="0.1.0", environ=wrong)
    retry = f"twt registry register student@1 --root {tmp_path / 'reg'} --run-id run-9"
    assert result["action"] == "failed" and result["unauthorised"] is True and result["retry"] == retry
    warning = capsys.readouterr().err
    assert (
        warning.startswith("twt: warning: student@1 is published but not registered: ") and retry in warning
    )
    assert registry.get_version(tmp_path / "reg", "student@1").files == version.files  # still published
    for name, value in env(server).items():
        monkeypatch.setenv(name, value)
    assert twt_main(retry.split()[1:]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "registered"
    (registered,) = server.versions.values()
    assert properties(server, registered)["pipeline_run_id"] == "run-9"
    assert twt_main(retry.split()[1:]) == 0  # once per run
    assert json.loads(capsys.readouterr().out)["action"] == "exists" and len(server.versions) == 1


def test_the_artifact_says_where_it_is_and_where_it_came_from(server, version, tmp_path: Path) -> None:
    namespace = tmp_path / "namespace"
    namespace.write_text("team-a\n")
    on_s3 = dataclasses.replace(version, uri="s3://twt/registry/student/1")
    environ = {
        **env(server),
        "TWT_S3_ENDPOINT": "minio.twt.svc:9000",
        "TWT_S3_SECURE": "false",
        "TWT_S3_REGION": "us-east-1",
        ENV_STORAGE_KEY: "twt-minio-credentials",
    }
    register_version(on_s3, run_id="run-7f3a", pipeline_version="0.1.0", environ=environ, namespace="team-a")
    (artifact,) = server.artifacts.values()
    assert (
        artifact["uri"]
        == "s3://twt/registry/student/1?endpoint=http://minio.twt.svc:9000&defaultRegion=us-east-1"
    )
    assert artifact["storageKey"] == "twt-minio-credentials"
    assert (artifact["modelSourceKind"], artifact["modelSourceClass"]) == ("kfp", "pipelinerun")
    assert (artifact["modelSourceId"], artifact["modelSourceGroup"]) == ("run-7f3a", "team-a")
    (registered,) = server.versions.values()
    assert properties(server, registered)["artifact_uri"] == "s3://twt/registry/student/1"


def test_a_model_of_more_than_a_billion_bytes_registers(server, version) -> None:
    big = dataclasses.replace(version, total_bytes=3_087_007_744)  # a 1.5B model in bf16
    register_version(big, run_id="r", pipeline_version="0.1.0", environ=env(server))
    (registered,) = server.versions.values()
    assert registered["customProperties"]["total_bytes"] == {
        "metadataType": "MetadataStringValue",
        "string_value": "3087007744",
    }


def test_a_runs_version_is_found_on_a_later_page(server, tmp_path: Path) -> None:
    versions = []
    for n in range(5):
        write_model_dir(tmp_path / f"m{n}", seed=n)
        versions.append(
            registry.publish(tmp_path / f"m{n}", tmp_path / "reg", "student", metrics=MODEL_METRICS)
        )
        register_version(versions[-1], run_id=f"run-{n}", pipeline_version="0.1.0", environ=env(server))
    server.requests.clear()
    again = register_version(
        versions[4], run_id="run-4", pipeline_version="0.1.0", environ=env(server), page_size=2
    )
    assert (
        again["action"] == "exists" and again["version"] == versions[4].version and len(server.versions) == 5
    )
    pages = [q for method, path, q in server.requests if path.endswith("/versions")]
    assert [q.get("pageSize") for q in pages][:3] == ["2", "2", "2"]
    assert len({q.get("nextPageToken", "") for q in pages}) >= 3  # the first page, then two cursors


def _post(server: ModelRegistryServer, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/api/model_registry/v1/{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize(
    "value",
    [
        {"metadataType": "MetadataIntValue", "int_value": "3087007744"},  # more than int32
        {"metadataType": "MetadataIntValue", "int_value": 7},  # not a string
        {"metadataType": "MetadataStringValue", "string_value": "x", "int_value": "1"},  # an extra field
        {"metadataType": "MetadataBoolValue", "bool_value": "true"},
        {"metadataType": "MetadataDoubleValue", "double_value": True},
        {"metadataType": "MetadataFloatValue", "double_value": 0.5},
        "plain",
    ],
)
def test_the_double_refuses_mistyped_custom_properties(server, value) -> None:
    status, answer = _post(server, "registered_models", {"name": "m", "customProperties": {"p": value}})
    assert status == 400 and answer["message"].startswith("customProperties.p") and server.models == {}
    good = {"metadataType": "MetadataIntValue", "int_value": "-42"}
    assert _post(server, "registered_models", {"name": "m", "customProperties": {"p": good}})[0] == 201


def test_without_the_package_it_says_what_to_install(server, version, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "model_registry", None)  # import fails as if not installed
    with pytest.raises(ModelRegistryError, match=r"pip install 'twt\[kubeflow-registry\]'"):
        register_version(version, run_id="r", pipeline_version="0.1.0", environ=env(server))


def test_addresses() -> None:
    assert split_address("model-registry.kubeflow:8080") == ("http://model-registry.kubeflow", 8080)
    assert split_address("https://mr.example.com") == ("https://mr.example.com", 443)
    for bad in ["mr.example.com", "ftp://mr:1", "mr:port", ""]:
        with pytest.raises(ModelRegistryError, match="invalid Kubeflow Model Registry address"):
            split_address(bad)


def test_the_promote_steps_secret_name_is_the_artifacts_storage_key(server, version) -> None:
    # the pipeline passes its minio_secret parameter through tasks.promote: it wins over the environment
    environ = {**env(server), ENV_STORAGE_KEY: "twt-minio-credentials"}
    register(version, run_id="r", pipeline_version="0.1.0", environ=environ, storage_key="team-a-minio")
    (artifact,) = server.artifacts.values()
    assert artifact["storageKey"] == "team-a-minio"
