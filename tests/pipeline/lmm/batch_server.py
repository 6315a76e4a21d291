"""A loopback OpenAI Files + Batches server for the batch-mode tests (real HTTP, the real `openai` client).

Endpoints: ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}``. Each line of a batch's input is answered by the offline describer
(:func:`pipeline.lmm.server.chat_completion`), so answers are real. How each batch ends is scripted by
``server.script``: the n-th batch created (0-based) takes ``script[n]`` (default ``"complete"``):

====================  =================================================================================
step                  what the batch does
====================  =================================================================================
``complete``          every line answered (200) in the output file
``expire:N``          ends ``expired`` after answering its first N lines; the rest are in the error file
                      with code ``batch_expired`` (OpenAI's behaviour)
``expire_silent:N``   ends ``expired`` after N lines; the rest are in no file at all (a partial output)
``partial``           ``completed``, but line 2 answered 500 and line 3 answered 400 (error file), and line
                      4's 200 body cut short
``fail``              ends ``failed`` with a validation error and no files
``hold``              stays ``in_progress`` until ``server.release()``, then completes
====================  =================================================================================

A batch reports ``validating``, then ``in_progress``, and ends on the ``polls``-th retrieve (default 2).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.lmm.server import chat_completion


class BatchHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BatchServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None

    def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._send(404, {"error": {"message": f"no such object: {self.path}", "type": "invalid_request_error",
                                   "code": "not_found"}})  # fmt: skip

    def do_GET(self) -> None:  # noqa: N802
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        with self.server.lock:
            if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
                data = self.server.files.get(parts[2])
                if data is None:
                    return self._not_found()
                return self._send(200, None, raw=data["bytes"])
            if parts[:2] == ["v1", "batches"] and len(parts) == 3:
                batch = self.server.batches.get(parts[2])
                if batch is None:
                    return self._not_found()
                self.server.advance(batch)
                return self._send(200, self.server.public(batch))
        self._not_found()

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        path = self.path.split("?", 1)[0].rstrip("/")
        with self.server.lock:
            if path == "/v1/files":
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
                )
                fields = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
                content = fields["file"].get_payload(decode=True)
                purpose = str(fields["purpose"].get_content()).strip()
                file_id = self.server.new_id("file")
                self.server.files[file_id] = {"bytes": content, "purpose": purpose}
                return self._send(200, self.server.file_object(file_id))
            if path == "/v1/batches":
                body = json.loads(raw)
                if body.get("input_file_id") not in self.server.files:
                    return self._not_found()
                batch_id = self.server.new_id("batch")
                step = (self.server.script[len(self.server.batches)]
                        if len(self.server.batches) < len(self.server.script) else "complete")  # fmt: skip
                lines = self.server.files[body["input_file_id"]]["bytes"].decode().splitlines()
                batch = {
                    "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                    "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                    "status": "validating", "output_file_id": None, "error_file_id": None,
                    "created_at": int(time.time()), "metadata": body.get("metadata"),
                    "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                    "_step": step, "_polls": 0, "_lines": [json.loads(line) for line in lines],
                }  # fmt: skip
                self.server.batches[batch_id] = batch
                return self._send(200, self.server.public(batch))
        self._not_found()


class BatchServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, polls: int = 2) -> None:
        super().__init__(("127.0.0.1", 0), BatchHandler)
        self.lock = threading.RLock()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.script: list[str] = []
        self.polls = polls
        self.held = True
        self._ids = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids:04d}"

    def file_object(self, file_id: str) -> dict[str, Any]:
        f = self.files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(f["bytes"]), "created_at": 0,
                "filename": f"{file_id}.jsonl", "purpose": f["purpose"], "status": "processed"}  # fmt: skip

    def release(self) -> None:
        with self.lock:
            self.held = False

    def custom_ids(self, n: int) -> list[str]:
        """``custom_id`` values of the n-th batch created."""
        with self.lock:
            batch = list(self.batches.values())[n]
            return [line["custom_id"] for line in batch["_lines"]]

    @staticmethod
    def public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _file(self, lines: list[dict[str, Any]]) -> str | None:
        if not lines:
            return None
        file_id = self.new_id("file")
        self.files[file_id] = {"bytes": "".join(json.dumps(x) + "\n" for x in lines).encode(), "purpose": "batch_output"}
        return file_id

    def advance(self, batch: dict[str, Any]) -> None:
        """One retrieve: validating -> in_progress -> (after ``polls`` retrieves) the scripted end."""
        if batch["status"] in ("completed", "expired", "failed", "cancelled"):
            return
        batch["_polls"] += 1
        step, _, arg = batch["_step"].partition(":")
        if batch["_polls"] < self.polls or (step == "hold" and self.held):
            batch["status"] = "in_progress"
            return
        if step == "fail":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "line": 1,
                                                          "message": "model not available for batch"}]}  # fmt: skip
            return
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for n, line in enumerate(batch["_lines"], 1):
            cid = line["custom_id"]
            if step in ("expire", "expire_silent") and n > int(arg):
                if step == "expire":
                    err.append({"id": f"req-{n}", "custom_id": cid, "response": None,
                                "error": {"code": "batch_expired", "message": "This request could not be "
                                          "executed before the completion window expired."}})  # fmt: skip
                continue
            if step == "partial" and n in (2, 3):
                status = 500 if n == 2 else 400
                body = {"error": {"message": f"injected {status}", "type": "server_error"}}
                err.append({"id": f"req-{n}", "custom_id": cid, "response": {"status_code": status, "body": body},
                            "error": None})  # fmt: skip
                continue
            answer = chat_completion(line["body"])
            body_out: Any = answer
            if step == "partial" and n == 4:
                text = json.dumps(answer)
                body_out = text[: len(text) // 2]  # a body cut short inside the output file
            out.append({"id": f"req-{n}", "custom_id": cid, "response": {"status_code": 200, "body": body_out},
                        "error": None})  # fmt: skip
        batch["status"] = "expired" if step.startswith("expire") else "completed"
        batch["output_file_id"] = self._file(out)
        batch["error_file_id"] = self._file(err)
        batch["request_counts"] = {"total": len(batch["_lines"]), "completed": len(out), "failed": len(err)}


@contextmanager
def running_batch_server(polls: int = 2) -> Iterator[BatchServer]:
    server = BatchServer(polls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
