"""Serving the promoted student (twt.registry.serving): the KServe InferenceService, checked against KServe
v0.20.0's CRD schema (vendored), and its create/update and wait through the real ``kubernetes`` client
against a local server answering the InferenceService API paths.

    python -m pytest tests/test_serving.py -q
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest
from json_http import LocalHTTPServer, send_json

from twt.core.kube_schemas import crd_record, schema_errors
from twt.registry import serving
from twt.steps import steps

POOL = {
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def _spec(**changes) -> serving.ServingSpec:
    values = {"model": "twt-student", "version": "3", "storage_uri": "s3://twt-registry/twt-student/3",
              "namespace": "team-a", **POOL, **changes}  # fmt: skip
    return serving.ServingSpec(**values)


def test_the_inference_service_serves_the_registry_copy_with_vllm() -> None:
    obj = serving.render_inference_service(_spec())
    assert crd_record("InferenceService")["source"].startswith("kserve/kserve v0.20.0")
    assert schema_errors(obj) == []
    assert (obj["apiVersion"], obj["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert obj["metadata"]["name"] == "twt-student" and obj["metadata"]["namespace"] == "team-a"
    assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = obj["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "twt-kserve"
    assert predictor["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert (
        predictor["nodeSelector"] == POOL["node_selector"] and predictor["tolerations"] == POOL["tolerations"]
    )
    model = predictor["model"]
    assert model["storageUri"] == "s3://twt-registry/twt-student/3"
    assert (model["runtime"], model["modelFormat"]) == ("twt-vllm", {"name": "vllm"})
    assert model["args"] == ["--model=/mnt/models"]
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    hf = serving.render_inference_service(_spec(runtime="kserve-huggingfaceserver"))["spec"]["predictor"][
        "model"
    ]
    assert hf["modelFormat"] == {"name": "huggingface"}
    assert hf["args"] == ["--model_name=twt-student", "--backend=vllm"]


def test_bad_input_is_one_line_naming_it() -> None:
    with pytest.raises(serving.ServingError, match=r"^serving runtime 'triton': use one of"):
        serving.render_inference_service(_spec(runtime="triton"))
    with pytest.raises(serving.ServingError, match=r"^storage URI '/tmp/x': KServe cannot download it"):
        serving.render_inference_service(_spec(storage_uri="/tmp/x"))
    with pytest.raises(serving.ServingError) as err:  # KServe's schema: tolerationSeconds is an integer
        serving.render_inference_service(_spec(tolerations=[{"key": "k", "tolerationSeconds": "soon"}]))
    assert str(err.value).startswith(
        "InferenceService twt-student: spec.predictor.tolerations.0.tolerationSeconds"
    )
    assert serving.service_name("Org/My_Student.v2") == "org-my-student-v2"
    assert serving.service_name("7b-" + "x" * 80)[:4] == "m-7b" and len(serving.service_name("y" * 80)) == 40


class InferenceServiceApi(LocalHTTPServer):
    """POST creates (409 when it exists), PATCH merges, GET answers it with a status that turns Ready on
    the ``ready_after``-th read."""

    def __init__(self, ready_after: int = 2) -> None:
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.reads, self.ready_after = 0, ready_after
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_POST(self) -> None:
                outer.calls.append(("POST", self.path))
                obj = self._body()
                if obj["metadata"]["name"] in outer.objects:
                    return send_json(self, 409, {"kind": "Status", "message": "exists"})
                outer.objects[obj["metadata"]["name"]] = obj
                send_json(self, 201, obj)

            def do_PATCH(self) -> None:
                outer.calls.append(("PATCH", self.path))
                obj = outer.objects[self.path.rsplit("/", 1)[1]]
                obj["spec"] = self._body()["spec"]
                send_json(self, 200, obj)

            def do_GET(self) -> None:
                outer.reads += 1
                obj = dict(outer.objects[self.path.rsplit("/", 1)[1]])
                ready = "True" if outer.reads >= outer.ready_after else "False"
                condition = {"type": "Ready", "status": ready, "reason": "PredictorNotReady",
                             "message": "storage-initializer: 403 Forbidden"}  # fmt: skip
                obj["status"] = {"conditions": [condition], "url": "http://twt-student.team-a.svc"}
                send_json(self, 200, obj)

        self._serve(Handler)

    def client(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)


def test_the_serve_step_creates_then_updates_and_waits_until_ready(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(serving.time, "sleep", lambda s: None)
    promoted = tmp_path / "promoted.json"
    record = {
        "model": "twt-student",
        "version": "3",
        "ref": "twt-student@3",
        "uri": "s3://twt-registry/twt-student/3",
    }
    promoted.write_text(json.dumps(record))
    with InferenceServiceApi() as api:
        first = steps.serve_student(promoted, tmp_path / "served.json", api_client=api.client(), **POOL)
        promoted.write_text(json.dumps({**record, "version": "4", "uri": "s3://twt-registry/twt-student/4"}))
        second = steps.serve_student(promoted, api_client=api.client(), **POOL)
    assert (first["action"], second["action"]) == ("created", "updated")
    assert first["url"] == "http://twt-student.team-a.svc"
    assert (
        json.loads((tmp_path / "served.json").read_text())["storage_uri"] == "s3://twt-registry/twt-student/3"
    )
    path = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
    assert api.calls == [("POST", path), ("POST", path), ("PATCH", f"{path}/twt-student")]
    served = api.objects["twt-student"]["spec"]["predictor"]["model"]["storageUri"]
    assert served == "s3://twt-registry/twt-student/4"  # the same service rolled to the new version


def test_a_service_that_never_gets_ready_is_one_line_with_kserve_s_reason(monkeypatch) -> None:
    monkeypatch.setattr(serving.time, "sleep", lambda s: None)
    obj = serving.render_inference_service(_spec())
    with InferenceServiceApi(ready_after=10**6) as api:
        serving.apply(obj, api.client())
        with pytest.raises(serving.ServingError) as err:
            serving.wait_ready(obj, api.client(), timeout_s=0)
    assert str(err.value) == (
        "InferenceService twt-student in team-a not ready after 0 s: storage-initializer: 403 Forbidden"
    )
