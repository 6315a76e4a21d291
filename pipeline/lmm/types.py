"""Data carriers and settings of the LMM layer: one request, one result, one client configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

#: Model name the offline describer reports (it measures; it does not look).
OFFLINE_MODEL = "geopixeld-offline-describer-v1"
#: Where ``geopixeld lmm serve`` listens by default.
DEFAULT_BASE_URL = "http://127.0.0.1:8765/v1"

Status = Literal["ok", "error"]


def facts_by_default(base_url: str | None) -> bool:
    """Whether measured facts travel with requests when the user did not say: the OpenAI API rejects
    unknown body fields, so only to the embedded describer (``None``) or a server on this machine."""
    if not base_url:
        return True
    return (urlparse(base_url).hostname or "") in ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class LMMRequest:
    """One description to ask for.

    Attributes:
        tier: prompt tier, e.g. ``"holistic"``, ``"instance"``, ``"cluster"``, ``"category"``.
        prompt: the rendered prompt text (see :mod:`pipeline.prompts`).
        image_png: the image sent with the prompt, PNG-encoded bytes (the set-of-marks tile for the instance
            tier, the clean tile otherwise).
        facts: measured facts sent along as ``geopixeld_facts`` (JSON-serialisable; read by the offline
            describer, ignored by ordinary servers). Part of the cache key.
        ref: the caller's label (tile id, tier, instance); carried to the result, NOT part of the cache key.
        response_format: the chat ``response_format`` to ask for (e.g. a ``json_schema``), None for plain text.
            Part of the cache key when set; dropped for models whose profile has no structured outputs.
    """

    tier: str
    prompt: str
    image_png: bytes
    facts: dict[str, Any] = field(default_factory=dict)
    ref: str = ""
    response_format: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LMMResult:
    """The outcome of one request; errors are results too, never exceptions.

    Attributes:
        ref: the request's ``ref``.
        key: content-addressed cache key (sha256 hex) of the request.
        status: ``"ok"`` when ``text`` holds an answer, ``"error"`` otherwise.
        text: the answer (None on error).
        from_cache: True when no request was sent for this result (persistent cache hit, or a duplicate of
            another request in the same batch).
        attempts: HTTP attempts made in this run (0 when from cache).
        latency_s: seconds from the first attempt to the result, retries and back-off included (0 when
            cached).
        input_tokens, output_tokens: token usage the server reported (for cached results: that of the
            original call).
        error: short error description (never contains the API key), None when ok.
        raw: the raw response body text, kept for auditing (None when no body was received).
        model: the model that answered as the server reported it (the requested one when unknown).
        tier: the request's tier.
        prompt_version: version of the prompt set that produced the prompt.
        finish_reason: the server's ``finish_reason`` (``"length"`` means the answer was cut off).
        batch: True when the answer came through the Batch API (billed at the batch discount).
    """

    ref: str
    key: str
    status: Status
    text: str | None
    from_cache: bool
    attempts: int
    latency_s: float
    input_tokens: int
    output_tokens: int
    error: str | None
    raw: str | None
    model: str
    tier: str = ""
    prompt_version: str = ""
    finish_reason: str | None = None
    batch: bool = False

    @property
    def ok(self) -> bool:
        """True when the result holds an answer."""
        return self.status == "ok"


class LMMSettings(BaseModel):
    """How to reach and drive an OpenAI-compatible chat endpoint.

    The defaults target the offline describer (``geopixeld lmm serve``), so nothing leaves the machine
    unless ``base_url`` is changed. The API key is read from the environment variable named by
    ``api_key_env`` at request time; it is never stored in settings, results, records, logs or the cache.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        default=DEFAULT_BASE_URL, description="Endpoint root, e.g. https://api.openai.com/v1."
    )
    model: str = Field(default=OFFLINE_MODEL, description="Model name sent with every request.")
    api_key_env: str = Field(
        default="OPENAI_API_KEY", description="Environment variable holding the API key."
    )
    concurrency: int = Field(default=8, ge=1, le=1024, description="Most requests in flight at once.")
    timeout_s: float = Field(
        default=60.0, gt=0, description="Per-attempt timeout in seconds (whole request)."
    )
    max_retries: int = Field(
        default=5, ge=0, description="Retries after the first attempt (429, 5xx, timeouts, drops)."
    )
    backoff_base_s: float = Field(
        default=0.5, ge=0, description="First back-off in seconds; doubles per retry."
    )
    backoff_max_s: float = Field(
        default=30.0,
        ge=0,
        description="Longest single wait in seconds, also the cap on a server's Retry-After.",
    )
    temperature: float = Field(default=0.2, ge=0, le=2)
    max_tokens: int = Field(default=300, ge=1, description="Answer length limit in tokens.")
    detail: Literal["auto", "low", "high"] = Field(default="auto", description="OpenAI image detail level.")
    cache_dir: Path | None = Field(
        default=None, description="Persistent response cache folder; None disables it."
    )
    prompt_version: str = Field(
        default="geopixeld-v1", description="Prompt-set version; recorded and part of the key."
    )
    send_facts: bool = Field(
        default=True,
        description=(
            "Send measured facts as the extra body field 'geopixeld_facts'. Servers that reject unknown "
            "fields (the OpenAI API itself does) need False."
        ),
    )
    prices_file: Path | None = Field(
        default=None, description="YAML/JSON price table; None uses built-in estimates."
    )
    profiles_file: Path | None = Field(
        default=None,
        description="YAML/JSON model profiles (token-limit field, temperature, detail); None: built-in table.",
    )

    def api_key(self) -> str | None:
        """The API key from the environment, or None when the variable is unset or empty."""
        return os.environ.get(self.api_key_env) or None

    def generation_params(self) -> dict[str, Any]:
        """Parameters that shape the answer, hence part of the cache key."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "detail": self.detail,
            "send_facts": self.send_facts,
        }


#: Start of the error text of a result that is not answered yet (:mod:`pipeline.lmm.deferred`).
PENDING = "pending: "


def is_pending(result: LMMResult) -> bool:
    """True for a result left unanswered on purpose (dry run, Batch API filling), not a failure."""
    return not result.ok and (result.error or "").startswith(PENDING)


__all__ = [
    "DEFAULT_BASE_URL",
    "OFFLINE_MODEL",
    "PENDING",
    "LMMRequest",
    "LMMResult",
    "LMMSettings",
    "Status",
    "is_pending",
]


class EndpointConfig(BaseModel):
    """Which OpenAI-compatible endpoint a stage asks, and how (shared by describe and SAM naming).

    Attributes:
        base_url: the endpoint; ``None`` starts the embedded offline describer on 127.0.0.1.
        model: model name (default: the offline describer's).
        api_key_env: environment variable holding the API key (never logged or written).
        concurrency: requests in flight at once.
        timeout_s, max_retries: per-request timeout and retries on 429/5xx/timeouts.
        prompts: prompt set name (under ``prompts/``) or folder; its version is recorded on outputs.
        cache_dir: persistent response cache (default: the stage's ``lmm_cache`` folder).
        send_facts: send measured facts as an extra body field (default: only to loopback servers).
        profiles_file: model request profiles (YAML/JSON, see :mod:`pipeline.lmm.profiles`); None: built-in.
    """

    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(8, ge=1, le=1024)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    prompts: str | None = None
    cache_dir: str | None = None
    send_facts: bool | None = None
    profiles_file: str | None = None

    def facts_enabled(self) -> bool:
        """Measured facts travel as an extra request field that the offline describer reads; the OpenAI
        API itself rejects unknown fields. Default: send them only to a server on this machine."""
        return self.send_facts if self.send_facts is not None else facts_by_default(self.base_url)

    def lmm_settings(self, base_url: str, default_cache_dir: Path, prompt_version: str, **more: Any) -> LMMSettings:
        """Client settings for this endpoint at ``base_url`` (the resolved one); ``more``: other
        ``LMMSettings`` fields (temperature, answer length, ...)."""
        return LMMSettings(
            base_url=base_url,
            model=self.model or OFFLINE_MODEL,
            api_key_env=self.api_key_env,
            concurrency=self.concurrency,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            cache_dir=Path(self.cache_dir) if self.cache_dir else default_cache_dir,
            prompt_version=prompt_version,
            send_facts=self.facts_enabled(),
            profiles_file=Path(self.profiles_file) if self.profiles_file else None,
            **more,
        )
