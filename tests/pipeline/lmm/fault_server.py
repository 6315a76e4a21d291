"""A fault-injecting OpenAI-compatible chat server for the LMM client tests.

Real HTTP on 127.0.0.1 in a background thread. Each request carries an ``id`` in its ``geopixeld_facts``;
the server looks the id up in ``server.plan`` (default ``"ok"``) to decide how to answer. A plan is a
comma-separated list of steps, one per attempt for that id; the last step repeats:

==================  ===========================================================================
step                answer
==================  ===========================================================================
``ok``              200 with a chat completion ("answer <id>", usage 10 in / 5 out)
``delay:S``         wait S seconds, then ``ok``
``429:S``           429 with ``Retry-After: S``
``429ms:MS``        429 with ``retry-after-ms: MS``
``500`` / ``503``   that status with an OpenAI-style error body
``400`` ``401``...  that status (any 4xx)
``sleep:S``         wait S seconds before answering ``ok`` (longer than the client's timeout)
``malformed``       200 with a body that is not JSON
``truncated``       200 with a chat completion cut in half (Content-Length of the cut body, as a proxy does)
``cut``             200 announcing the whole body, then the connection closes after half of it
``empty``           200 with JSON that has no choices
``blank``           200 with a choice whose content is empty (``finish_reason: length``)
``drop``            close the connection without any response
==================  ===========================================================================

With ``server.reasoning = True`` the server behaves like an OpenAI reasoning model before looking at the plan:
a body with ``max_tokens`` gets 400 ``unsupported_parameter``, a temperature other than 1 gets 400
``unsupported_value`` (OpenAI's error bodies). With ``server.structured = False`` a ``response_format`` gets
400 as well.

A grouped request (facts with ``objects``) has the id ``"a+b+c"`` of its objects and answers
``{"objects": [{"mark": m, "description": "answer <id>"}, ...]}`` unless ``server.answers`` says otherwise.

The plan is server state, not part of the request, so a test can change it between runs without
changing the requests' cache keys. The server records every request (time, id, attempt number, headers,
body) and the most requests it ever had in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    """One request as the server saw it."""

    at: float
    id: str
    attempt: int
    step: str
    authorization: str | None
    body: dict[str, Any]


@dataclass
class FaultLog:
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[Seen] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0

    def ids(self) -> list[str]:
        with self.lock:
            return [s.id for s in self.seen]

    def times(self, request_id: str) -> list[float]:
        with self.lock:
            return [s.at for s in self.seen if s.id == request_id]


class FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": {"message": message, "type": "test_error", "code": str(status)}})
        self._send(status, body.encode(), headers)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        facts = body.get("geopixeld_facts") or {}
        request_id = str(facts.get("id", "?"))
        if isinstance(facts.get("objects"), list):  # a grouped request: its id joins its objects' ids
            request_id = "+".join(str(o.get("id", "?")) for o in facts["objects"])
        log = self.server.log
        with log.lock:
            attempt = log.attempts.get(request_id, 0) + 1
            log.attempts[request_id] = attempt
            steps = self.server.plan.get(request_id, "ok").split(",")
            step = steps[min(attempt, len(steps)) - 1].strip()
            log.seen.append(
                Seen(time.monotonic(), request_id, attempt, step, self.headers.get("Authorization"), body)
            )
            log.in_flight += 1
            log.max_in_flight = max(log.max_in_flight, log.in_flight)
        try:
            if self._refuse(body):
                return
            self._answer(step, request_id, body)
        finally:
            with log.lock:
                log.in_flight -= 1

    def _refuse(self, body: dict[str, Any]) -> bool:
        """Answer 400 as OpenAI does for a field the model does not accept; True when it did."""
        problem: tuple[str, str, str] | None = None
        if self.server.reasoning and "max_tokens" in body:
            problem = ("max_tokens", "unsupported_parameter",
                       "Unsupported parameter: 'max_tokens' is not supported with this model. "
                       "Use 'max_completion_tokens' instead.")  # fmt: skip
        elif self.server.reasoning and body.get("temperature", 1) != 1:
            problem = ("temperature", "unsupported_value",
                       f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
                       "model. Only the default (1) value is supported.")  # fmt: skip
        elif not self.server.structured and "response_format" in body:
            problem = ("response_format", "unsupported_parameter",
                       "Unsupported parameter: 'response_format' is not supported with this model.")  # fmt: skip
        if problem is None:
            return False
        param, code, message = problem
        error = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        self._send(400, json.dumps(error).encode())
        return True

    def _answer(self, step: str, request_id: str, body: dict[str, Any]) -> None:
        kind, _, arg = step.partition(":")
        if kind in ("delay", "sleep"):
            self.server.stopping.wait(float(arg))
            kind = "ok"
        facts = body.get("geopixeld_facts") or {}
        default = f"answer {request_id}"
        if isinstance(facts.get("objects"), list):
            default = json.dumps({"objects": [{"mark": o.get("mark"), "description": f"answer {o.get('id')}"}
                                              for o in facts["objects"]]})  # fmt: skip
        content = self.server.answers.get(request_id, default)
        payload = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": 0,
            "model": self.server.model_name,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        if kind == "ok":
            self._send(200, json.dumps(payload).encode())
        elif kind == "truncated":
            whole = json.dumps(payload).encode()
            self._send(200, whole[: len(whole) // 2])
        elif kind == "cut":
            whole = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(whole)))
            self.end_headers()
            self.wfile.write(whole[: len(whole) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif kind == "blank":
            payload["choices"] = [{"index": 0, "message": {"role": "assistant", "content": ""},
                                   "finish_reason": "length"}]  # fmt: skip
            self._send(200, json.dumps(payload).encode())
        elif kind == "429":
            self._error(429, "slow down", {"Retry-After": arg or "1"})
        elif kind == "429ms":
            self._error(429, "slow down", {"retry-after-ms": arg})
        elif kind == "malformed":
            self._send(200, b"<html>this is not json")
        elif kind == "empty":
            self._send(200, json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode())
        elif kind == "drop":
            self.close_connection = True  # no response at all: the client sees the connection close
        elif kind.isdigit():
            self._error(int(kind), f"injected {kind}")
        else:
            raise ValueError(f"unknown fault step {step!r}")


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, model_name: str = "fault-model") -> None:
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.plan: dict[str, str] = {}
        self.answers: dict[str, str] = {}  # id -> answer text (default "answer <id>")
        self.reasoning = False
        self.structured = True
        self.log = FaultLog()
        self.model_name = model_name
        self.stopping = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        with self.log.lock:
            return len(self.log.seen)

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


@contextmanager
def running_fault_server(model_name: str = "fault-model") -> Iterator[FaultServer]:
    server = FaultServer(model_name)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(timeout=5)
