"""``KubeApiDouble``: a tiny Kubernetes API server for TrainJob/PyTorchJob submit-and-wait tests.

It speaks the real API's HTTP paths and bodies to the real ``kubernetes`` Python client, for exactly what
``twt.trainjob`` uses: create/get/delete of ``trainjobs`` (trainer.kubeflow.org/v1alpha1) and
``pytorchjobs`` (kubeflow.org/v1) in a namespace, list pods by label selector, read a pod's log. Like the
API server, it validates a created object against the CRD's OpenAPI schema (422 ``Invalid``, a ``Status``
body), answers 409 ``AlreadyExists`` and 404 ``NotFound``, and an admission webhook may deny (403). What
the operator would do is scripted by ``scenario``: each GET of the job advances it one tick.

- ``succeed``: pods Pending, then Running with log lines, then the job Complete/Succeeded.
- ``fail``: the same, then the job Failed with the operator's message (JobSet ``FailedJobs``).
- ``unschedulable``: pods stay Pending with the scheduler's ``Unschedulable`` condition.
- ``deny``: the trainer's validating webhook denies the create (runtime not found).
- ``execute``: a stand-in kubelet: ``executor(job)`` (given by the test) runs the job's command on this
  machine in a thread and returns (exit code, log text); the job runs while it does, then ends by its
  exit code, and the log is the first pod's.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from twt.kube_schemas import schema_errors

PLURALS = {"trainjobs": "TrainJob", "pytorchjobs": "PyTorchJob"}
JOB_PATH = re.compile(r"^/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?$")
PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)/log)?$")


def status_body(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


class KubeApiDouble:
    """Start with ``with KubeApiDouble("succeed") as api:``; ``api.url`` is the server's address."""

    def __init__(self, scenario: str = "succeed", executor=None) -> None:
        self.scenario = scenario
        self.executor = executor
        self.executed: dict[tuple[str, str, str], tuple[int, str] | None] = {}
        self.jobs: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.ticks: dict[tuple[str, str, str], int] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> KubeApiDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what the operator would do -----------------------------------------------------------------

    def _execute(self, key: tuple[str, str, str], obj: dict) -> None:
        self.executed[key] = None
        result = self.executor(obj)
        with self.lock:
            self.executed[key] = result

    def _advance(self, key: tuple[str, str, str]) -> None:
        obj, tick = self.jobs[key], self.ticks[key] + 1
        self.ticks[key] = tick
        if self.scenario == "execute":  # running until the executor returns, then ends as it did
            result = self.executed.get(key)
            tick = 2 if result is None else 4
            self.ticks[key] = tick
        if self.scenario == "unschedulable" or tick < 2:
            return
        running = {"type": "Running", "status": "True", "reason": "Running", "message": "pods running"}
        if obj["kind"] == "TrainJob":
            nodes = obj["spec"]["trainer"].get("numNodes", 1)
            active = nodes if tick < 4 else 0
            obj["status"] = {"jobsStatus": [{"name": "node", "active": active, "ready": active, "failed": 0,
                                             "succeeded": 0, "suspended": 0}]}  # fmt: skip
        else:
            obj["status"] = {"conditions": [running]}
        if tick >= 4:
            if self._failed(key):
                done = {"type": "Failed", "status": "True", "reason": "FailedJobs",
                        "message": "jobset failed due to one or more job failures"}  # fmt: skip
            else:
                done = {"type": "Complete" if obj["kind"] == "TrainJob" else "Succeeded", "status": "True",
                        "reason": "AllJobsCompleted", "message": "jobset completed successfully"}  # fmt: skip
            obj["status"]["conditions"] = [done]

    def _pods(self, namespace: str, selector: str) -> list[dict]:
        label, _, value = selector.partition("=")
        pods = []
        for (_plural, ns, name), obj in self.jobs.items():
            if ns != namespace:
                continue
            labels = {"jobset.sigs.k8s.io/jobset-name": name} if obj["kind"] == "TrainJob" else {
                "training.kubeflow.org/job-name": name}  # fmt: skip
            if labels.get(label) != value:
                continue
            tick = self.ticks[(_plural, ns, name)]
            phase = "Pending" if tick < 2 or self.scenario == "unschedulable" else "Running"
            if tick >= 4:
                phase = "Failed" if self._failed((_plural, ns, name)) else "Succeeded"
            conditions = []
            if self.scenario == "unschedulable":
                message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
                conditions = [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                ]
            pod_name = f"{name}-node-0-0" if obj["kind"] == "TrainJob" else f"{name}-master-0"
            pods.append({"metadata": {"name": pod_name, "namespace": ns, "labels": labels},
                         "status": {"phase": phase, "conditions": conditions}})  # fmt: skip
        return pods

    def _failed(self, key: tuple[str, str, str]) -> bool:
        if self.scenario == "execute":
            result = self.executed.get(key)
            return result is not None and result[0] != 0
        return self.scenario == "fail"

    def _log(self, namespace: str, pod: str) -> str:
        for (plural, ns, name), _obj in self.jobs.items():
            if ns == namespace and pod.startswith(name) and self.scenario == "execute":
                result = self.executed.get((plural, ns, name))
                return result[1] if result else ""
            if ns == namespace and pod.startswith(name):
                tick = self.ticks[(plural, ns, name)]
                lines = [f"update {i}/4 loss {5 - i * 0.5:.2f}" for i in range(1, min(tick, 4) + 1)]
                if tick >= 4 and self.scenario == "fail":
                    lines.append("twt: error: CUDA out of memory")
                return "\n".join(lines) + "\n"
        raise KeyError(pod)

    # --- HTTP ------------------------------------------------------------------------------------------

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                api.requests.append((method, url.path))
                with api.lock:
                    if m := JOB_PATH.match(url.path):
                        return self._job(method, *m.groups())
                    if (m := PODS_PATH.match(url.path)) and method == "GET":
                        ns, pod = m.groups()
                        if pod:
                            return self._send(200, api._log(ns, pod), "text/plain")
                        selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
                        items = api._pods(ns, selector)
                        return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                                "items": items})  # fmt: skip
                self._send(404, status_body(404, "NotFound", f"the server could not find {url.path}"))

            def _job(self, method: str, group: str, version: str, ns: str, plural: str, name: str | None):
                kind = PLURALS.get(plural)
                if kind is None:
                    return self._send(
                        404, status_body(404, "NotFound", "the server could not find the resource")
                    )
                resource = f"{plural}.{group}"
                if method == "POST":
                    obj = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    key = (plural, ns, obj["metadata"]["name"])
                    if api.scenario == "deny":
                        runtime = f"TrainingRuntime {ns}/{obj['spec']['runtimeRef']['name']}"
                        message = (
                            'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: '
                            f'spec.runtimeRef: Not found: "{runtime}"'
                        )
                        return self._send(403, status_body(403, "Forbidden", message))
                    errors = schema_errors(obj)
                    if errors:
                        message = f'{kind}.{group} "{key[2]}" is invalid: {errors[0]}'
                        return self._send(422, status_body(422, "Invalid", message))
                    if key in api.jobs:
                        message = f'{resource} "{key[2]}" already exists'
                        return self._send(409, status_body(409, "AlreadyExists", message))
                    obj["metadata"].update(uid=f"uid-{len(api.jobs)}", resourceVersion="1", namespace=ns)
                    api.jobs[key], api.ticks[key] = obj, 0
                    if api.scenario == "execute":
                        threading.Thread(target=api._execute, args=(key, obj), daemon=True).start()
                    return self._send(201, obj)
                key = (plural, ns, name)
                if key not in api.jobs:
                    return self._send(404, status_body(404, "NotFound", f'{resource} "{name}" not found'))
                if method == "GET":
                    api._advance(key)
                    return self._send(200, api.jobs[key])
                if method == "DELETE":
                    del api.jobs[key]
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                return self._send(405, status_body(405, "MethodNotAllowed", method))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler
