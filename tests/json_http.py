"""One JSON answer from a test HTTP server (the doubles of KFP's API server and Kubeflow Model Registry)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def send_json(handler: BaseHTTPRequestHandler, status: int, body: dict) -> None:
    """Answer ``status`` with ``body`` as ``application/json``."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
