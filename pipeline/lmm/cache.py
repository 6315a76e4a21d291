"""A persistent, content-addressed cache of successful LMM answers.

Layout: one JSON file per key, ``<root>/<key[:2]>/<key>.json``. Every write goes to a temporary file in the
same folder and is moved into place with ``os.replace``, which is atomic on POSIX and Windows, so several
processes may fill one cache folder at once: a reader sees either no file or a complete one, and two writers
of the same key simply leave one of two equivalent answers. An unreadable file (e.g. a torn write after a
power loss) counts as a miss and is overwritten by the next success.

The key (:func:`cache_key`) covers everything that shapes an answer: model, generation parameters, prompt-set
version, tier, rendered prompt text, image bytes and measured facts. It never includes the API key, the
endpoint URL or the caller's ``ref``: the same question asked through another gateway is the same question.
Only successful answers are stored; failures are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Bumped when the key recipe or the entry format changes (old entries are then ignored, not misread).
CACHE_SCHEMA = "geopixeld-lmm-cache-v1"


def _jsonable(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars/arrays, paths, sets and ASCII bytes become plain JSON values.

    ASCII bytes become text because pycocotools returns compressed RLE ``counts`` as bytes.
    """
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise TypeError("binary bytes in facts are not JSON-serialisable") from None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Deterministic JSON text: sorted keys, no spaces, UTF-8 kept, numpy values converted."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def to_plain_json(value: Any) -> Any:
    """A deep copy of ``value`` made of plain JSON types (what an HTTP request body can carry)."""
    return json.loads(canonical_json(value))


def cache_key(
    *,
    model: str,
    params: Mapping[str, Any],
    prompt_version: str,
    tier: str,
    prompt: str,
    image_png: bytes,
    facts: Mapping[str, Any] | None,
) -> str:
    """The sha256 hex key of one request (see the module doc for what it covers and what it does not)."""
    material = {
        "schema": CACHE_SCHEMA,
        "model": model,
        "params": dict(params),
        "prompt_version": prompt_version,
        "tier": tier,
        "prompt": prompt,
        "image_sha256": hashlib.sha256(image_png).hexdigest(),
        "facts": dict(facts or {}),
    }
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    """One stored answer.

    Attributes:
        key: the request's cache key.
        text: the answer text.
        model: the model that answered, as reported by the server.
        raw: the raw response body text.
        input_tokens, output_tokens: usage of the original call.
        finish_reason: the server's finish reason.
        tier, prompt_version, prompt: what was asked (for auditing the cache by hand).
        created_at: UNIX time (s) of the write.
    """

    key: str
    text: str
    model: str
    raw: str | None
    input_tokens: int
    output_tokens: int
    finish_reason: str | None
    tier: str
    prompt_version: str
    prompt: str
    created_at: float


class ResponseCache:
    """One-file-per-key answer store under ``root`` (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        """Where ``key``'s entry lives: ``root/ab/abcdef....json``."""
        if len(key) < 3 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are lowercase hex digests, got {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key``, or None when absent, unreadable or of another schema."""
        try:
            data = json.loads(self.path_for(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.pop("schema", None) != CACHE_SCHEMA or data.get("key") != key:
            return None
        try:
            return CacheEntry(**data)
        except TypeError:
            return None

    def put(self, entry: CacheEntry) -> Path:
        """Store ``entry`` atomically (temporary file + ``os.replace``); returns its path."""
        path = self.path_for(entry.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"schema": CACHE_SCHEMA, **asdict(entry)}, ensure_ascii=False, indent=1)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return path

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def keys(self) -> Iterator[str]:
        """Keys of all stored entries (file names only; entries are not validated)."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("??/*.json")):
            yield path.stem

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())


__all__ = ["CACHE_SCHEMA", "CacheEntry", "ResponseCache", "cache_key", "canonical_json", "to_plain_json"]
