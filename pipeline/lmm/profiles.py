"""Per-model request profiles: what a chat-completions request may carry for a given model.

Servers disagree on a few request fields, and a request a model refuses fails with HTTP 400 every time, so
the client shapes each request by the model's profile:

=====================  ==========================================================================================
field                  meaning
=====================  ==========================================================================================
``token_field``        name of the answer-length limit: ``max_tokens`` (chat models, vLLM, most servers) or
                       ``max_completion_tokens`` (OpenAI reasoning models, which refuse ``max_tokens``)
``temperature``        whether a temperature is sent at all (reasoning models accept only the default, 1)
``detail``             image ``detail`` to send instead of the user's setting (``low``/``high``/``auto``), or
                       ``omit`` to send no ``detail`` field; empty: the user's setting
``structured_outputs``  whether ``response_format: {type: json_schema}`` is accepted (grouped instance requests
                       fall back to plain JSON in the prompt when it is not)
``reasoning``          the model spends hidden reasoning tokens inside the token limit (billed as output)
``extra``              more body fields to send, e.g. ``{reasoning_effort: low}``
=====================  ==========================================================================================

Built-in table (:data:`DEFAULT_PROFILES`), matched on the model name with shell-style patterns, the most
specific (longest) pattern winning:

============================  =========================  ===========  ==========
pattern                       token_field                temperature  reasoning
============================  =========================  ===========  ==========
``*`` (any other model)       ``max_tokens``             sent         no
``gpt-5*``                    ``max_completion_tokens``  not sent     yes
``gpt-5-chat*``               ``max_completion_tokens``  sent         no
``o1*``, ``o3*``, ``o4*``     ``max_completion_tokens``  not sent     yes
============================  =========================  ===========  ==========

Override or extend it with a YAML (or JSON) file (``--lmm-profiles FILE``); each entry's fields replace those
of the generic ``*`` profile, and a file's pattern wins over a built-in one of the same length::

    my-reasoning-vlm*: {token_field: max_completion_tokens, temperature: false, reasoning: true}
    old-vllm-model: {structured_outputs: false, detail: omit}
    gpt-5*: {token_field: max_completion_tokens, temperature: false, extra: {reasoning_effort: low}}
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
DETAILS = ("auto", "low", "high", "omit")


@dataclass(frozen=True)
class ModelProfile:
    """How requests to one model are shaped (see the module doc for each field)."""

    token_field: str = "max_tokens"
    temperature: bool = True
    detail: str = ""
    structured_outputs: bool = True
    reasoning: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token_field not in TOKEN_FIELDS:
            raise ValueError(f"token_field must be one of {', '.join(TOKEN_FIELDS)}, got {self.token_field!r}")
        if self.detail and self.detail not in DETAILS:
            raise ValueError(f"detail must be one of {', '.join(DETAILS)} (or empty), got {self.detail!r}")

    def key_material(self) -> dict[str, Any]:
        """What of the profile shapes the answer (for the cache key); empty for the generic profile, so keys
        of requests to ordinary models do not depend on profiles at all."""
        if self == GENERIC:
            return {}
        data = asdict(self)
        data["extra"] = dict(self.extra)
        return data


GENERIC = ModelProfile()
_REASONING = ModelProfile(token_field="max_completion_tokens", temperature=False, reasoning=True)

#: Built-in profiles by model-name pattern (see the module doc).
DEFAULT_PROFILES: dict[str, ModelProfile] = {
    "*": GENERIC,
    "gpt-5*": _REASONING,
    "gpt-5-chat*": ModelProfile(token_field="max_completion_tokens"),
    "o1*": _REASONING,
    "o3*": _REASONING,
    "o4*": _REASONING,
}


class ProfileTable:
    """Pattern -> :class:`ModelProfile`; :meth:`lookup` picks the most specific matching pattern."""

    def __init__(self, profiles: Mapping[str, ModelProfile] | None = None, source: str = "built-in") -> None:
        self.profiles: dict[str, ModelProfile] = dict(DEFAULT_PROFILES if profiles is None else profiles)
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> ProfileTable:
        """The built-in table plus the entries of a YAML/JSON file (see the module doc).

        Raises:
            ValueError: naming the file and the entry when an entry is malformed.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the model profiles file ({exc.strerror or exc})") from None
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: not valid YAML/JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of model-name pattern -> profile fields")
        known = {f.name for f in fields(ModelProfile)}
        profiles = dict(DEFAULT_PROFILES)
        for pattern, entry in data.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{path}: {pattern!r} must map to profile fields ({', '.join(sorted(known))})")
            unknown = set(entry) - known
            if unknown:
                raise ValueError(
                    f"{path}: {pattern!r} has unknown field(s) {', '.join(sorted(unknown))}; "
                    f"known: {', '.join(sorted(known))}"
                )
            try:
                profiles[str(pattern)] = ModelProfile(**entry)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}: {pattern!r}: {exc}") from None
        return cls(profiles, source=str(path))

    def match(self, model: str) -> str:
        """The pattern that decides ``model``'s profile (``*`` when nothing more specific matches)."""
        matches = [p for p in self.profiles if fnmatch.fnmatchcase(model, p)]
        return max(matches, key=lambda p: (len(p.replace("*", "")), len(p))) if matches else "*"

    def lookup(self, model: str) -> ModelProfile:
        """``model``'s profile."""
        return self.profiles.get(self.match(model), GENERIC)


def load_profiles(path: str | Path | None = None) -> ProfileTable:
    """The built-in table, or the built-in table extended by ``path``."""
    return ProfileTable() if path is None else ProfileTable.from_file(path)


def unsupported_parameter_hint(param: str, model: str, profiles_source: str = "built-in") -> str:
    """The sentence telling a user which setting to change when ``model`` refused request field ``param``."""
    where = "a model profiles file (--lmm-profiles FILE, see README 'LMM cost and compatibility')"
    if profiles_source != "built-in":
        where = f"the model profiles file {profiles_source}"
    pattern = f"{model}*" if model else "MODEL*"
    if param == "max_tokens":
        change = f"token_field: max_completion_tokens for {pattern!r}"
    elif param == "max_completion_tokens":
        change = f"token_field: max_tokens for {pattern!r}"
    elif param == "temperature":
        change = f"temperature: false for {pattern!r}"
    elif param == "response_format":
        change = f"structured_outputs: false for {pattern!r} (or use --instances-per-call 1)"
    elif param in ("detail", "image_url.detail") or param.endswith(".detail"):
        change = f"detail: omit for {pattern!r}"
    elif param == "geopixeld_facts":
        return "this server rejects the extra field geopixeld_facts: run with --no-facts (send_facts=False)"
    else:
        return f"the model {model!r} refuses the request field {param!r}; remove it from 'extra' in {where}"
    return f"the model {model!r} refuses {param!r}: set {change} in {where}"


__all__ = [
    "DEFAULT_PROFILES",
    "GENERIC",
    "ModelProfile",
    "ProfileTable",
    "load_profiles",
    "unsupported_parameter_hint",
]
