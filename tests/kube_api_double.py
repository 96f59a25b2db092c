"""``KubeApiDouble``: a tiny Kubernetes API server for TrainJob/PyTorchJob submit-and-wait tests.

It speaks the real API's HTTP paths and bodies to the real ``kubernetes`` Python client, for exactly what
``twt.training.jobs`` uses: create/get/delete of ``trainjobs`` (trainer.kubeflow.org/v1alpha1) and
``pytorchjobs`` (kubeflow.org/v1) in a namespace, get a pod, list pods by label selector, read a pod's
log. It follows the real server independently of the code under test (each rule names its upstream
source; kubernetes/apiserver at 24a394e, kubernetes/apiextensions-apiserver at 1aa2717):

- **Group, version, kind**: the body's apiVersion and kind must be the URL's, else 400 (apiserver
  pkg/endpoints/handlers/create.go: "the API version in the data (...) does not match the expected API
  version (...)").
- **Namespace**: an empty one is the URL's; another one is 400 (apiserver pkg/registry/rest/meta.go,
  EnsureObjectNamespaceMatchesRequestNamespace).
- **Unknown fields** are pruned with a ``Warning`` header per field (the default ``fieldValidation=Warn``);
  ``fieldValidation=Strict`` refuses them with 400 "strict decoding error: unknown field" (apiserver
  create.go and rest.go ``fieldValidation``/``transformDecodeError``; apiextensions-apiserver
  pkg/apiserver/customresource_handler.go, pruning in pkg/apiserver/schema/pruning/algorithm.go).
- **Schema**: the pruned object is validated against the vendored CRD's ``openAPIV3Schema`` itself
  (twt/data/crds, read here as a file) with ``jsonschema``'s Draft 4 validator, the dialect OpenAPI v3.0
  schemas follow; not with twt's own ``twt.core.kube_schemas``. List maps (``x-kubernetes-list-type: map``)
  must not repeat a key (apiextensions-apiserver pkg/apiserver/schema/listtype/validation.go). Failures are
  422 ``Invalid``.
- **Names**: a DNS-1123 subdomain of at most 253 characters (apiextensions-apiserver
  pkg/registry/customresource/validator.go, NameIsDNSSubdomain), else 422. A TrainJob whose JobSet would
  make pods named over 63 characters fails as JobSet's webhook refuses that JobSet (kubernetes-sigs/jobset
  pkg/webhooks/jobset_webhook.go, podNameTooLongErrorMsg).
- **Finalizers**: DELETE of an object with finalizers only sets ``deletionTimestamp``; it goes once its
  finalizers are removed, here by the stand-in controller after ``finalizer_ticks`` GETs (None: never)
  (apiserver pkg/registry/generic/registry/store.go, updateForGracefulDeletionAndFinalizers).
- 409 ``AlreadyExists``, 404 ``NotFound``, an admission webhook may deny (403) after validation.

What the operator would do is scripted by ``scenario``: each GET of the job advances it one tick.

- ``succeed``: pods Pending, then Running with log lines, then the job Complete/Succeeded.
- ``fail``: the same, then the job Failed with the operator's message (JobSet ``FailedJobs``).
- ``unschedulable``: pods stay Pending with the scheduler's ``Unschedulable`` condition.
- ``deny``: the trainer's validating webhook denies the create (runtime not found).
- ``execute``: a stand-in kubelet: ``executor(job)`` (given by the test) runs the job's pods on this
  machine in a thread and returns (exit code, log text); the job runs while it does, then ends by its
  exit code, and the log is the first pod's. ``secrets`` holds the namespace's Secrets for it, and
  ``pods`` the pods a test puts there (the submitting step's own).
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema

CRDS = Path(__file__).resolve().parents[1] / "twt" / "data" / "crds"
RESOURCES = {  # plural -> (group, version, kind, vendored CRD file)
    "trainjobs": ("trainer.kubeflow.org", "v1alpha1", "TrainJob", "trainer.kubeflow.org_trainjobs.json"),
    "pytorchjobs": ("kubeflow.org", "v1", "PyTorchJob", "kubeflow.org_pytorchjobs.json"),
}
JOB_PATH = re.compile(r"^/apis/([^/]+)/([^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?$")
PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(/log)?$")
# k8s.io/apimachinery pkg/util/validation/validation.go
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
OBJECT_META = {  # ObjectMeta's fields (k8s.io/apimachinery pkg/apis/meta/v1/types.go); others are pruned
    "name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
    "finalizers", "managedFields", "selfLink",
}  # fmt: skip


def status_body(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


class Refused(Exception):
    """An API error answer: HTTP code, Status reason, message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def crd_schema(plural: str) -> dict:
    """The ``openAPIV3Schema`` of the vendored CRD behind ``plural``, read from its file."""
    _group, version, _kind, file = RESOURCES[plural]
    return json.loads((CRDS / file).read_text(encoding="utf-8"))["versions"][version]


def prune(node, schema: dict, path: str, unknown: list[str]) -> None:
    """Drop (in place) the fields ``schema`` does not know, recording their paths; the root's metadata
    keeps ObjectMeta's fields."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            prune(item, schema.get("items") or {}, f"{path}[{i}]", unknown)
        return
    if not isinstance(node, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    known = schema.get("properties")
    extra = schema.get("additionalProperties")
    for key in list(node):
        where = f"{path}.{key}" if path else key
        if known is not None and key in known:
            prune(node[key], known[key], where, unknown)
        elif isinstance(extra, dict):
            prune(node[key], extra, where, unknown)
        elif known is not None or extra is False:
            unknown.append(where)
            del node[key]


def list_map_duplicates(node, schema: dict, path: str) -> list[str]:
    """``path: Duplicate value: {...}`` for each repeated key of a ``x-kubernetes-list-type: map``."""
    found = []
    if isinstance(node, list):
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen = set()
            for i, item in enumerate(node):
                key = json.dumps({k: item.get(k) for k in keys}, sort_keys=True)
                if key in seen:
                    found.append(f"{path}[{i}]: Duplicate value: {key}")
                seen.add(key)
        for i, item in enumerate(node):
            found += list_map_duplicates(item, schema.get("items") or {}, f"{path}[{i}]")
    elif isinstance(node, dict):
        properties = schema.get("properties") or {}
        for key, value in node.items():
            sub = properties.get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                found += list_map_duplicates(value, sub, f"{path}.{key}" if path else key)
    return found


def admit(plural: str, group: str, version: str, namespace: str, body: dict, strict: bool) -> list[str]:
    """The create checks in the real server's order; the warnings of an accepted object (pruned in place),
    else ``Refused``."""
    kind = RESOURCES[plural][2]
    if body.get("apiVersion") != f"{group}/{version}" or body.get("kind") != kind:
        message = (
            f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version "
            f"({group}/{version})"
        )
        raise Refused(400, "BadRequest", message)
    schema = crd_schema(plural)
    unknown: list[str] = []
    prune(body, schema, "", unknown)  # the CRD's metadata is a bare object: ObjectMeta's fields below
    prune(body.get("metadata") or {}, {"properties": {key: {} for key in OBJECT_META}}, "metadata", unknown)
    if unknown and strict:
        problems = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise Refused(400, "BadRequest", f"{kind} in version {version!r} cannot be handled as a {kind}: "
                      f"strict decoding error: {problems}")  # fmt: skip
    meta = body.setdefault("metadata", {})
    if meta.get("namespace", "") not in ("", namespace):
        raise Refused(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    meta["namespace"] = namespace
    name = str(meta.get("name", ""))
    problems = []
    if not name:
        problems.append("metadata.name: Required value: name or generateName is required")
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        problems.append(
            f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
            "case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
            "(at most 253)"
        )
    validator = jsonschema.Draft4Validator({**schema, "properties": {**schema["properties"], "metadata": {}}})
    for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        problems.append(f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}")
    problems += list_map_duplicates(body, schema, "")
    if problems:
        raise Refused(422, "Invalid", f'{kind}.{group} "{name}" is invalid: {problems[0]}')
    return [f'unknown field "{u}"' for u in unknown]


def pod_name_too_long(obj: dict) -> str | None:
    """JobSet's refusal of a TrainJob's JobSet whose longest pod name exceeds 63 characters."""
    if obj["kind"] != "TrainJob":
        return None
    nodes = obj["spec"].get("trainer", {}).get("numNodes", 1)
    longest = f"{obj['metadata']['name']}-node-0-{nodes - 1}-abcde"
    if len(longest) > 63:
        return "JobSet name is too long, pod names generated for this JobSet will exceed 63 characters"
    return None


class KubeApiDouble:
    """Start with ``with KubeApiDouble("succeed") as api:``; ``api.url`` is the server's address."""

    def __init__(self, scenario: str = "succeed", executor=None, finalizer_ticks: int | None = 1) -> None:
        self.scenario = scenario
        self.executor = executor
        self.finalizer_ticks = finalizer_ticks
        self.executed: dict[tuple[str, str, str], tuple[int, str] | None] = {}
        self.jobs: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.ticks: dict[tuple[str, str, str], int] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, name) -> key -> value
        self.pods: dict[tuple[str, str], dict] = {}  # (namespace, name) -> a Pod a test put there
        self.requests: list[tuple[str, str]] = []
        self.warnings: list[str] = []
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
        result = self.executor(copy.deepcopy(obj))
        with self.lock:
            self.executed[key] = result

    def _advance(self, key: tuple[str, str, str]) -> None:
        obj, tick = self.jobs[key], self.ticks[key] + 1
        self.ticks[key] = tick
        if obj["metadata"].get("deletionTimestamp"):  # the controller finishing its cleanup
            if self.finalizer_ticks is not None and tick >= self.finalizer_ticks:
                obj["metadata"]["finalizers"] = []
            return
        if self.scenario == "execute":  # running until the executor returns, then ends as it did
            result = self.executed.get(key)
            tick = 2 if result is None else 4
            self.ticks[key] = tick
        if self.scenario == "unschedulable" or tick < 2:
            return
        running = {"type": "Running", "status": "True", "reason": "Running", "message": "pods running"}
        if refused := pod_name_too_long(obj):
            failed = {
                "type": "Failed",
                "status": "True",
                "reason": "JobSetCreationFailed",
                "message": refused,
            }
            obj["status"] = {"conditions": [failed]}
            return
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

    def _create(
        self, plural: str, group: str, version: str, ns: str, body: dict, query: dict
    ) -> tuple[dict, list]:
        strict = query.get("fieldValidation", ["Warn"])[0] == "Strict"
        warnings = admit(plural, group, version, ns, body, strict)
        if query.get("fieldValidation", ["Warn"])[0] == "Ignore":
            warnings = []
        name = body["metadata"]["name"]
        key = (plural, ns, name)
        if self.scenario == "deny":  # validating admission runs after the schema (generic registry Create)
            runtime = f"TrainingRuntime {ns}/{body['spec']['runtimeRef']['name']}"
            message = (
                'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: '
                f'spec.runtimeRef: Not found: "{runtime}"'
            )
            raise Refused(403, "Forbidden", message)
        if key in self.jobs:
            raise Refused(409, "AlreadyExists", f'{plural}.{group} "{name}" already exists')
        body["metadata"].update(uid=f"uid-{len(self.jobs)}", resourceVersion="1")
        self.jobs[key], self.ticks[key] = body, 0
        if self.scenario == "execute":
            threading.Thread(target=self._execute, args=(key, body), daemon=True).start()
        return body, warnings

    def _delete(self, key: tuple[str, str, str]) -> dict:
        obj = self.jobs[key]
        if obj["metadata"].get("finalizers"):
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            obj["metadata"].setdefault("deletionTimestamp", now)
            self.ticks[key] = 0
            return obj
        del self.jobs[key]
        return {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def _get(self, key: tuple[str, str, str]) -> dict:
        self._advance(key)
        obj = self.jobs[key]
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            del self.jobs[key]
            raise Refused(404, "NotFound", f'{key[0]} "{key[2]}" not found')
        return obj

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body, content_type: str = "application/json", warnings=()) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                for warning in warnings:  # RFC 7234 warn-code 299, as the API server writes them
                    self.send_header("Warning", f'299 - "{warning}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                api.requests.append((method, url.path))
                try:
                    with api.lock:
                        return self._answer(method, url)
                except Refused as refused:
                    self._send(refused.code, status_body(refused.code, refused.reason, refused.message))

            def _answer(self, method: str, url) -> None:
                if m := JOB_PATH.match(url.path):
                    group, version, ns, plural, name = m.groups()
                    if plural not in RESOURCES or RESOURCES[plural][:2] != (group, version):
                        raise Refused(404, "NotFound", "the server could not find the requested resource")
                    if method == "POST" and name is None:
                        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                        obj, warnings = api._create(
                            plural, group, version, ns, body, urllib.parse.parse_qs(url.query)
                        )
                        api.warnings += warnings
                        return self._send(201, obj, warnings=warnings)
                    key = (plural, ns, name)
                    if key not in api.jobs:
                        raise Refused(404, "NotFound", f'{plural}.{group} "{name}" not found')
                    if method == "GET":
                        return self._send(200, api._get(key))
                    if method == "DELETE":
                        return self._send(200, api._delete(key))
                    raise Refused(405, "MethodNotAllowed", method)
                if (m := PODS_PATH.match(url.path)) and method == "GET":
                    ns, pod, log = m.groups()
                    if pod and log:
                        return self._send(200, api._log(ns, pod), "text/plain")
                    if pod:
                        if (ns, pod) not in api.pods:
                            raise Refused(404, "NotFound", f'pods "{pod}" not found')
                        return self._send(200, api.pods[(ns, pod)])
                    selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
                    items = api._pods(ns, selector)
                    return self._send(
                        200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
                    )
                raise Refused(404, "NotFound", f"the server could not find {url.path}")

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler
