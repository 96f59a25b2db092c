"""A real S3 HTTP server for the tests (moto, in-process, on 127.0.0.1) and what the fixtures hand out.

The fixtures ``s3_endpoint``, ``s3`` and ``root`` live in ``tests/conftest.py``; tests that stop a server
halfway start one of their own with ``start_server`` (moto's stored objects are shared by every server in
the process, so a restarted server on the same port sees what the stopped one had).
"""

from __future__ import annotations

import dataclasses
import threading

from minio import Minio
from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

from twt.core.store import S3Settings

KEY = "testing"  # moto accepts any credentials
FAST = {"attempts": 3, "backoff_s": 0.05, "connect_timeout_s": 1.0, "read_timeout_s": 5.0}


_PUT_LOCK = threading.Lock()


def _atomic_conditional_puts() -> None:
    """Make moto's ``If-None-Match: *`` PUT atomic, as on S3 and MinIO: moto 5 checks for the key and then
    stores it in two steps (``S3Response.put_object``), so two threads of the server could both pass the
    check. One lock around conditional PUTs closes that window; nothing else changes."""
    put = S3Response.put_object
    if getattr(put, "_twt_atomic", False):
        return

    def locked_put(self: S3Response, *args: object, **kwargs: object) -> object:
        if self.headers.get("If-None-Match") != "*":
            return put(self, *args, **kwargs)
        with _PUT_LOCK:
            return put(self, *args, **kwargs)

    locked_put._twt_atomic = True  # type: ignore[attr-defined]
    S3Response.put_object = locked_put  # type: ignore[method-assign]


def start_server(port: int = 0) -> tuple[ThreadedMotoServer, str]:
    _atomic_conditional_puts()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"{host}:{port}"


@dataclasses.dataclass
class S3:
    bucket: str
    settings: S3Settings  # what the environment gives, with fast retries
    client: Minio  # a plain SDK client, to look at or tamper with objects behind the store's back

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@dataclasses.dataclass
class Root:
    """A registry root: a local directory (no settings, no S3) or a prefix in a fresh bucket."""

    uri: str
    settings: S3Settings | None
    s3: S3 | None
