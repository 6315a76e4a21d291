"""Batch mode: requests answered through the OpenAI Batch API (``/v1/files`` + ``/v1/batches``), at its discount.

:class:`BatchRunner` has the same ``describe_all_sync(requests)`` as :class:`~pipeline.lmm.client.LMMClient`
and the same guarantees where they apply: results in input order, one per request, errors as results; the
same cache keys and response cache (a request answered once, by either path, is never sent again); the same
request bodies (model profiles included). What differs:

1. **Submit.** Requests not in the cache are written as JSONL (``custom_id`` = the cache key, ``body`` = the
   chat-completions body) to a temporary file under the state folder — streamed to disk, at most
   ``max_requests`` lines and ``max_file_bytes`` per file (OpenAI: 50,000 and 200 MB) — uploaded with purpose
   ``batch`` and submitted with ``completion_window`` ``24h``.
2. **Remember.** Every batch id and the keys it holds are written to ``STATE/batches.json`` (temporary file,
   then rename) right after it is created; its input file is kept as ``STATE/{batch id}.jsonl`` until the
   batch is merged (failures are resubmitted from it). A rerun — after Ctrl-C, a crash or ``max_wait_s`` — loads it and
   resumes polling those batches instead of submitting the same requests again.
3. **Poll** every ``poll_interval_s`` until each batch is terminal (``completed``, ``expired``, ``failed``,
   ``cancelled``) or ``max_wait_s`` passes (then the unanswered requests are reported as errors saying the
   batch is still running, and the next run picks it up).
4. **Merge.** Lines of the output file become answers (stored in the cache, ``batch=True`` so the price is
   discounted); lines of the error file and requests absent from both (an expired or cancelled batch's
   unfinished part) are failures. Partial output is kept: only what failed or expired is submitted again,
   in a new batch, up to ``settings.max_retries`` more rounds. Failures that would fail again (HTTP 4xx
   other than 429, a batch the service refused) are not resubmitted.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import openai
from tqdm.auto import tqdm

from .cache import CacheEntry, ResponseCache
from .client import NO_KEY, LMMClient, _BadResponse, parse_chat_response
from .types import LMMRequest, LMMResult, LMMSettings

logger = logging.getLogger(__name__)

STATE_FILENAME = "batches.json"
ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})
#: OpenAI's limits on one batch input file.
MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 190 * 1024 * 1024


@dataclass
class BatchRecord:
    """One submitted batch as kept in the state file.

    Attributes:
        id: the service's batch id.
        input_file_id: the uploaded JSONL file.
        keys: cache keys (``custom_id`` values) of its requests.
        round: 0 for a first submission, n for the n-th resubmission of failures.
        status: last status seen.
        collected: its output has been merged (it is no longer polled).
        submitted_at: UNIX time (s).
    """

    id: str
    input_file_id: str
    keys: list[str]
    round: int = 0
    status: str = "validating"
    collected: bool = False
    submitted_at: float = 0.0


@dataclass
class BatchState:
    """All batches of one state folder (``STATE/batches.json``)."""

    path: Path
    batches: list[BatchRecord] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path) -> BatchState:
        path = folder / STATE_FILENAME
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(path, [BatchRecord(**b) for b in data.get("batches", [])])
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable batch state ({exc}); move it away to start afresh") from None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".batches.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"batches": [asdict(b) for b in self.batches]}, handle, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open_batches(self) -> list[BatchRecord]:
        return [b for b in self.batches if not b.collected]


@dataclass(frozen=True)
class _Outcome:
    """What one line of a batch's output or error file said about one request."""

    ok: bool
    raw: str | None
    error: str | None
    retryable: bool


class BatchRunner:
    """Answer requests through the Batch API (see the module doc).

    Two ways to use it: ``describe_all_sync(requests)`` (like a live client), or streaming for a whole
    dataset: :meth:`enqueue` requests as they are planned (input files are written to disk and submitted
    as they fill, so memory does not grow with the dataset), then :meth:`wait`; answers land in the cache.

    Args:
        settings: endpoint, model, limits, cache folder (as for :class:`~pipeline.lmm.client.LMMClient`).
        state_dir: where batch ids and input files live (keep it with the run's outputs).
        poll_interval_s: seconds between status checks.
        max_wait_s: give up waiting after this many seconds (None: wait until every batch ends).
        max_requests, max_file_bytes: limits of one input file.
        cache: a cache to use instead of one at ``settings.cache_dir``.
        sleep: the wait function (tests pass a faster one).
    """

    def __init__(
        self,
        settings: LMMSettings,
        state_dir: str | Path,
        *,
        poll_interval_s: float = 30.0,
        max_wait_s: float | None = None,
        max_requests: int = MAX_REQUESTS,
        max_file_bytes: int = MAX_FILE_BYTES,
        cache: ResponseCache | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if settings.cache_dir is None and cache is None:
            raise ValueError("batch mode needs a response cache (settings.cache_dir): answers are kept there")
        self.settings = settings
        self.client = LMMClient(settings, cache=cache)  # keys, bodies, cache and prices, shared with live calls
        self.state_dir = Path(state_dir)
        self.poll_interval_s = poll_interval_s
        self.max_wait_s = max_wait_s
        self.max_requests = max_requests
        self.max_file_bytes = max_file_bytes
        self.sleep = sleep
        self.submitted = 0  # batches created by this runner (for reports and tests)
        self.queued = 0  # requests written to input files by this runner
        self.meta: dict[str, tuple[str, str]] = {}  # key -> (tier, prompt), for cache entries
        self.outcomes: dict[str, _Outcome] = {}
        self._tries: dict[str, int] = {}
        self._state: BatchState | None = None
        self._in_flight: set[str] = set()
        self._api: openai.OpenAI | None = None
        self._file: tuple[Any, Path, list[str]] | None = None  # handle, path, keys of the input being written
        self._file_bytes = 0
        self._round = 0

    # -- plumbing -------------------------------------------------------------------------------------------

    @property
    def cache(self) -> ResponseCache:
        assert self.client.cache is not None
        return self.client.cache

    @property
    def state(self) -> BatchState:
        if self._state is None:
            self._state = BatchState.load(self.state_dir)
            self._in_flight = {k for b in self._state.open_batches() for k in b.keys}
            self._round = max((b.round for b in self._state.batches), default=-1) + 1
        return self._state

    @property
    def api(self) -> openai.OpenAI:
        if self._api is None:
            self._api = openai.OpenAI(
                api_key=self.settings.api_key() or NO_KEY,
                base_url=self.settings.base_url,
                timeout=self.settings.timeout_s,
                max_retries=self.settings.max_retries,
            )
        return self._api

    def close(self) -> None:
        """Close the HTTP client (an input file still being written is submitted first)."""
        self.flush()
        if self._api is not None:
            self._api.close()
            self._api = None

    def key_for(self, request: LMMRequest) -> str:
        return self.client.key_for(request)

    # -- streaming ------------------------------------------------------------------------------------------

    def enqueue(self, request: LMMRequest, key: str | None = None) -> str:
        """Queue one request unless it needs none; returns ``cached``, ``in_flight`` (in a submitted batch or
        already queued), ``failed`` (failed for good in this run) or ``queued``."""
        key = key or self.client.key_for(request)
        self.meta.setdefault(key, (request.tier, request.prompt))
        outcome = self.outcomes.get(key)
        if outcome is not None and not outcome.ok:
            return "failed"  # failed for good in this run (or waiting in a running batch): not queued again
        if key in self._in_flight or (self._file is not None and key in self._file[2]):
            return "in_flight"
        if self.cache.get(key) is not None:
            return "cached"
        self.state  # noqa: B018 - loads the batches of earlier runs (their keys are in flight)
        if key in self._in_flight:
            return "in_flight"
        self._write_line(key, self._line(key, self.client.body_for(request)))
        self.queued += 1
        return "queued"

    @staticmethod
    def _line(key: str, body: dict[str, Any]) -> bytes:
        item = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}
        return (json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")

    def _write_line(self, key: str, line: bytes) -> None:
        if self._file is not None and (
            len(self._file[2]) >= self.max_requests or self._file_bytes + len(line) > self.max_file_bytes
        ):
            self.flush()
        if self._file is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="batch-input-", suffix=".jsonl", dir=self.state_dir)
            self._file = (os.fdopen(fd, "wb"), Path(name), [])
            self._file_bytes = 0
        handle, _, keys = self._file
        handle.write(line)
        keys.append(key)
        self._file_bytes += len(line)

    def flush(self) -> None:
        """Submit the input file being written, if any: upload, create the batch, record it at once."""
        if self._file is None:
            return
        handle, path, keys = self._file
        handle.close()
        self._file = None
        if not keys:
            path.unlink(missing_ok=True)
            return
        with path.open("rb") as upload:
            uploaded = self.api.files.create(file=(path.name, upload), purpose="batch")
        batch = self.api.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"source": "geopixeld", "round": str(self._round)},
        )
        kept = path.with_name(f"{batch.id}.jsonl")
        path.replace(kept)  # its lines are what a resubmission of failures sends again
        self.state.batches.append(
            BatchRecord(batch.id, uploaded.id, keys, self._round, batch.status, False, time.time())
        )
        self.state.save()
        self._in_flight.update(keys)
        self.submitted += 1
        logger.info("lmm batch %s submitted: %d requests (round %d)", batch.id, len(keys), self._round)

    def wait(self, progress: bool = True) -> dict[str, int]:
        """Submit what is queued, then poll until every batch of the state folder has ended (or
        ``max_wait_s``): merge answers into the cache, resubmit what failed or expired (up to
        ``settings.max_retries`` times per request). Returns counts: answered, failed, running."""
        self.flush()
        started = time.monotonic()
        total = len(self._in_flight)
        bar = tqdm(total=total, desc="batch", unit="req", disable=not progress, leave=False)
        try:
            while self.state.open_batches():
                ended = 0
                for record in list(self.state.open_batches()):
                    if self._check(record, bar):
                        ended += 1
                self.flush()  # resubmissions
                if not self.state.open_batches():
                    break
                elapsed = time.monotonic() - started
                if self.max_wait_s is not None and elapsed >= self.max_wait_s:
                    for b in self.state.open_batches():
                        for k in b.keys:
                            self.outcomes[k] = _Outcome(False, None, (
                                f"batch {b.id} still {b.status} after {self.max_wait_s:g} s: rerun to resume "
                                "polling it (nothing is submitted twice)"), False)  # fmt: skip
                    break
                if not ended:
                    remaining = None if self.max_wait_s is None else self.max_wait_s - elapsed
                    self.sleep(self.poll_interval_s if remaining is None else min(self.poll_interval_s, remaining))
        finally:
            bar.close()
        running = sum(len(b.keys) for b in self.state.open_batches())
        return {
            "answered": sum(o.ok for o in self.outcomes.values()),
            "failed": sum(not o.ok for o in self.outcomes.values()) - running,
            "running": running,
        }

    def _check(self, record: BatchRecord, bar: Any) -> bool:
        """Retrieve one open batch; when it ended, merge it and queue its retryable failures. True if ended."""
        input_path = self.state_dir / f"{record.id}.jsonl"
        batch: Any = None
        try:
            batch = self.api.batches.retrieve(record.id)
        except openai.NotFoundError:
            logger.warning("lmm batch %s is unknown to the service: its requests are queued again", record.id)
            merged = {k: _Outcome(False, None, f"batch {record.id} unknown to the service", True) for k in record.keys}
        else:
            record.status = batch.status
            if batch.status not in TERMINAL:
                return False
            merged = self._collect(record, batch)
        retry: set[str] = set()
        for key, outcome in merged.items():
            self.outcomes[key] = outcome
            self._in_flight.discard(key)
            if not outcome.ok and outcome.retryable and self._tries.get(key, 0) < self.settings.max_retries:
                retry.add(key)
        bar.update(sum(o.ok for o in merged.values()))
        if retry:
            self._round = max(self._round, record.round + 1)
            if input_path.exists():
                with input_path.open("rb") as lines:
                    for line in lines:
                        key = str(json.loads(line)["custom_id"])
                        if key in retry:
                            self._tries[key] = self._tries.get(key, 0) + 1
                            self.outcomes.pop(key, None)
                            self._write_line(key, line)
            else:
                logger.warning("lmm batch %s: input file gone; %d failures not resubmitted", record.id, len(retry))
        record.collected = True
        self.state.save()
        input_path.unlink(missing_ok=True)
        if batch is not None:
            logger.info(
                "lmm batch %s %s: %d answered, %d failed or unfinished (%d resubmitted)",
                record.id, batch.status, sum(o.ok for o in merged.values()),
                sum(not o.ok for o in merged.values()), len(retry),
            )  # fmt: skip
        return True

    # -- one call for a list --------------------------------------------------------------------------------

    def describe_all_sync(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]:
        """Answer every request (cache first, then batches); results in input order, errors included."""
        keys = [self.client.key_for(r) for r in requests]
        for request, key in zip(requests, keys, strict=True):
            self.enqueue(request, key)
        if self._file is not None or self._in_flight:
            self.wait(progress)
        results: list[LMMResult] = []
        seen: set[str] = set()
        for request, key in zip(requests, keys, strict=True):
            entry = self.cache.get(key)
            outcome = self.outcomes.get(key)
            if outcome is not None and outcome.ok and key not in seen:
                results.append(self._result(request, key, outcome))
            elif entry is not None:
                results.append(self.client._from_cache(request, entry))
            else:
                results.append(self._result(request, key, outcome))
            seen.add(key)
        if self.outcomes:
            logger.info("lmm batch: %s", self.client.totals(results).summary())
        return results

    # -- merging --------------------------------------------------------------------------------------------

    def _collect(self, record: BatchRecord, batch: Any) -> dict[str, _Outcome]:
        """Outcomes of every key of an ended batch: its output and error lines, and the unfinished rest."""
        merged: dict[str, _Outcome] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            text = self.api.files.content(file_id).text
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    key = str(item["custom_id"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("lmm batch %s: file %s line %d is not a batch result; skipped", record.id, file_id, n)
                    continue
                merged[key] = self._line_outcome(item, key)
        missing = [k for k in record.keys if k not in merged]
        if batch.status == "failed":
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            reason = "; ".join(str(getattr(e, "message", e)) for e in errors)[:300] or "no reason given"
            for key in missing:
                merged[key] = _Outcome(False, None, f"batch {record.id} failed: {reason}", False)
        else:
            for key in missing:
                merged[key] = _Outcome(
                    False, None, f"batch {record.id} {batch.status} before this request was answered", True
                )
        return merged

    def _line_outcome(self, item: dict[str, Any], key: str) -> _Outcome:
        """One output/error line: an answer (stored in the cache) or a failure (retryable or not)."""
        response = item.get("response") or {}
        error = item.get("error")
        status = response.get("status_code") if isinstance(response, dict) else None
        body = response.get("body") if isinstance(response, dict) else None
        raw = json.dumps(body) if body is not None else None
        if status == 200 and isinstance(body, (dict, str)):
            raw = body if isinstance(body, str) else raw
            try:
                answer = parse_chat_response(raw or "", self.settings.model)
            except _BadResponse as exc:
                return _Outcome(False, raw, str(exc), exc.retryable)
            tier, prompt = self.meta.get(key, ("", ""))
            try:
                self.cache.put(
                    CacheEntry(
                        key=key, text=answer.text, model=answer.model, raw=raw, input_tokens=answer.input_tokens,
                        output_tokens=answer.output_tokens, finish_reason=answer.finish_reason, tier=tier,
                        prompt_version=self.settings.prompt_version, prompt=prompt, created_at=time.time(),
                    )
                )  # fmt: skip
            except OSError as exc:
                logger.warning("could not cache %s: %s", key[:12], exc)
            return _Outcome(True, raw, None, False)
        if isinstance(status, int):
            message = ""
            if isinstance(body, dict):
                inner = body.get("error", body)
                message = str(inner.get("message", "")) if isinstance(inner, dict) else str(inner)
            retryable = status == 429 or status >= 500
            return _Outcome(False, raw, f"HTTP {status}" + (f": {message[:300]}" if message else ""), retryable)
        code = error.get("code") if isinstance(error, dict) else None
        reason = error.get("message") if isinstance(error, dict) else error
        retryable = code in ("batch_expired", "batch_cancelled", None) or "expired" in str(code)
        return _Outcome(False, None, f"batch error {code or ''}: {reason or 'no message'}".strip(), retryable)

    def _result(self, request: LMMRequest, key: str, outcome: _Outcome | None) -> LMMResult:
        """The result of one pending request from its final outcome."""
        if outcome is not None and outcome.ok and outcome.raw is not None:
            answer = parse_chat_response(outcome.raw, self.settings.model)
            return LMMResult(
                ref=request.ref, key=key, status="ok", text=answer.text, from_cache=False, attempts=1,
                latency_s=0.0, input_tokens=answer.input_tokens, output_tokens=answer.output_tokens,
                error=None, raw=outcome.raw, model=answer.model, tier=request.tier,
                prompt_version=self.settings.prompt_version, finish_reason=answer.finish_reason, batch=True,
            )  # fmt: skip
        error = outcome.error if outcome is not None else "not answered by any batch"
        return LMMResult(
            ref=request.ref, key=key, status="error", text=None, from_cache=False, attempts=1, latency_s=0.0,
            input_tokens=0, output_tokens=0, error=(error or "batch failure")[:500],
            raw=outcome.raw if outcome is not None else None, model=self.settings.model, tier=request.tier,
            prompt_version=self.settings.prompt_version, batch=True,
        )  # fmt: skip


__all__ = ["BatchRecord", "BatchRunner", "BatchState", "ENDPOINT", "MAX_FILE_BYTES", "MAX_REQUESTS", "STATE_FILENAME"]
