"""The preflight checks (twt.steps.preflight): a run that cannot succeed is refused before any GPU time, one
line per problem naming it. Against moto's S3 server, a local HTTP teacher, and the real ``kubernetes`` client
talking to a local server that answers the API paths the checks read.

    python -m pytest tests/test_preflight.py -q
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler

import pytest
import yaml
from json_http import LocalHTTPServer, send_json

from twt.core.load import default_config_path, parse_config
from twt.core.schema import TeacherConfig, TrainingConfig
from twt.steps import preflight, steps
from twt.steps import settings as slices

NS, PVC = "twt", "twt-model-cache"
PVC_PATH = f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{PVC}"
TRAINER_PATH = "/apis/trainer.kubeflow.org/v1alpha1"


class Routes(LocalHTTPServer):
    """A local HTTP server answering GET ``path`` with ``routes[path]`` = (status, JSON body); others 404."""

    def __init__(self, routes: dict[str, tuple[int, dict]]) -> None:
        self.routes, self.headers = routes, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.headers.append(dict(self.headers))
                status, body = outer.routes.get(self.path.split("?")[0], (404, _status(404, "NotFound")))
                send_json(self, status, body)  # a JSON answer

        self._serve(Handler)


def _status(code: int, reason: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}


def _claim(phase: str, storage_class: str | None = "standard") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": PVC, "namespace": NS},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage_class},
        "status": {"phase": phase},
    }


def _storage_class(mode: str) -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "standard"},
            "provisioner": "example.com/disk", "volumeBindingMode": mode}  # fmt: skip


def _served(*plurals: str) -> dict:
    resources = [
        {"name": p, "kind": p.title(), "namespaced": True, "singularName": p[:-1], "verbs": ["get"]}
        for p in plurals
    ]
    return {
        "kind": "APIResourceList",
        "groupVersion": "trainer.kubeflow.org/v1alpha1",
        "resources": resources,
    }


def _kube(url: str):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = url
    return client.ApiClient(configuration)


def _settings(uris: list[str], teachers: list[TeacherConfig], engine: str = "auto"):
    training = TrainingConfig(engine=engine, processes=2, device="cuda", checkpoints="s3://ck/x")
    return slices.PreflightSettings(uris=uris, teachers=teachers, training=training)


def _teacher(base_url: str, key_env: str | None = "TEACHER_API_KEY") -> TeacherConfig:
    return TeacherConfig(name="big", model="served", backend="openai", base_url=base_url, api_key_env=key_env)


@pytest.fixture
def teacher_server():
    with Routes({"/v1/models": (200, {"object": "list", "data": [{"id": "served"}]})}) as server:
        yield server


def test_a_ready_cluster_passes_and_the_report_says_what_was_checked(s3, teacher_server, tmp_path) -> None:
    routes = {PVC_PATH: (200, _claim("Bound")), TRAINER_PATH: (200, _served("trainjobs"))}
    with Routes(routes) as api:
        where = preflight.Environment(
            env={**os.environ, "TEACHER_API_KEY": "sk-1"},
            namespace=NS,
            model_cache_pvc=PVC,
            kube=_kube(api.url),
        )
        settings = _settings([s3.uri("questions.jsonl")], [_teacher(teacher_server.url + "/v1")], "trainjob")
        assert preflight.run(settings, where, tmp_path / "report.md") == []
    text = (tmp_path / "report.md").read_text()
    assert "All checks passed." in text and s3.bucket in text and "training: trainjob" in text
    assert teacher_server.headers[0]["Authorization"] == "Bearer sk-1"


def test_every_problem_is_one_line_naming_it(s3, teacher_server) -> None:
    """Missing keys, a missing bucket, a teacher that is down, an unbound claim, no Trainer: all at once."""
    routes = {PVC_PATH: (200, _claim("Pending", storage_class=None))}
    with Routes(routes) as api:
        env = {k: v for k, v in os.environ.items() if k != "TWT_S3_SECRET_KEY"}
        where = preflight.Environment(env=env, namespace=NS, model_cache_pvc=PVC, minio_secret="twt-minio",
                                      teacher_keys_secret="twt-keys", kube=_kube(api.url))  # fmt: skip
        down = _teacher("http://127.0.0.1:9/v1", key_env=None)
        settings = _settings([s3.uri("q.jsonl")], [down, _teacher(teacher_server.url + "/v1")], "trainjob")
        with pytest.raises(preflight.PreflightError) as err:
            preflight.run(settings, where)
    lines = str(err.value).splitlines()
    assert len(lines) == 5, lines
    assert lines[0].startswith("Secret twt-minio: TWT_S3_SECRET_KEY not set")
    assert lines[1].startswith(
        "teacher big: TEACHER_API_KEY is not set (key 'TEACHER_API_KEY' of Secret twt-keys"
    )
    assert lines[2].startswith("teacher big: http://127.0.0.1:9/v1/models does not answer")
    assert lines[3].startswith(f"PersistentVolumeClaim {PVC}: Pending, not bound (storage class none")
    assert lines[4].startswith(
        "trainjobs.trainer.kubeflow.org/v1alpha1: not served (install Kubeflow Trainer)"
    )


def test_minio_buckets_and_teacher_keys_are_checked(s3, s3_endpoint, teacher_server) -> None:
    env = {**os.environ, "TEACHER_API_KEY": "sk-1"}
    teacher = _teacher(teacher_server.url + "/v1")
    where = preflight.Environment(env=env)
    assert preflight.check(_settings([s3.uri("a"), "s3://no-such-bucket/b"], [teacher]), where) == [
        f"s3://no-such-bucket: no such bucket at {s3_endpoint} (create it, e.g. mc mb twt/no-such-bucket)"
    ]
    unreachable = preflight.Environment(env={**env, "TWT_S3_ENDPOINT": "http://127.0.0.1:9"})
    (line,) = preflight.check(_settings([s3.uri("a")], []), unreachable)
    assert line.startswith("MinIO at http://127.0.0.1:9: unreachable or refused the keys")
    with Routes({"/v1/models": (401, {"error": "bad key"})}) as refusing:
        (line,) = preflight.check(_settings([], [_teacher(refusing.url + "/v1")]), where)
    assert line == f"teacher big: {refusing.url}/v1/models refused the key (401; TEACHER_API_KEY)"


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ({PVC_PATH: (200, _claim("Bound"))}, None),
        (  # binds when the first step mounts it
            {PVC_PATH: (200, _claim("Pending")), "/apis/storage.k8s.io/v1/storageclasses/standard": (
                200, _storage_class("WaitForFirstConsumer"))},
            None,
        ),
        (
            {PVC_PATH: (200, _claim("Pending")), "/apis/storage.k8s.io/v1/storageclasses/standard": (
                200, _storage_class("Immediate"))},
            f"PersistentVolumeClaim {PVC}: Pending, not bound "
            "(storage class standard, access modes ReadWriteMany)",
        ),
        ({}, f"PersistentVolumeClaim {PVC}: not found in namespace {NS} (model_cache_pvc)"),
    ],
)  # fmt: skip
def test_the_model_cache_claim(routes: dict, expected: str | None) -> None:
    with Routes(routes) as api:
        found = preflight.check_pvc(_kube(api.url), NS, PVC)
    assert found == expected if expected is None else found.startswith(expected)


def test_the_training_job_api_is_checked_only_when_a_stage_uses_it() -> None:
    with Routes({}) as api:  # nothing served
        where = preflight.Environment(env={}, kube=_kube(api.url))
        assert preflight.check(_settings([], [], engine="local"), where) == []
        (line,) = preflight.check(_settings([], [], engine="pytorchjob"), where)
    assert line.startswith("pytorchjobs.kubeflow.org/v1: not served (install the Kubeflow Training Operator)")


def test_the_step_reads_its_slice_and_skips_kubernetes_outside_a_cluster(tmp_path, monkeypatch) -> None:
    """The demo (kfp.local) runs the same step: local teachers, no s3://, no cluster: it passes."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = parse_config(default_config_path().read_text(), base_dir=default_config_path().parent)
    settings = slices.preflight_settings(config).model_dump_json()  # what the component receives
    assert steps.preflight(settings, tmp_path / "report.md") == []
    assert "skipped, not in a cluster" in (tmp_path / "report.md").read_text()
    data = yaml.safe_load(default_config_path().read_text())
    data["workdir"] = "s3://runs/demo"  # checkpoints default under it
    data["registry"]["uri"] = "s3://twt-registry/models"
    found = slices.preflight_settings(
        parse_config(yaml.safe_dump(data), base_dir=default_config_path().parent)
    )
    assert preflight.s3_buckets(found.uris) == ["runs", "twt-registry"]
    assert "s3://runs/demo/checkpoints" in found.uris


def test_a_directory_this_user_cannot_write_is_one_line(tmp_path) -> None:
    assert preflight.check_writable(tmp_path) is None

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    assert preflight.check_writable(tmp_path, write=refuse) == (
        f"{tmp_path}: not writable by uid {os.getuid()} (Permission denied)"
    )


def test_a_step_refuses_a_mounted_model_cache_it_cannot_write(tmp_path, monkeypatch) -> None:
    """The GPU steps and DCRS mount the claim at HF_HOME: one that uid 10001 cannot write is refused in one
    line before any download; outside a pod (HF_HOME not a mount point) nothing is checked."""
    cache = tmp_path / "hf"
    steps._check_model_cache({"HF_HOME": str(cache)})  # not a mount point: not checked
    monkeypatch.setattr(os.path, "ismount", lambda path: path == str(cache))
    with pytest.raises(preflight.PreflightError) as err:
        steps._check_model_cache({"HF_HOME": str(cache)})  # missing here; a root-owned root in a pod
    assert str(err.value).startswith(f"model cache {cache}: not writable by uid {os.getuid()}")
    assert str(err.value).endswith("(model_cache_pvc)") and "\n" not in str(err.value)
    cache.mkdir()
    steps._check_model_cache({"HF_HOME": str(cache)})
    assert list(cache.iterdir()) == []  # the probe file is gone
