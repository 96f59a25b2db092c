"""Upload and run on a KFP API server: versions, authentication and the minimum backend version.

    python -m pytest tests/test_release.py -q

The client double (``helpers.kfp_client_double``) is ``create_autospec(kfp.Client, instance=True)``: a
call that kfp 2.17's real method would refuse (an unknown keyword, a missing argument) fails here too;
answers are kfp_server_api's own model classes. Authentication and the version check go through a real
``kfp.Client`` to a small HTTP server that answers ``/apis/v2beta1/healthz`` as the 2.17 API server does
(``backend/src/apiserver/main.go`` at 2.17.0: ``{"commit_sha", "tag_name", "multi_user", "pipeline_store"}``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from helpers import kfp_client_double
from json_http import send_json

from components.images import VERSION
from pipelines import kfp_server, release
from pipelines.__main__ import main as pipelines_main

ROOT = Path(__file__).resolve().parents[1]
NAME = "twt-distillation"
CONFIG = ROOT / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release.compile_pipeline(tmp_path_factory.mktemp("compiled") / f"{NAME}-{VERSION}.yaml")


def called(client) -> list[str]:
    return [name for name, _, _ in client.mock_calls]


# --- the double is kfp's ------------------------------------------------------------------------------------


def test_the_double_refuses_what_kfp_2_17_refuses() -> None:
    client = kfp_client_double()
    with pytest.raises(TypeError):  # the version name the old release.upload thought it was sending
        client.upload_pipeline(pipeline_package_path="p.yaml", pipeline_version_name="0.1.0-abc")
    with pytest.raises(TypeError):
        client.upload_pipeline_version(pipeline_package_path="p.yaml")  # no version name


# --- upload -------------------------------------------------------------------------------------------------


def test_a_first_upload_is_the_version_named_version_and_sha(compiled: Path) -> None:
    client = kfp_client_double(existing_id=None)
    result = release.upload(client, compiled, sha="abc1234")
    name = f"{VERSION}-abc1234"
    assert client.versions == {name: f"id-{name}"}  # the version KFP named after the pipeline is gone
    assert result == {
        "action": "created",
        "pipeline": NAME,
        "pipeline_id": "new-id",
        "version": name,
        "version_id": f"id-{name}",
        "package": str(compiled),
        "backend": "2.17.0",
    }
    assert client.sent == [compiled.read_bytes()] * 2
    client.delete_pipeline_version.assert_called_once_with("new-id", "default-version-id")


def test_a_later_upload_adds_a_version_and_a_repeat_changes_nothing(compiled: Path) -> None:
    client = kfp_client_double(existing_id="pipeline-7", versions={f"{VERSION}-old": "id-old"})
    result = release.upload(client, compiled, sha="abc1234")
    assert result["action"] == "version" and result["version_id"] == f"id-{VERSION}-abc1234"
    client.upload_pipeline_version.assert_called_once_with(
        pipeline_package_path=str(compiled),
        pipeline_version_name=f"{VERSION}-abc1234",
        pipeline_id="pipeline-7",
        description=f"twt {VERSION}-abc1234",
    )
    assert "upload_pipeline" not in called(client) and "delete_pipeline_version" not in called(client)
    again = release.upload(client, compiled, sha="abc1234")
    assert again["action"] == "exists" and again["version_id"] == result["version_id"]
    assert client.upload_pipeline_version.call_count == 1
    client.versions[f"{VERSION}-abc1234-dirty"] = "id-dirty"
    with pytest.raises(release.ReleaseError, match=r"already has version .*-dirty, from another dirty tree"):
        release.upload(client, compiled, sha="abc1234-dirty")


def test_upload_refuses_a_mismatched_spec_before_calling(compiled: Path, tmp_path: Path) -> None:
    client = kfp_client_double(existing_id="pipeline-7")
    bad = tmp_path / "bad.yaml"
    bad.write_text(compiled.read_text().replace(f"twt-gpu:{VERSION}", "twt-gpu:9.9.9", 1))
    with pytest.raises(release.ReleaseError):
        release.upload(client, bad, sha="abc1234")
    with pytest.raises(release.ReleaseError, match="no compiled pipeline"):
        release.upload(client, tmp_path / "missing.yaml", sha="abc1234")
    assert client.mock_calls == []


def test_upload_refuses_an_old_backend_before_uploading(compiled: Path) -> None:
    client = kfp_client_double(existing_id=None, backend="2.5.0")
    with pytest.raises(
        kfp_server.BackendError, match=r"^the KFP backend is 2\.5\.0, this pipeline needs 2\.16\.0"
    ):
        release.upload(client, compiled, sha="abc1234")
    assert called(client) == ["_healthz_api.healthz_service_get_healthz"]
    assert release.upload(client, compiled, sha="abc1234", check_backend=False)["backend"] is None


# --- run ----------------------------------------------------------------------------------------------------


def test_run_starts_the_uploaded_version() -> None:
    name = f"{VERSION}-abc1234"
    client = kfp_client_double(existing_id="pipeline-7", versions={name: "id-v"})
    result = release.submit_run(client, CONFIG, pipeline_version=name, overrides={"gpu_cpu": "16"})
    assert result.run_id == "run-1"
    client.create_experiment.assert_called_once_with("demo")
    client.run_pipeline.assert_called_once_with(
        experiment_id="exp-1",
        job_name=f"demo-{name}",
        params={"config_override": CONFIG.read_text(), "gpu_cpu": "16"},
        pipeline_id="pipeline-7",
        version_id="id-v",
        service_account="twt-pipeline-runner",
    )
    assert "create_run_from_pipeline_package" not in called(client)


def test_cli_stdout_is_only_the_result(
    compiled: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    client = kfp_client_double(existing_id=None)
    monkeypatch.setattr("pipelines.__main__._client", lambda args: client)
    argv = ["upload", "--host", "http://kfp", "--package", str(compiled), "--sha", "abc1234"]
    assert pipelines_main(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["version"] == f"{VERSION}-abc1234" and "Pipeline details: " in err
    run = ["run", "--host", "http://kfp", "--config", str(CONFIG), "--pipeline-version", f"{VERSION}-abc1234"]
    assert pipelines_main(run) == 0
    out, err = capsys.readouterr()
    assert out == "run run-1\n" and "Run details: " in err


def test_run_without_that_version_says_to_upload_it() -> None:
    client = kfp_client_double(existing_id="pipeline-7", versions={f"{VERSION}-old": "id-old"})
    with pytest.raises(release.ReleaseError, match=rf"no version {VERSION}-abc of {NAME}: upload it first"):
        release.submit_run(client, CONFIG, pipeline_version=f"{VERSION}-abc")
    assert "run_pipeline" not in called(client) and "create_experiment" not in called(client)


def test_run_of_a_package_is_a_one_off(compiled: Path) -> None:
    client = kfp_client_double()
    release.submit_run(client, CONFIG, package=compiled, overrides={"gpu_cpu": "16"})
    client.create_run_from_pipeline_package.assert_called_once_with(
        str(compiled),
        arguments={"config_override": CONFIG.read_text(), "gpu_cpu": "16"},
        run_name=f"demo-{VERSION}",
        experiment_name="demo",
        service_account="twt-pipeline-runner",
    )


# --- a real kfp.Client: token, cookies, backend version -----------------------------------------------------


class HealthzServer:
    """Answers ``GET /apis/v2beta1/healthz`` as KFP 2.17's API server, 401 without ``token`` when one is
    set (as Kubeflow's auth proxy), and records each request's headers."""

    def __init__(self, tag: str, token: str | None = None) -> None:
        self.tag, self.token, self.headers = tag, token, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    status, body = 401, {"error": "Unauthorized", "code": 16}
                elif self.path == "/apis/v2beta1/healthz":
                    status = 200
                    body = {"commit_sha": "0f1e2d", "tag_name": server.tag, "multi_user": True}
                else:
                    status, body = 404, {"error": "not found", "code": 5}
                send_json(self, status, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def healthz(request) -> Iterator[HealthzServer]:
    tag, token = getattr(request, "param", ("2.17.0", "kfp-t0k3n"))
    server = HealthzServer(tag, token)
    yield server
    server.close()


def test_a_real_client_sends_the_token_and_cookies_and_reads_the_version(healthz: HealthzServer) -> None:
    client = kfp_server.connect(healthz.url, "twt", token="kfp-t0k3n", cookies="authservice_session=s1")
    assert kfp_server.require_backend(client) == "2.17.0"
    (headers,) = healthz.headers
    assert headers["authorization"] == "Bearer kfp-t0k3n" and headers["cookie"] == "authservice_session=s1"


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("2.15.0", r"the KFP backend is 2\.15\.0, this pipeline needs 2\.16\.0 or newer"),
        ("2.5.0", r"the KFP backend is 2\.5\.0, this pipeline needs 2\.16\.0"),
        ("unknown", r"cannot tell the KFP backend's version \(healthz tag_name 'unknown'\)"),
    ],
)
def test_backends_below_2_16_or_unknown_are_refused(tag: str, message: str) -> None:
    server = HealthzServer(tag)
    try:
        with pytest.raises(kfp_server.BackendError, match=message):
            kfp_server.require_backend(kfp_server.connect(server.url, "twt"))
    finally:
        server.close()
    assert kfp_server.parse_version("v2.16.1") == (2, 16, 1) and kfp_server.parse_version("2.17") == (
        2,
        17,
        0,
    )


def test_cli_upload_authenticates_and_refuses_an_old_backend_in_one_line(
    compiled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    server = HealthzServer("2.5.0", token="from-a-file")
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    argv = ["upload", "--host", server.url, "--package", str(compiled), "--sha", "abc1234"]
    try:
        assert pipelines_main([*argv, "--token-file", str(token_file)]) == 2
        err = capsys.readouterr().err
        assert err == (
            "pipelines: error: the KFP backend is 2.5.0, this pipeline needs 2.16.0 or newer (optional "
            "secrets need 2.15, securityContext 2.16): upgrade Kubeflow Pipelines\n"
        )
        monkeypatch.setenv(kfp_server.ENV_TOKEN, "wrong")
        monkeypatch.setenv(kfp_server.ENV_COOKIES, "authservice_session=s2")
        assert pipelines_main(["run", "--host", server.url, "--config", str(CONFIG)]) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith("pipelines: error: the KFP API answered 401 Unauthorized") and err.count("\n") == 1
        )
    finally:
        server.close()
    assert [h.get("authorization") for h in server.headers] == ["Bearer from-a-file", "Bearer wrong"]
    assert server.headers[1]["cookie"] == "authservice_session=s2"


def test_an_unreadable_token_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [
        "run",
        "--host",
        "http://127.0.0.1:9",
        "--config",
        str(CONFIG),
        "--token-file",
        str(tmp_path / "none"),
    ]
    assert pipelines_main(argv) == 2
    assert f"--token-file {tmp_path / 'none'}: cannot read it" in capsys.readouterr().err


# --- Kubernetes-native objects (GitOps) ---------------------------------------------------------------------


def test_kubernetes_manifests_hold_the_checked_spec_in_the_named_version(
    compiled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "twt.k8s.yaml"
    argv = [
        "compile",
        "--kubernetes-manifests",
        "--out",
        str(out),
        "--sha",
        "abc1234",
        "--namespace",
        "team-a",
    ]
    assert pipelines_main(argv) == 0
    pipeline, version = yaml.safe_load_all(out.read_text())
    assert (pipeline["apiVersion"], pipeline["kind"]) == ("pipelines.kubeflow.org/v2beta1", "Pipeline")
    assert pipeline["metadata"] == {"name": NAME, "namespace": "team-a"}
    assert version["kind"] == "PipelineVersion"
    assert version["metadata"] == {"name": f"{NAME}-{VERSION}-abc1234", "namespace": "team-a"}
    assert version["spec"]["displayName"] == f"{VERSION}-abc1234" and version["spec"]["pipelineName"] == NAME
    spec, platform = yaml.safe_load_all(compiled.read_text())
    assert version["spec"]["pipelineSpec"] == spec and version["spec"]["platformSpec"] == platform
