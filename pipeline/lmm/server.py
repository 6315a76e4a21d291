"""The offline describer as a real OpenAI-compatible HTTP server (standard library only).

Endpoints (under ``/v1``):

- ``GET /v1/models`` and ``GET /v1/models/{id}``: the one model, :data:`~pipeline.lmm.types.OFFLINE_MODEL`.
- ``GET /geopixeld/stats``: request counters (not OpenAI; for tests and benchmarks).
- ``POST /v1/chat/completions``: non-streaming chat completions. Message content may be a string or a list
  of ``text`` and ``image_url`` parts; images must be ``data:`` URLs (remote URLs are never fetched). The
  measured facts travel in the request body's extra field ``geopixeld_facts``. The answer comes from
  :func:`pipeline.lmm.offline.describe`, and ``usage`` holds a deterministic token estimate. A grouped
  instance request (tier ``instance_group``, :mod:`pipeline.lmm.grouped`) is answered with its JSON: each
  object's own single answer (:func:`pipeline.lmm.offline.describe_instance_group`). ``response_format`` is accepted (the answers are already that JSON).

Whatever model the request names, the response reports the offline model's own name, so no output can be
mistaken for a real LMM's. The server ignores the ``Authorization`` header and logs nothing about it.

It listens on loopback by default. ``serve()`` starts it in a background thread for in-process use;
``running_offline_server()`` does the same as a context manager; ``main()`` runs it in the foreground.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..loopback import stop_process
from .offline import describe, estimate_tokens
from .types import OFFLINE_MODEL

logger = logging.getLogger(__name__)

#: Non-OpenAI endpoint with the server's counters (requests, in_flight, max_in_flight), for tests and benches.
STATS_PATH = "/geopixeld/stats"
#: Largest request body accepted (bytes); an 800x800 PNG tile as base64 is well under this.
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class ServerStats:
    """Counters a running server keeps (thread-safe through ``lock``).

    Attributes:
        requests: chat-completion requests received.
        in_flight: requests being answered right now.
        max_in_flight: the most requests ever answered at once.
    """

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class RequestError(Exception):
    """A client mistake, answered with an OpenAI-style error body."""

    def __init__(self, status: HTTPStatus, message: str, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def parse_chat_request(body: dict[str, Any]) -> tuple[str, bytes | None, int, dict[str, Any] | None]:
    """Pull (prompt text, first image bytes, image count, facts) out of a chat-completions body.

    Raises:
        RequestError: the body is not a valid non-streaming chat request.
    """
    if body.get("stream"):
        raise RequestError(HTTPStatus.BAD_REQUEST, "streaming is not supported by the offline describer")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(HTTPStatus.BAD_REQUEST, "'messages' must be a non-empty list")
    texts: list[str] = []
    images: list[bytes] = []
    for message in messages:
        if not isinstance(message, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "each message must be an object")
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                raise RequestError(HTTPStatus.BAD_REQUEST, "content parts must be objects")
            if part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                spec = part.get("image_url")
                url = spec.get("url") if isinstance(spec, dict) else spec
                images.append(_decode_data_url(url))
    facts = body.get("geopixeld_facts")
    if facts is not None and not isinstance(facts, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "'geopixeld_facts' must be an object")
    return "\n".join(texts), (images[0] if images else None), len(images), facts


def _decode_data_url(url: Any) -> bytes:
    """Bytes of a base64 ``data:`` URL; other URLs are refused (the offline server never fetches)."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise RequestError(
            HTTPStatus.BAD_REQUEST, "images must be base64 data: URLs (remote URLs are not fetched)"
        )
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise RequestError(HTTPStatus.BAD_REQUEST, "image data URLs must be base64-encoded")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(HTTPStatus.BAD_REQUEST, "image data URL is not valid base64") from None


def chat_completion(body: dict[str, Any], model_name: str = OFFLINE_MODEL) -> dict[str, Any]:
    """The full chat-completion response object for one request body."""
    prompt, image, n_images, facts = parse_chat_request(body)
    text = describe(facts, image)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:24]
    prompt_tokens = estimate_tokens(prompt, n_images)
    completion_tokens = estimate_tokens(text)
    return {
        "id": f"chatcmpl-offline-{digest}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "system_fingerprint": model_name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class OfflineHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler for the offline describer."""

    protocol_version = "HTTP/1.1"
    # Buffer each response and send it in one write (flushed per request by the base class); with TCP_NODELAY
    # this avoids the ~40 ms Nagle / delayed-ACK stall of a header write followed by a small body write.
    wbufsize = 64 * 1024
    server: OfflineServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        logger.debug("%s - " + format, self.address_string(), *args)

    def _send_json(self, status: HTTPStatus | int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: RequestError) -> None:
        body = {"error": {"message": str(error), "type": error.code, "param": None, "code": error.code}}
        self._send_json(error.status, body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body makes the connection unusable
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        path = self.path.split("?", 1)[0].rstrip("/")
        model = {"id": self.server.model_name, "object": "model", "created": 0, "owned_by": "geopixeld"}
        if path == STATS_PATH:
            with self.server.stats.lock:
                stats = {k: getattr(self.server.stats, k) for k in ("requests", "in_flight", "max_in_flight")}
            self._send_json(HTTPStatus.OK, stats)
        elif path == "/v1/models":
            self._send_json(HTTPStatus.OK, {"object": "list", "data": [model]})
        elif path == f"/v1/models/{self.server.model_name}":
            self._send_json(HTTPStatus.OK, model)
        else:
            self._send_error(RequestError(HTTPStatus.NOT_FOUND, f"no route GET {path}", "not_found"))

    def do_POST(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            raw = self._read_body()
            if path != "/v1/chat/completions":
                raise RequestError(HTTPStatus.NOT_FOUND, f"no route POST {path}", "not_found")
            try:
                body = json.loads(raw)
            except ValueError:
                raise RequestError(HTTPStatus.BAD_REQUEST, "request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise RequestError(HTTPStatus.BAD_REQUEST, "request body must be a JSON object")
            self.server.stats.enter()
            try:
                if self.server.latency_s > 0:
                    self.server.stopping.wait(self.server.latency_s)
                response = chat_completion(body, self.server.model_name)
            finally:
                self.server.stats.leave()
        except RequestError as error:
            self._send_error(error)
            return
        except Exception:  # never let one bad request kill the server; say so instead
            logger.exception("offline describer failed")
            self._send_error(RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error", "server_error"))
            return
        self._send_json(HTTPStatus.OK, response)


class OfflineServer(ThreadingHTTPServer):
    """A threading HTTP server that answers as the offline describer.

    Attributes:
        model_name: the name reported in every response.
        latency_s: artificial delay (seconds) before each chat answer, for benchmarks.
        stats: request counters.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], *, model_name: str = OFFLINE_MODEL, latency_s: float = 0.0
    ) -> None:
        super().__init__(address, OfflineHandler)
        self.model_name = model_name
        self.latency_s = latency_s
        self.stats = ServerStats()
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return int(self.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent; safe from another thread)."""
        self.stopping.set()
        self.shutdown()
        self.server_close()


def serve(host: str = "127.0.0.1", port: int = 0, *, latency_s: float = 0.0) -> tuple[OfflineServer, int]:
    """Start the offline server in a background daemon thread.

    Args:
        host: interface to bind (loopback by default; the server has no authentication).
        port: TCP port; 0 picks a free one.
        latency_s: artificial delay before each chat answer, in seconds.

    Returns:
        (server, port); stop it with ``server.stop()``.
    """
    server = OfflineServer((host, port), latency_s=latency_s)
    # A short poll interval makes stop() return promptly (shutdown waits for the next poll).
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"offline-describer:{server.port}",
        daemon=True,
    )
    thread.start()
    return server, server.port


@contextmanager
def running_offline_server(
    host: str = "127.0.0.1", port: int = 0, *, latency_s: float = 0.0
) -> Iterator[str]:
    """Run the offline server for the duration of a ``with`` block; yields its base URL (``.../v1``)."""
    server, bound = serve(host, port, latency_s=latency_s)
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.stop()


@contextmanager
def offline_server_process(
    port: int = 0, *, latency_s: float = 0.0, startup_timeout_s: float = 60.0
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``python -m pipeline.lmm.cli serve`` on loopback in a child process for a ``with`` block.

    The child binds ``port`` (0: a free one) and prints its base URL, which is read back, so there is no
    port race. On exit the child is stopped by its PID (SIGTERM, then SIGKILL after 10 s).

    Yields:
        (process, base_url), e.g. ``(proc, "http://127.0.0.1:41234/v1")``.
    """
    command = [
        sys.executable, "-m", "pipeline.lmm.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--latency-ms", str(latency_s * 1000.0),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).parents[2]
    )
    try:
        base_url = _read_base_url(proc, startup_timeout_s)
        yield proc, base_url
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _read_base_url(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The base URL the child prints on start-up (raises if it exits or stays silent for ``timeout_s``)."""
    found: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"(http://\S+/v1)", line)
            if match:
                found.append(match.group(1))
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not found:
        raise RuntimeError(
            f"offline describer did not start within {timeout_s:g} s (exit code {proc.poll()})"
        )
    return found[0]


def main(host: str = "127.0.0.1", port: int = 8765, latency_s: float = 0.0) -> None:
    """Serve in the foreground until interrupted (what ``geopixeld lmm serve`` runs)."""
    server = OfflineServer((host, port), latency_s=latency_s)
    if host not in {"127.0.0.1", "localhost", "::1"}:
        logger.warning("listening on %s: the offline describer has no authentication", host)
    print(
        f"offline describer {server.model_name} at http://{host}:{server.port}/v1 (Ctrl-C stops)", flush=True
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops it as cleanly as Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


__all__ = [
    "OfflineServer",
    "ServerStats",
    "STATS_PATH",
    "chat_completion",
    "main",
    "offline_server_process",
    "parse_chat_request",
    "running_offline_server",
    "serve",
]
