"""Batch client for any OpenAI-compatible chat endpoint, with caching, retries and bounded concurrency.

``LMMClient(settings).describe_all(requests)`` answers a batch of :class:`~pipeline.lmm.types.LMMRequest` and
returns one :class:`~pipeline.lmm.types.LMMResult` per request, in input order. What it guarantees:

- **Never raises for one bad request.** Every failure (HTTP error, timeout, dropped connection, malformed
  body, empty answer) becomes a result with ``status="error"``, its error text and the raw body.
- **Cache first.** Each request's content-addressed key (:func:`pipeline.lmm.cache.cache_key`) is looked up in
  the persistent cache; hits send nothing, so a rerun — or a rerun after a crash midway — only sends what
  has not succeeded yet. Identical requests within one batch are sent once.
- **Bounded concurrency.** At most ``settings.concurrency`` HTTP requests are in flight at any moment
  (back-off sleeps do not hold a slot).
- **Retries.** On 429, 5xx, timeouts and connection errors: up to ``max_retries`` more attempts, waiting
  ``min(backoff_max_s, backoff_base_s * 2**n)`` with "equal jitter" (half fixed, half random), or the
  server's ``Retry-After`` / ``retry-after-ms`` when longer (capped at ``backoff_max_s``). A 200 whose body is
  cut short or is not a chat completion (not JSON, no choices) is as transient as a 5xx and retried the
  same way. Other 4xx answers and an empty answer are not retried. The openai package's own retries are
  disabled (``max_retries=0``).
- **Model profiles.** Each request is shaped by the model's profile (:mod:`pipeline.lmm.profiles`): which
  token-limit field, whether a temperature is sent, image ``detail``, structured outputs. A 400 naming an
  unsupported parameter ends with a sentence naming the setting to change, and the rest of the batch that
  would carry the same parameter is not sent (it would fail the same way).
- **Secrets stay secret.** The API key is read from ``settings.api_key_env`` when a batch starts and is
  handed only to the HTTP client; errors are reported by type and status, never with request headers.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import openai
from tqdm.auto import tqdm

from .cache import CacheEntry, ResponseCache, cache_key, to_plain_json
from .pricing import RunTotals, load_price_table
from .profiles import ModelProfile, ProfileTable, load_profiles, unsupported_parameter_hint
from .types import LMMRequest, LMMResult, LMMSettings

logger = logging.getLogger(__name__)

#: Placeholder sent when the key variable is unset (local servers accept anything).
NO_KEY = "no-key-set"


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): equal jitter on a capped exponential.

    The un-jittered delay is ``d = min(max_s, base_s * 2**(attempt-1))``; the result is uniform in
    ``[d/2, d]``, so retries spread out without ever collapsing to zero.
    """
    d = min(max_s, base_s * (2 ** max(attempt - 1, 0)))
    return d / 2 + (rng or random).uniform(0, d / 2)


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds a server asks us to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def image_data_url(image_png: bytes) -> str:
    """A base64 ``data:`` URL of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(image_png).decode("ascii")


def build_messages(request: LMMRequest, detail: str) -> list[dict[str, Any]]:
    """The chat ``messages``: one user turn with the image (given ``detail``; ``omit``: no detail field)
    and the prompt text. A request with no image bytes (the compose tier) is text only."""
    text_part = {"type": "text", "text": request.prompt}
    if not request.image_png:
        return [{"role": "user", "content": [text_part]}]
    image: dict[str, Any] = {"url": image_data_url(request.image_png)}
    if detail != "omit":
        image["detail"] = detail
    return [{"role": "user", "content": [{"type": "image_url", "image_url": image}, text_part]}]


def effective_detail(settings: LMMSettings, profile: ModelProfile) -> str:
    """The image detail actually sent: the profile's when it sets one, else the settings'."""
    return profile.detail or settings.detail


def build_body(settings: LMMSettings, profile: ModelProfile, request: LMMRequest) -> dict[str, Any]:
    """The complete chat-completions JSON body of ``request`` (what goes over the wire, also into a Batch
    API JSONL line): model, messages, the profile's token-limit field, temperature when accepted,
    ``response_format`` when asked for and supported, the profile's extra fields and the facts."""
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": build_messages(request, effective_detail(settings, profile)),
        profile.token_field: settings.max_tokens,
    }
    if profile.temperature:
        body["temperature"] = settings.temperature
    if request.response_format is not None and profile.structured_outputs:
        body["response_format"] = to_plain_json(request.response_format)
    body.update(to_plain_json(dict(profile.extra)))
    if settings.send_facts:
        body["geopixeld_facts"] = to_plain_json(request.facts)
    return body


def request_key(settings: LMMSettings, profile: ModelProfile, request: LMMRequest) -> str:
    """The cache key of ``request`` (independent of endpoint, API key and ref).

    For models with the generic profile and requests without ``response_format`` it is exactly the key of
    earlier versions, so existing caches stay valid.
    """
    params = settings.generation_params()
    material = profile.key_material()
    if material:
        params = {**params, "profile": material}
        if not profile.temperature:
            params["temperature"] = None  # not sent: the setting does not shape the answer
    if request.response_format is not None and profile.structured_outputs:
        params = {**params, "response_format": request.response_format}
    return cache_key(
        model=settings.model,
        params=params,
        prompt_version=settings.prompt_version,
        tier=request.tier,
        prompt=request.prompt,
        image_png=request.image_png,
        facts=request.facts,
    )


@dataclass(frozen=True)
class _Answer:
    """A parsed successful response."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None


class _BadResponse(Exception):
    """A 2xx response we cannot use (not JSON, no choices, no text).

    ``retryable``: True when the body itself is broken (cut short, not JSON, no choices), which is as
    transient as a 5xx; False for a well-formed answer with no text.
    """

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def parse_chat_response(raw: str, requested_model: str) -> _Answer:
    """Text, model and usage of a chat-completions response body.

    Raises:
        _BadResponse: not JSON, or no non-empty ``choices[0].message.content``.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise _BadResponse("malformed response: body is not JSON (cut short?)") from None
    if not isinstance(body, dict):
        raise _BadResponse("malformed response: body is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _BadResponse("malformed response: no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        message = "empty response: no message content"
        if choices[0].get("finish_reason") == "length":
            message += (
                " (the token limit was used up before any answer; reasoning models spend it on hidden "
                "reasoning: raise --max-tokens)"
            )
        raise _BadResponse(message, retryable=False)
    usage_field = body.get("usage")
    usage: dict[str, Any] = usage_field if isinstance(usage_field, dict) else {}

    def _int(value: Any) -> int:
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    return _Answer(
        text=content.strip(),
        model=str(body.get("model") or requested_model),
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        finish_reason=choices[0].get("finish_reason"),
    )


_UNSUPPORTED_CODES = ("unsupported_parameter", "unsupported_value")
_UNSUPPORTED_RE = re.compile(r"unsupported (?:parameter|value)s?:?\s*'?\"?([A-Za-z_.]+)", re.IGNORECASE)
_EXTRA_FIELD_RE = re.compile(r"(?:extra|unrecognized|unknown)[^'\"]*['\"]([A-Za-z_.]+)['\"]", re.IGNORECASE)


def refused_parameter(status: int, body: Any) -> str | None:
    """The request field a 400 answer says the model does not accept (``max_tokens``, ``temperature``,
    ``response_format``...), or None when the 400 is about something else.

    Reads OpenAI's ``error.param`` with code ``unsupported_parameter``/``unsupported_value``, the message
    ``Unsupported parameter: 'max_tokens' ...``, and "extra/unrecognized field 'x'" messages of other servers.
    """
    if status != 400:
        return None
    inner = body.get("error", body) if isinstance(body, dict) else body
    message = str(inner.get("message") or inner.get("detail") or "") if isinstance(inner, dict) else ""
    message = message or str(inner or "")
    if isinstance(inner, dict):
        code, param = inner.get("code"), inner.get("param")
        if code in _UNSUPPORTED_CODES and isinstance(param, str) and param:
            return param
    match = _UNSUPPORTED_RE.search(message) or _EXTRA_FIELD_RE.search(message)
    if match:
        return match.group(1).strip(".")
    if "geopixeld_facts" in message:
        return "geopixeld_facts"
    return None


def _status_error_text(error: openai.APIStatusError, model: str = "", profiles_source: str = "built-in") -> str:
    """``HTTP 400: <server message>``, short, from the status and the body (never from request headers);
    for a refused parameter, followed by the setting to change."""
    message = ""
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = str(inner.get("message", "")) if isinstance(inner, dict) else str(inner)
    elif body is not None:
        message = str(body)
    text = f"HTTP {error.status_code}" + (f": {message[:300]}" if message else "")
    param = refused_parameter(error.status_code, body)
    if param is not None:
        text += f" ({unsupported_parameter_hint(param, model, profiles_source)})"
    return text


#: (base URL, model) -> {refused request field: the error it got}, shared by the clients of this process.
_REFUSED: dict[tuple[str, str], dict[str, str]] = {}


class LMMClient:
    """Describe batches of requests through one OpenAI-compatible endpoint (see the module doc).

    Args:
        settings: endpoint, model, limits and cache location.
        cache: a cache to use instead of one at ``settings.cache_dir``.
    """

    def __init__(self, settings: LMMSettings, cache: ResponseCache | None = None) -> None:
        self.settings = settings
        self.cache = (
            cache
            if cache is not None
            else (ResponseCache(settings.cache_dir) if settings.cache_dir is not None else None)
        )
        self.prices = load_price_table(settings.prices_file)
        self.profiles: ProfileTable = load_profiles(settings.profiles_file)
        self.profile: ModelProfile = self.profiles.lookup(settings.model)
        self._rng = random.Random()
        # request field -> error text, once the model refused that field (HTTP 400): requests carrying it
        # are not sent any more by any client of this process for the same endpoint and model (they would
        # fail the same way; describe makes one client per tile batch)
        self._refused: dict[str, str] = _REFUSED.setdefault((settings.base_url, settings.model), {})

    def key_for(self, request: LMMRequest) -> str:
        """The cache key of ``request`` under these settings (independent of endpoint, API key and ref)."""
        return request_key(self.settings, self.profile, request)

    def body_for(self, request: LMMRequest) -> dict[str, Any]:
        """The chat-completions body of ``request`` under these settings and the model's profile."""
        return build_body(self.settings, self.profile, request)

    def totals(self, results: Sequence[LMMResult]) -> RunTotals:
        """Calls, tokens and estimated cost of ``results`` under this client's price table."""
        return RunTotals.from_results(results, self.prices)

    def describe_all_sync(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]:
        """Blocking :meth:`describe_all` (must not be called from inside a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.describe_all(requests, progress=progress))
        raise RuntimeError("describe_all_sync() called inside an event loop; await describe_all() instead")

    async def describe_all(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]:
        """Answer every request; results in input order, one per request, errors included.

        Args:
            requests: what to ask.
            progress: show a tqdm progress bar.
        """
        results: list[LMMResult | None] = [None] * len(requests)
        keys: list[str] = []
        for i, request in enumerate(requests):
            try:
                keys.append(self.key_for(request))
            except (TypeError, ValueError) as exc:  # facts that cannot be serialised: this request only
                keys.append("")
                results[i] = self._invalid(request, f"invalid request: {exc}")
        first_of: dict[str, int] = {}
        to_send: list[int] = []
        bar = tqdm(total=len(requests), desc="describe", unit="req", disable=not progress, leave=False)
        bar.update(sum(r is not None for r in results))
        try:
            for i, (request, key) in enumerate(zip(requests, keys, strict=True)):
                if not key:
                    continue
                if key in first_of:
                    continue  # duplicate: filled in from its first occurrence below
                first_of[key] = i
                entry = self.cache.get(key) if self.cache is not None else None
                if entry is not None:
                    results[i] = self._from_cache(request, entry)
                    bar.update(1)
                else:
                    to_send.append(i)
            if to_send:
                await self._send_all(requests, keys, to_send, results, bar)
            for i, key in enumerate(keys):
                if results[i] is None:
                    original = results[first_of[key]]
                    assert original is not None
                    results[i] = replace(
                        original, ref=requests[i].ref, from_cache=True, attempts=0, latency_s=0.0
                    )
                    bar.update(1)
        finally:
            bar.close()
        final = [r for r in results if r is not None]
        if to_send or final:
            logger.info("lmm: %s", self.totals(final).summary())
        return final

    async def _send_all(
        self,
        requests: Sequence[LMMRequest],
        keys: Sequence[str],
        indices: Sequence[int],
        results: list[LMMResult | None],
        bar: Any,
    ) -> None:
        """Send ``requests[i]`` for every ``i`` in ``indices`` and store their results in place."""
        s = self.settings
        if s.api_key() is None:
            logger.info(
                "environment variable %s is unset; sending requests without an API key", s.api_key_env
            )
        semaphore = asyncio.Semaphore(s.concurrency)
        async with openai.AsyncOpenAI(
            api_key=s.api_key() or NO_KEY, base_url=s.base_url, timeout=s.timeout_s, max_retries=0
        ) as client:

            async def one(i: int) -> None:
                try:
                    results[i] = await self._call(client, semaphore, requests[i], keys[i])
                except Exception as exc:  # a bug of ours must not cost the rest of the batch either
                    logger.exception("lmm request %s failed unexpectedly", requests[i].ref or keys[i][:12])
                    results[i] = self._invalid(requests[i], f"{type(exc).__name__}: {exc}", keys[i])
                bar.update(1)

            await asyncio.gather(*(one(i) for i in indices))

    def _invalid(self, request: LMMRequest, error: str, key: str = "") -> LMMResult:
        """An error result for a request that was never (successfully) sent."""
        return LMMResult(
            ref=request.ref,
            key=key,
            status="error",
            text=None,
            from_cache=False,
            attempts=0,
            latency_s=0.0,
            input_tokens=0,
            output_tokens=0,
            error=error[:500],
            raw=None,
            model=self.settings.model,
            tier=request.tier,
            prompt_version=self.settings.prompt_version,
        )

    def _from_cache(self, request: LMMRequest, entry: CacheEntry) -> LMMResult:
        return LMMResult(
            ref=request.ref,
            key=entry.key,
            status="ok",
            text=entry.text,
            from_cache=True,
            attempts=0,
            latency_s=0.0,
            input_tokens=entry.input_tokens,
            output_tokens=entry.output_tokens,
            error=None,
            raw=entry.raw,
            model=entry.model,
            tier=request.tier,
            prompt_version=entry.prompt_version,
            finish_reason=entry.finish_reason,
        )

    async def _call(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, request: LMMRequest, key: str
    ) -> LMMResult:
        """One request with retries; always returns a result."""
        s = self.settings
        started = time.perf_counter()
        attempts = 0
        raw: str | None = None
        error = "not sent"
        body = self.body_for(request)
        model, messages = body.pop("model"), body.pop("messages")

        def result(**fields: Any) -> LMMResult:
            base: dict[str, Any] = {
                "ref": request.ref,
                "key": key,
                "status": "error",
                "text": None,
                "from_cache": False,
                "attempts": attempts,
                "latency_s": time.perf_counter() - started,
                "input_tokens": 0,
                "output_tokens": 0,
                "error": error,
                "raw": raw,
                "model": s.model,
                "tier": request.tier,
                "prompt_version": s.prompt_version,
            }
            base.update(fields)
            return LMMResult(**base)

        while True:
            retry_after: float | None = None
            retryable = False
            raw = None
            try:
                async with semaphore:
                    refused = next((self._refused[p] for p in body if p in self._refused), None)
                    if refused is not None:
                        error = f"not sent: an earlier request failed with {refused}"
                        return result()
                    attempts += 1
                    response = await asyncio.wait_for(
                        client.chat.completions.with_raw_response.create(
                            model=model, messages=messages, extra_body=body
                        ),
                        timeout=s.timeout_s,
                    )
                    raw = response.text
                answer = parse_chat_response(raw, s.model)
            except _BadResponse as exc:
                error, retryable = str(exc), exc.retryable
            except openai.APITimeoutError:
                error, retryable = f"timeout after {s.timeout_s:g} s", True
            except asyncio.TimeoutError:
                error, retryable = f"timeout after {s.timeout_s:g} s", True
            except openai.APIConnectionError as exc:
                cause = exc.__cause__
                error = "connection error" + (f": {type(cause).__name__}" if cause is not None else "")
                retryable = True
            except openai.APIStatusError as exc:
                raw = exc.response.text if exc.response is not None else None
                error = _status_error_text(exc, s.model, self.profiles.source)
                retryable = exc.status_code == 429 or exc.status_code >= 500
                param = refused_parameter(exc.status_code, exc.body)
                if param is not None and param in body:
                    self._refused.setdefault(param, error)
                retry_after = parse_retry_after(exc.response.headers if exc.response is not None else None)
            except Exception as exc:  # anything else: report it, never stop the batch
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
            else:
                if self.cache is not None:
                    entry = CacheEntry(
                        key=key,
                        text=answer.text,
                        model=answer.model,
                        raw=raw,
                        input_tokens=answer.input_tokens,
                        output_tokens=answer.output_tokens,
                        finish_reason=answer.finish_reason,
                        tier=request.tier,
                        prompt_version=s.prompt_version,
                        prompt=request.prompt,
                        created_at=time.time(),
                    )
                    try:  # file I/O off the event loop, so it never delays other requests
                        await asyncio.to_thread(self.cache.put, entry)
                    except OSError as exc:  # the answer is still good; it just will not be reused
                        logger.warning("could not cache %s: %s", request.ref or key[:12], exc)
                return result(
                    status="ok",
                    text=answer.text,
                    error=None,
                    model=answer.model,
                    input_tokens=answer.input_tokens,
                    output_tokens=answer.output_tokens,
                    finish_reason=answer.finish_reason,
                )
            if not retryable or attempts > s.max_retries:
                if retryable:
                    error += f" (gave up after {attempts} attempts)"
                logger.debug("lmm %s failed: %s", request.ref or key[:12], error)
                return result()
            delay = backoff_delay(attempts, s.backoff_base_s, s.backoff_max_s, self._rng)
            if retry_after is not None:
                delay = max(delay, min(retry_after, s.backoff_max_s))
            logger.debug("lmm %s: %s; retry %d in %.2f s", request.ref or key[:12], error, attempts, delay)
            await asyncio.sleep(delay)


__all__ = [
    "LMMClient",
    "backoff_delay",
    "build_body",
    "build_messages",
    "effective_detail",
    "image_data_url",
    "parse_chat_response",
    "parse_retry_after",
    "refused_parameter",
    "request_key",
]
