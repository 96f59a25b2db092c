"""A small in-memory server that follows Kubeflow Model Registry's REST contract (API v1), for tests.

    server = ModelRegistryServer(token="t0k3n").start()      # http://127.0.0.1:<port>
    ModelRegistry("http://127.0.0.1", server.port, author="a", is_secure=False, user_token="t0k3n")

What the ``model-registry`` client calls to register and look up models, with the upstream status
codes and JSON field names (``kubeflow/model-registry`` ``api/openapi/model-registry.yaml``): list,
create, get and find (``?name=``, ``&parentResourceId=``) registered models and model versions, and
upsert/list a version's artifacts. Ids are server-made strings, times milliseconds since the epoch as
strings, lists ``{items, nextPageToken, pageSize, size}``, errors ``{code, message}``. With a token, a
request without ``Authorization: Bearer <token>`` gets 401. A version name is unique per registered model
(409 otherwise), as upstream. ``requests`` records (method, path) of every call.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from json_http import send_json

API = "/api/model_registry/v1"


class ModelRegistryServer:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.models: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.artifacts: dict[str, dict] = {}  # id -> artifact (with the owning version's id)
        self.requests: list[tuple[str, str]] = []
        self._ids = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # --- lifecycle

    def start(self) -> ModelRegistryServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_PATCH(self) -> None:
                server._handle(self, "PATCH")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    # --- helpers

    def _new(self, body: dict, **extra) -> dict:
        self._ids += 1
        now = str(int(time.time() * 1000))
        return {
            **body,
            **extra,
            "id": str(self._ids),
            "createTimeSinceEpoch": now,
            "lastUpdateTimeSinceEpoch": now,
        }

    @staticmethod
    def _page(items: list[dict]) -> dict:
        return {"items": items, "nextPageToken": "", "pageSize": len(items), "size": len(items)}

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.requests.append((method, url.path))
        if self.token and handler.headers.get("Authorization") != f"Bearer {self.token}":
            return send_json(
                handler, 401, {"code": "Unauthorized", "message": "missing or wrong bearer token"}
            )
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}") if length else {}
        with self._lock:
            status, answer = self._route(
                method, url.path.removeprefix(API).strip("/").split("/"), query, body
            )
        send_json(handler, status, answer)

    def _not_found(self, what: str) -> tuple[int, dict]:
        return 404, {"code": "NotFound", "message": f"{what} not found"}

    def _route(self, method: str, parts: list[str], query: dict, body: dict) -> tuple[int, dict]:
        match method, parts:
            case "GET", ["registered_models"]:
                return 200, self._page(list(self.models.values()))
            case "POST", ["registered_models"]:
                if any(m["name"] == body.get("name") for m in self.models.values()):
                    return 409, {"code": "Conflict", "message": f"registered model {body.get('name')} exists"}
                model = self._new(body, state=body.get("state", "LIVE"))
                self.models[model["id"]] = model
                return 201, model
            case "GET", ["registered_model"]:
                found = [m for m in self.models.values() if m["name"] == query.get("name")]
                return (200, found[0]) if found else self._not_found("registered model")
            case "GET", ["registered_models", model_id]:
                return (200, self.models[model_id]) if model_id in self.models else self._not_found("model")
            case "GET", ["registered_models", model_id, "versions"]:
                return 200, self._page(
                    [v for v in self.versions.values() if v["registeredModelId"] == model_id]
                )
            case "POST", ["model_versions"]:
                parent = body.get("registeredModelId")
                if parent not in self.models:
                    return 400, {
                        "code": "BadRequest",
                        "message": "registeredModelId names no registered model",
                    }
                if any(
                    v["registeredModelId"] == parent and v["name"] == body["name"]
                    for v in self.versions.values()
                ):
                    return 409, {"code": "Conflict", "message": f"model version {body['name']} exists"}
                version = self._new(body, state=body.get("state", "LIVE"))
                self.versions[version["id"]] = version
                return 201, version
            case "GET", ["model_version"]:
                found = [
                    v
                    for v in self.versions.values()
                    if v["name"] == query.get("name")
                    and v["registeredModelId"] == query.get("parentResourceId")
                ]
                return (200, found[0]) if found else self._not_found("model version")
            case "GET", ["model_versions", version_id]:
                return (
                    (200, self.versions[version_id])
                    if version_id in self.versions
                    else self._not_found("version")
                )
            case "POST", ["model_versions", version_id, "artifacts"]:
                if version_id not in self.versions:
                    return self._not_found("model version")
                if body.get("id") in self.artifacts:
                    self.artifacts[body["id"]].update(body)
                    return 200, self.artifacts[body["id"]]
                artifact = self._new(body, state=body.get("state", "LIVE"), modelVersionId=version_id)
                self.artifacts[artifact["id"]] = artifact
                return 201, {k: v for k, v in artifact.items() if k != "modelVersionId"}
            case "GET", ["model_versions", version_id, "artifacts"]:
                items = [a for a in self.artifacts.values() if a["modelVersionId"] == version_id]
                return 200, self._page([{k: v for k, v in a.items() if k != "modelVersionId"} for a in items])
            case "GET", ["model_artifact"]:
                found = [
                    a
                    for a in self.artifacts.values()
                    if a.get("name") == query.get("name")
                    and a["modelVersionId"] == query.get("parentResourceId")
                ]
                return (200, found[0]) if found else self._not_found("model artifact")
        return 404, {"code": "NotFound", "message": f"no route {method} /{'/'.join(parts)}"}
