"""A small in-memory server that follows Kubeflow Model Registry's REST contract (API v1), for tests.

    server = ModelRegistryServer(token="t0k3n").start()      # http://127.0.0.1:<port>
    ModelRegistry("http://127.0.0.1", server.port, author="a", is_secure=False, user_token="t0k3n")

What the ``model-registry`` client calls to register and look up models, with the upstream status
codes and JSON field names (``kubeflow/model-registry`` ``api/openapi/model-registry.yaml``): list,
create, get and find (``?name=``, ``&parentResourceId=``) registered models and model versions, and
upsert/list a version's artifacts. Ids are server-made strings, times milliseconds since the epoch as
strings, lists ``{items, nextPageToken, pageSize, size}``, errors ``{code, message}``. With a token, a
request without ``Authorization: Bearer <token>`` gets 401 (as the auth proxy in front of a registry
answers). A version name is unique per registered model (409 otherwise), as upstream. ``requests``
records (method, path, query) of every call.

Paging follows the upstream server (``internal/platform/db/repository/generic_repository.go`` and
``internal/server/openapi/api_model_registry_service_service.go``, kubeflow/model-registry main, 2026-12):
without ``pageSize`` every item comes in one page; with it (``^[1-9][0-9]{0,8}$``, else 400) a page
holds at most that many, by id, and ``nextPageToken`` is an opaque cursor, empty on the last page; a
request with an empty token starts again from the first page; a token the server did not make is 400.
Custom properties are checked against ``MetadataValue`` in ``api/openapi/model-registry.yaml``: a
``metadataType`` of the six, exactly its fields, ``int_value`` an int32 as a string, ``double_value``
a number, ``bool_value`` a boolean, ``string_value`` a string; anything else is 400.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from json_http import send_json

API = "/api/model_registry/v1"
INT32 = re.compile(r"-?([1-9][0-9]{0,8}|0)")


def _text(value: object) -> bool:
    return isinstance(value, str)


# MetadataValue's variants: metadataType -> {field: check} (api/openapi/model-registry.yaml)
METADATA_FIELDS = {
    "MetadataStringValue": {"string_value": _text},
    "MetadataIntValue": {"int_value": lambda v: isinstance(v, str) and INT32.fullmatch(v) is not None},
    "MetadataDoubleValue": {
        "double_value": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    },
    "MetadataBoolValue": {"bool_value": lambda v: isinstance(v, bool)},
    "MetadataStructValue": {"struct_value": _text},
    "MetadataProtoValue": {"type": _text, "proto_value": _text},
}


class ModelRegistryServer:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.models: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.artifacts: dict[str, dict] = {}  # id -> artifact (with the owning version's id)
        self.requests: list[tuple[str, str, dict]] = []
        self.unavailable = 0  # answer this many next requests with 503 (a restarting server)
        self.unavailable_paths: set[str] = set()  # answer the next POST to each of these paths with 503
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
    def _page(items: list[dict], query: dict) -> tuple[int, dict]:
        """One page of ``items`` (ordered by id) for the query's ``pageSize`` and ``nextPageToken``."""
        items = sorted(items, key=lambda item: int(item["id"]))
        size = query.get("pageSize", "")
        if size and not re.fullmatch(r"[1-9][0-9]{0,8}", size):
            return 400, {"code": "BadRequest", "message": f"invalid pageSize {size!r}"}
        token = query.get("nextPageToken", "")
        if token:
            try:
                after = int(json.loads(base64.urlsafe_b64decode(token))["id"])
            except (ValueError, KeyError, TypeError):
                return 400, {"code": "BadRequest", "message": "invalid nextPageToken"}
            items = [item for item in items if int(item["id"]) > after]
        limit = int(size) if size else len(items)
        page, more = items[:limit], len(items) > limit
        cursor = json.dumps({"id": page[-1]["id"]}).encode() if more else b""
        next_token = base64.urlsafe_b64encode(cursor).decode() if more else ""
        return 200, {"items": page, "nextPageToken": next_token, "pageSize": limit, "size": len(page)}

    @staticmethod
    def property_errors(properties: object) -> list[str]:
        """What is wrong with ``customProperties`` against the API's ``MetadataValue`` (none: ``[]``)."""
        if properties is None:
            return []
        if not isinstance(properties, dict):
            return ["customProperties is not an object"]
        errors = []
        for name, value in properties.items():
            kind = value.get("metadataType") if isinstance(value, dict) else None
            if kind not in METADATA_FIELDS:
                errors.append(f"customProperties.{name}: unknown metadataType {kind!r}")
                continue
            fields = METADATA_FIELDS[kind]
            if set(value) != {"metadataType", *fields}:
                errors.append(f"customProperties.{name}: {kind} takes exactly {sorted(fields)}")
                continue
            for field, valid in fields.items():
                if not valid(value[field]):
                    errors.append(f"customProperties.{name}.{field}: {value[field]!r} is not a valid {kind}")
        return errors

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.requests.append((method, url.path, query))
        if self.unavailable > 0 or (method == "POST" and url.path in self.unavailable_paths):
            self.unavailable = max(0, self.unavailable - 1)
            self.unavailable_paths.discard(url.path)
            return send_json(handler, 503, {"code": "Unavailable", "message": "upstream connect error"})
        if self.token and handler.headers.get("Authorization") != f"Bearer {self.token}":
            return send_json(
                handler, 401, {"code": "Unauthorized", "message": "missing or wrong bearer token"}
            )
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"{}") if length else {}
        errors = self.property_errors(body.get("customProperties")) if method in ("POST", "PATCH") else []
        if errors:
            return send_json(handler, 400, {"code": "BadRequest", "message": "; ".join(errors)})
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
                return self._page(list(self.models.values()), query)
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
                return self._page(
                    [v for v in self.versions.values() if v["registeredModelId"] == model_id], query
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
                return self._page(
                    [{k: v for k, v in a.items() if k != "modelVersionId"} for a in items], query
                )
            case "GET", ["model_artifact"]:
                found = [
                    a
                    for a in self.artifacts.values()
                    if a.get("name") == query.get("name")
                    and a["modelVersionId"] == query.get("parentResourceId")
                ]
                return (200, found[0]) if found else self._not_found("model artifact")
        return 404, {"code": "NotFound", "message": f"no route {method} /{'/'.join(parts)}"}
