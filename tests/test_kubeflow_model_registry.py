"""Promotion to Kubeflow Model Registry with the real ``model-registry`` client against a local server that
follows its REST contract (tests/model_registry_server.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from model_registry_server import ModelRegistryServer
from test_registry import GATE, LINEAGE, METRICS, make_model

from twt import registry
from twt.kubeflow_model_registry import ENV_ADDRESS, ENV_TOKEN, ModelRegistryError, register, split_address

TOKEN = "mr-t0k3n-for-tests"


@pytest.fixture
def server():
    started = ModelRegistryServer(token=TOKEN).start()
    yield started
    started.stop()


@pytest.fixture
def version(tmp_path: Path) -> registry.RegistryVersion:
    make_model(tmp_path / "model")
    return registry.publish(
        tmp_path / "model", tmp_path / "reg", "student", metrics=METRICS, gate=GATE, lineage=LINEAGE
    )


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
    make_model(tmp_path / "again", seed=1)
    again = registry.publish(tmp_path / "again", tmp_path / "reg", "student", metrics=METRICS, gate=GATE)
    second = register(again, run_id="run-1", pipeline_version="0.1.0", environ=env(server))
    assert second == {"action": "exists", "model": "student", "version": first["version"], "id": first["id"]}
    assert len(server.versions) == 1 and len(server.artifacts) == 1
    # another run gets its own version
    third = register(again, run_id="run-2", pipeline_version="0.1.0", environ=env(server))
    assert third["action"] == "registered" and len(server.versions) == 2


def test_a_version_name_taken_by_another_run_is_refused_in_one_line(server, version) -> None:
    register(version, run_id="run-1", pipeline_version="0.1.0", environ=env(server))
    with pytest.raises(ModelRegistryError, match=r"already has student version 1 from run-1$"):
        register(version, run_id="run-2", pipeline_version="0.1.0", environ=env(server))


def test_missing_address_or_token_names_the_secret_key(server, version) -> None:
    with pytest.raises(
        ModelRegistryError, match=rf"key 'address' of the pipeline's model_registry_secret .*{ENV_ADDRESS}"
    ):
        register(version, run_id="r", pipeline_version="0.1.0", environ={})
    with pytest.raises(ModelRegistryError, match=rf"key 'token' .*{ENV_TOKEN}"):
        register(
            version, run_id="r", pipeline_version="0.1.0", environ={ENV_ADDRESS: "https://mr.example.com"}
        )
    wrong = {**env(server), ENV_TOKEN: "wrong"}
    with pytest.raises(ModelRegistryError, match="cannot reach Kubeflow Model Registry") as err:
        register(version, run_id="r", pipeline_version="0.1.0", environ=wrong)
    assert TOKEN not in str(err.value) and "\n" not in str(err.value)
    assert server.versions == {}


def test_without_the_package_it_says_what_to_install(server, version, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "model_registry", None)  # import fails as if not installed
    with pytest.raises(ModelRegistryError, match=r"pip install 'twt\[kubeflow-registry\]'"):
        register(version, run_id="r", pipeline_version="0.1.0", environ=env(server))


def test_addresses() -> None:
    assert split_address("model-registry.kubeflow:8080") == ("http://model-registry.kubeflow", 8080)
    assert split_address("https://mr.example.com") == ("https://mr.example.com", 443)
    for bad in ["mr.example.com", "ftp://mr:1", "mr:port", ""]:
        with pytest.raises(ModelRegistryError, match="invalid Kubeflow Model Registry address"):
            split_address(bad)
