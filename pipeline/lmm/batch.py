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
   then rename) right after it is created. A rerun — after Ctrl-C, a crash or ``max_wait_s`` — loads it and
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
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
        self.settings = settings
        self.client = LMMClient(settings, cache=cache)  # keys, bodies, cache and prices, shared with live calls
        self.state_dir = Path(state_dir)
        self.poll_interval_s = poll_interval_s
        self.max_wait_s = max_wait_s
        self.max_requests = max_requests
        self.max_file_bytes = max_file_bytes
        self.sleep = sleep
        self.submitted = 0  # batches created by this runner (for reports and tests)

    @property
    def cache(self) -> ResponseCache | None:
        return self.client.cache

    def key_for(self, request: LMMRequest) -> str:
        return self.client.key_for(request)

    def describe_all_sync(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]:
        """Answer every request (cache first, then batches); results in input order, errors included."""
        keys = [self.client.key_for(r) for r in requests]
        first_of: dict[str, int] = {}
        for i, key in enumerate(keys):
            first_of.setdefault(key, i)
        answers: dict[str, LMMResult] = {}
        for key, i in first_of.items():
            entry = self.cache.get(key) if self.cache is not None else None
            if entry is not None:
                answers[key] = self.client._from_cache(requests[i], entry)
        pending = {key: requests[i] for key, i in first_of.items() if key not in answers}
        if pending:
            outcomes = self._run_batches(pending, progress)
            for key, request in pending.items():
                answers[key] = self._result(request, key, outcomes.get(key))
        results = []
        for i, (request, key) in enumerate(zip(requests, keys, strict=True)):
            result = answers[key]
            if first_of[key] != i or result.ref != request.ref:
                from_cache = result.from_cache or first_of[key] != i
                result = replace(result, ref=request.ref, tier=request.tier, from_cache=from_cache)
            results.append(result)
        if pending:
            logger.info("lmm batch: %s", self.client.totals(results).summary())
        return results

    # -- the rounds ----------------------------------------------------------------------------------------

    def _run_batches(self, pending: dict[str, LMMRequest], progress: bool) -> dict[str, _Outcome]:
        """Submit, poll and merge until every pending key has an outcome or time runs out."""
        state = BatchState.load(self.state_dir)
        outcomes: dict[str, _Outcome] = {}
        started = time.monotonic()
        api = openai.OpenAI(
            api_key=self.settings.api_key() or NO_KEY,
            base_url=self.settings.base_url,
            timeout=self.settings.timeout_s,
            max_retries=self.settings.max_retries,
        )
        bar = tqdm(total=len(pending), desc="batch", unit="req", disable=not progress, leave=False)
        try:
            round_no = max((b.round for b in state.batches), default=-1) + 1
            rounds_left = self.settings.max_retries + 1
            while True:
                in_flight = {k for b in state.open_batches() for k in b.keys}
                fresh = [k for k in pending if k not in outcomes and k not in in_flight]
                if fresh and rounds_left > 0:
                    self._submit(api, state, [(k, pending[k]) for k in fresh], round_no)
                    round_no += 1
                    rounds_left -= 1
                open_now = [b for b in state.open_batches() if any(k in pending for k in b.keys)]
                if not open_now:
                    break
                self._poll(api, state, open_now, pending, outcomes, bar, started)
                timed_out = self.max_wait_s is not None and time.monotonic() - started > self.max_wait_s
                if timed_out:
                    for b in state.open_batches():
                        for k in b.keys:
                            if k in pending and k not in outcomes:
                                outcomes[k] = _Outcome(False, None, (
                                    f"batch {b.id} still {b.status} after {self.max_wait_s:g} s: rerun to "
                                    "resume polling it (nothing is submitted twice)"), False)  # fmt: skip
                    break
                # failures worth another round leave ``outcomes`` so the next loop resubmits them
                retry = [k for k, o in outcomes.items() if not o.ok and o.retryable and k in pending]
                if retry and rounds_left > 0:
                    for k in retry:
                        del outcomes[k]
                elif not [k for k in pending if k not in outcomes]:
                    break
        finally:
            bar.close()
            api.close()
        return outcomes

    def _submit(
        self, api: openai.OpenAI, state: BatchState, items: list[tuple[str, LMMRequest]], round_no: int
    ) -> None:
        """Write, upload and create batches for ``items``; each recorded in the state file at once."""
        for chunk_keys, path in self._write_inputs(items):
            try:
                with path.open("rb") as handle:
                    uploaded = api.files.create(file=(path.name, handle), purpose="batch")
                batch = api.batches.create(
                    input_file_id=uploaded.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    metadata={"source": "geopixeld", "round": str(round_no)},
                )
            finally:
                path.unlink(missing_ok=True)
            state.batches.append(
                BatchRecord(batch.id, uploaded.id, chunk_keys, round_no, batch.status, False, time.time())
            )
            state.save()
            self.submitted += 1
            logger.info("lmm batch %s submitted: %d requests (round %d)", batch.id, len(chunk_keys), round_no)

    def _write_inputs(self, items: list[tuple[str, LMMRequest]]) -> Iterator[tuple[list[str], Path]]:
        """JSONL input files of at most ``max_requests`` lines and ``max_file_bytes`` each."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        keys: list[str] = []
        size = 0
        handle = None
        path: Path | None = None
        for key, request in items:
            line = (
                json.dumps(
                    {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": self.client.body_for(request)},
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
                + "\n"
            ).encode("utf-8")
            if handle is not None and (len(keys) >= self.max_requests or size + len(line) > self.max_file_bytes):
                handle.close()
                assert path is not None
                yield keys, path
                keys, size, handle = [], 0, None
            if handle is None:
                fd, name = tempfile.mkstemp(prefix="batch-input-", suffix=".jsonl", dir=self.state_dir)
                handle, path = os.fdopen(fd, "wb"), Path(name)
            handle.write(line)
            keys.append(key)
            size += len(line)
        if handle is not None:
            handle.close()
            assert path is not None
            yield keys, path

    def _poll(
        self,
        api: openai.OpenAI,
        state: BatchState,
        batches: list[BatchRecord],
        pending: dict[str, LMMRequest],
        outcomes: dict[str, _Outcome],
        bar: Any,
        started: float,
    ) -> None:
        """Check each open batch once; merge the ones that ended; sleep when none did."""
        ended = 0
        for record in batches:
            try:
                batch = api.batches.retrieve(record.id)
            except openai.NotFoundError:
                logger.warning("lmm batch %s is unknown to the service: its requests will be resubmitted", record.id)
                record.status, record.collected = "missing", True
                state.save()
                ended += 1
                continue
            record.status = batch.status
            if batch.status not in TERMINAL:
                continue
            merged = self._collect(api, record, batch, pending)
            for key, outcome in merged.items():
                if key in pending:
                    outcomes[key] = outcome
            bar.update(sum(1 for k, o in merged.items() if o.ok and k in pending))
            record.collected = True
            state.save()
            ended += 1
            logger.info(
                "lmm batch %s %s: %d answered, %d failed or unfinished",
                record.id, batch.status, sum(o.ok for o in merged.values()), sum(not o.ok for o in merged.values()),
            )  # fmt: skip
        if not ended:
            state.save()
            remaining = None if self.max_wait_s is None else self.max_wait_s - (time.monotonic() - started)
            if remaining is None or remaining > 0:
                self.sleep(self.poll_interval_s if remaining is None else min(self.poll_interval_s, remaining))

    def _collect(
        self, api: openai.OpenAI, record: BatchRecord, batch: Any, pending: dict[str, LMMRequest]
    ) -> dict[str, _Outcome]:
        """Outcomes of every key of an ended batch: its output and error lines, and the unfinished rest."""
        merged: dict[str, _Outcome] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            text = api.files.content(file_id).text
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    key = str(item["custom_id"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("lmm batch %s: file %s line %d is not a batch result; skipped", record.id, file_id, n)
                    continue
                merged[key] = self._line_outcome(item, pending.get(key))
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

    def _line_outcome(self, item: dict[str, Any], request: LMMRequest | None) -> _Outcome:
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
            if self.cache is not None and request is not None:
                try:
                    self.cache.put(
                        CacheEntry(
                            key=str(item["custom_id"]), text=answer.text, model=answer.model, raw=raw,
                            input_tokens=answer.input_tokens, output_tokens=answer.output_tokens,
                            finish_reason=answer.finish_reason, tier=request.tier,
                            prompt_version=self.settings.prompt_version, prompt=request.prompt,
                            created_at=time.time(),
                        )
                    )  # fmt: skip
                except OSError as exc:
                    logger.warning("could not cache %s: %s", request.ref, exc)
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
