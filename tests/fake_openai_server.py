"""A small OpenAI-compatible HTTP server for tests: ``/v1/completions`` and ``/v1/chat/completions``.

Behaviours are scripted per request, in order (``server.script = ["429", "ok"]``); when the script is empty
every request gets ``"ok"``:
  "ok"         200 with ``n`` choices whose text comes from ``server.reply(prompt, index)``
  "429", "500" that status with an OpenAI-style error body (and ``retry-after-ms: 1`` so retries are quick)
  "401"        401 whose message echoes the API key it was sent (as careless servers do)
  "sleep:S"    sleep S seconds, then answer "ok" (for timeouts)
  "garbage"    200 with a body that is not JSON
  "wrong"      200 with JSON of the wrong shape (no choices)

    with FakeOpenAIServer() as server:
        client = OpenAI(base_url=server.base_url, api_key="k")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_LOGPROB = -0.25  # every fake token has this log-prob


def default_reply(prompt: str, index: int) -> str:
    return f"step {index}\nAnswer: {len(prompt) % 10}"


class FakeOpenAIServer:
    """A threaded HTTP server on 127.0.0.1 at a free port; records every request it sees."""

    def __init__(self, reply: Callable[[str, int], str] = default_reply, delay_s: float = 0.0):
        self.reply = reply
        self.delay_s = delay_s  # added to every request (to observe concurrency)
        self.script: list[str] = []
        self.requests: list[dict] = []  # {"path", "headers", "body"} per request
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_behaviour(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else "ok"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._respond(body, server._next_behaviour())
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _respond(self, body: dict, behaviour: str) -> None:
                time.sleep(server.delay_s)
                if behaviour.startswith("sleep:"):
                    time.sleep(float(behaviour.split(":", 1)[1]))
                    behaviour = "ok"
                if behaviour == "401":  # like a server that echoes the key it refuses
                    key = self.headers.get("authorization", "").removeprefix("Bearer ")
                    message = f"Incorrect API key provided: {key}"
                    error = {"error": {"message": message, "type": "invalid_request_error", "code": "401"}}
                    return self._send(401, json.dumps(error).encode(), {})
                if behaviour in ("429", "500"):
                    error = {"error": {"message": f"scripted {behaviour}", "type": "test", "code": behaviour}}
                    return self._send(int(behaviour), json.dumps(error).encode(), {"retry-after-ms": "1"})
                if behaviour == "garbage":
                    return self._send(200, b"<html>this is not json", {})
                if behaviour == "wrong":
                    return self._send(200, json.dumps({"object": "text_completion"}).encode(), {})
                if self.path.endswith("/chat/completions"):
                    return self._send(200, json.dumps(self._chat(body)).encode(), {})
                if self.path.endswith("/completions"):
                    return self._send(200, json.dumps(self._completion(body)).encode(), {})
                return self._send(404, b'{"error": {"message": "no such route"}}', {})

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def _texts(self, prompt: str, body: dict) -> list[tuple[str, list[str], str]]:
                out = []
                for index in range(body.get("n") or 1):
                    text = server.reply(prompt, index)
                    tokens = text.split(" ")
                    budget = body.get("max_tokens") or 10**6
                    reason = "length" if len(tokens) > budget else "stop"
                    tokens = tokens[:budget]
                    out.append((" ".join(tokens), tokens, reason))
                return out

            def _completion(self, body: dict) -> dict:
                choices = []
                for index, (text, tokens, reason) in enumerate(self._texts(body["prompt"], body)):
                    logprobs = (
                        {
                            "tokens": tokens,
                            "token_logprobs": [TOKEN_LOGPROB] * len(tokens),
                            "top_logprobs": None,
                            "text_offset": [],
                        }
                        if body.get("logprobs") is not None
                        else None
                    )
                    choices.append(
                        {"index": index, "text": text, "finish_reason": reason, "logprobs": logprobs}
                    )
                used = sum(len(t) for _, t, _ in self._texts(body["prompt"], body))
                return {
                    "id": "cmpl-test",
                    "object": "text_completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": choices,
                    "usage": {"prompt_tokens": 1, "completion_tokens": used, "total_tokens": used + 1},
                }

            def _chat(self, body: dict) -> dict:
                prompt = body["messages"][-1]["content"]
                choices = []
                for index, (text, tokens, reason) in enumerate(self._texts(prompt, body)):
                    content = [
                        {"token": t, "logprob": TOKEN_LOGPROB, "bytes": None, "top_logprobs": []}
                        for t in tokens
                    ]
                    choices.append(
                        {
                            "index": index,
                            "finish_reason": reason,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": {"content": content} if body.get("logprobs") else None,
                        }
                    )
                return {
                    "id": "chat-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": choices,
                }

        return Handler
