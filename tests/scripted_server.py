"""A scripted OpenAI-compatible server for tests: answers chosen per request by a test's function.

It speaks real HTTP on 127.0.0.1 (the `openai` client talks to it as to any endpoint), counts requests
and the most in flight, and can answer with any status code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, str]  # (HTTP status, text of the answer or of the error)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0


def _handler(script: Callable[[str, dict[str, Any]], Answer], stats: Stats, latency: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            prompt = next(
                part["text"] for m in body["messages"] for part in (m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}])
                if part.get("type") == "text"
            )
            facts = body.get("geopixeld_facts") or {}
            with stats.lock:
                stats.requests.append({"prompt": prompt, "facts": facts})
                stats.in_flight += 1
                stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                time.sleep(latency)
                status, text = script(prompt, facts)
                if status != 200:
                    payload = json.dumps({"error": {"message": text, "type": "server_error"}}).encode()
                else:
                    payload = json.dumps({
                        "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10 + len(text.split())},
                    }).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            finally:
                with stats.lock:
                    stats.in_flight -= 1

    return Handler


@contextmanager
def scripted_server(script: Callable[[str, dict[str, Any]], Answer], latency: float = 0.0) -> Iterator[tuple[str, Stats]]:
    stats = Stats()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script, stats, latency))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", stats
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
