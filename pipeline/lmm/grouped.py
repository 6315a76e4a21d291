"""Grouped instance requests: K marked objects of one tile in one LMM call (``--instances-per-call K``).

The paper's instance tier sends the whole set-of-marks tile once per object, so image tokens dominate the
bill. Grouping asks for up to K marked objects of the same image in one request whose prompt lists each
object's own instance prompt (the prompt set's wording, unchanged) and asks for a JSON answer::

    {"objects": [{"mark": 3, "description": "..."}, {"mark": 5, "description": "..."}]}

with ``response_format`` ``json_schema`` (:data:`GROUP_RESPONSE_FORMAT`) where the model's profile has
structured outputs; the same JSON is asked for in the prompt, and parsed from plain text (code fences and
text around it tolerated) where it has not, or when a server refuses ``response_format`` (those groups are
then sent once more without it).

Every object's answer is checked as a single answer would be (a ``validator``, e.g. describe's answer
checks); an object whose answer is missing, empty or invalid, and every object of a group call that failed,
is asked again singly with its own ordinary request (unless the group call is only pending, see
:mod:`pipeline.lmm.deferred`). Requests that cannot be grouped (other tiers, no
``mark`` in the facts) are sent as they are.

Which requests form a group: consecutive-or-not requests of an instance tier with the same image bytes (one
set-of-marks tile), in input order, up to K per group; a lone object stays a single request.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .types import LMMRequest, LMMResult, is_pending

#: Tier of a grouped request (the offline describer answers it with JSON).
GROUP_TIER = "instance_group"
#: Tiers whose requests may be grouped.
GROUPABLE_TIERS = frozenset({"instance", "instance_metric"})

#: The structured-outputs answer format of a grouped request.
GROUP_RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "marked_objects",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "objects": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"mark": {"type": "integer"}, "description": {"type": "string"}},
                        "required": ["mark", "description"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["objects"],
            "additionalProperties": False,
        },
    },
}

#: Validator of one object's answer: (the object's single request, its answer text) -> usable.
Validator = Callable[[LMMRequest, str], bool]


class Describer(Protocol):
    """What grouping needs from a client (:class:`~pipeline.lmm.client.LMMClient`, the batch runner)."""

    def describe_all_sync(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]: ...


def group_prompt(members: Sequence[LMMRequest]) -> str:
    """The prompt of one grouped request: each member's own instance prompt, numbered by its mark, and the
    JSON answer format."""
    marks = [int(m.facts["mark"]) for m in members]
    lines = [
        f"This image has numbered marks on {len(members)} objects that each need their own description. "
        "Answer every request below separately, each about its marked object only.",
    ]
    for mark, member in zip(marks, members, strict=True):
        lines.append(f"Object {mark}: {member.prompt}")
    example = ", ".join(f'{{"mark": {m}, "description": "..."}}' for m in marks)
    lines.append(
        'Reply with JSON only, one entry per object in the order above: {"objects": [' + example + "]}"
    )
    return "\n".join(lines)


@dataclass(frozen=True)
class Group:
    """One grouped request and the input positions of its members."""

    request: LMMRequest
    members: tuple[int, ...]


def _mark(request: LMMRequest) -> int | None:
    mark = request.facts.get("mark") if isinstance(request.facts, dict) else None
    if isinstance(mark, bool) or not isinstance(mark, (int, float)) or int(mark) != mark:
        return None
    return int(mark)


def plan_groups(requests: Sequence[LMMRequest], k: int) -> tuple[list[Group], list[int]]:
    """Split ``requests`` into groups of up to ``k`` (see the module doc) and the positions sent singly."""
    if k < 1:
        raise ValueError(f"instances per call must be at least 1, got {k}")
    pending: dict[tuple[str, bytes], list[int]] = {}
    singles: list[int] = []
    order: list[tuple[str, bytes]] = []
    for i, request in enumerate(requests):
        if k == 1 or request.tier not in GROUPABLE_TIERS or _mark(request) is None:
            singles.append(i)
            continue
        image_key = (request.tier, hashlib.sha256(request.image_png).digest())
        if image_key not in pending:
            pending[image_key] = []
            order.append(image_key)
        pending[image_key].append(i)
    groups: list[Group] = []
    for image_key in order:
        positions = pending[image_key]
        for start in range(0, len(positions), k):
            chunk = positions[start : start + k]
            if len(chunk) == 1:
                singles.append(chunk[0])
                continue
            groups.append(Group(make_group_request([requests[i] for i in chunk]), tuple(chunk)))
    singles.sort()
    return groups, singles


def make_group_request(members: Sequence[LMMRequest], *, structured: bool = True) -> LMMRequest:
    """The grouped request of ``members`` (same image, each with a ``mark``)."""
    marks = [int(m.facts["mark"]) for m in members]
    tile = members[0].ref.split("|", 1)[0]
    return LMMRequest(
        tier=GROUP_TIER,
        prompt=group_prompt(members),
        image_png=members[0].image_png,
        facts={"tier": GROUP_TIER, "objects": [dict(m.facts) for m in members]},
        ref=f"{tile}|{GROUP_TIER}|" + "+".join(str(m) for m in marks),
        response_format=GROUP_RESPONSE_FORMAT if structured else None,
    )


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def parse_group_answer(text: str) -> dict[int, str]:
    """``{mark: description}`` from a grouped answer: the JSON object (or a bare list of entries), also inside
    a code fence or surrounded by prose; entries without an integer ``mark`` or a string answer are skipped.
    An answer with no JSON in it gives ``{}``."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    data: Any = None
    for candidate in candidates:
        candidate = candidate.strip()
        pairs = sorted((("{", "}"), ("[", "]")), key=lambda pair: (candidate.find(pair[0]) % (len(candidate) + 1)))
        for opener, closer in pairs:
            start, end = candidate.find(opener), candidate.rfind(closer)
            if start < 0 or end <= start:
                continue
            try:
                data = json.loads(candidate[start : end + 1])
                break
            except ValueError:
                continue
        if data is not None:
            break
    entries = data.get("objects") if isinstance(data, dict) else data
    out: dict[int, str] = {}
    if not isinstance(entries, list):
        return out
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        mark, answer = entry.get("mark"), entry.get("description")
        if isinstance(mark, str) and mark.strip().isdigit():
            mark = int(mark.strip())
        if isinstance(mark, bool) or not isinstance(mark, int) or not isinstance(answer, str):
            continue
        out.setdefault(mark, answer.strip())
    return out


@dataclass
class GroupedRun:
    """What a grouped run returns.

    Attributes:
        results: one result per input request, in input order; an object answered inside a group carries
            the group call's key, status, model, cache and batch flags, and 0 tokens (its share of the bill
            is on the call).
        calls: every LMM call made (group calls, fallbacks without ``response_format``, singles, and
            re-asked objects) — what ``lmm_calls.parquet`` keeps and what costs money.
        regrouped_fallbacks: group calls sent again without ``response_format``.
        reasked: objects asked again singly (missing, invalid, or their group call failed).
    """

    results: list[LMMResult]
    calls: list[LMMResult]
    regrouped_fallbacks: int = 0
    reasked: int = 0


def _refused_structured(result: LMMResult) -> bool:
    return not result.ok and "response_format" in (result.error or "") and "400" in (result.error or "")


def describe_grouped(
    client: Describer,
    requests: Sequence[LMMRequest],
    k: int,
    validator: Validator | None = None,
    progress: bool = False,
) -> GroupedRun:
    """Answer ``requests`` with up to ``k`` marked objects per call (see the module doc)."""
    ok: Validator = validator or (lambda request, text: bool(text.strip()))
    groups, singles = plan_groups(requests, k)
    first = client.describe_all_sync([g.request for g in groups] + [requests[i] for i in singles], progress)
    calls = list(first)
    group_results = first[: len(groups)]
    results: list[LMMResult | None] = [None] * len(requests)
    for i, result in zip(singles, first[len(groups) :], strict=True):
        results[i] = result

    fallback = [n for n, r in enumerate(group_results) if _refused_structured(r)]
    if fallback:
        plain = [
            make_group_request([requests[i] for i in groups[n].members], structured=False) for n in fallback
        ]
        again = client.describe_all_sync(plain, progress)
        calls.extend(again)
        for n, request, result in zip(fallback, plain, again, strict=True):
            groups[n] = Group(request, groups[n].members)
            group_results[n] = result

    reask: list[int] = []
    for group, result in zip(groups, group_results, strict=True):
        answers = parse_group_answer(result.text or "") if result.ok else {}
        for i in group.members:
            member = requests[i]
            if is_pending(result):  # not answered yet (dry run, batch filling): nothing to re-ask
                results[i] = replace(result, ref=member.ref, tier=member.tier)
                continue
            text = answers.get(int(member.facts["mark"]))
            if not text or not ok(member, text):
                reask.append(i)
                continue
            results[i] = replace(
                result,
                ref=member.ref,
                tier=member.tier,
                text=text,
                input_tokens=0,
                output_tokens=0,
                raw=None,
                attempts=0,
                latency_s=0.0,
            )
    if reask:
        again = client.describe_all_sync([requests[i] for i in reask], progress)
        calls.extend(again)
        for i, result in zip(reask, again, strict=True):
            results[i] = result
    final = [r for r in results if r is not None]
    assert len(final) == len(requests)
    return GroupedRun(final, calls, regrouped_fallbacks=len(fallback), reasked=len(reask))


__all__ = [
    "GROUPABLE_TIERS",
    "GROUP_RESPONSE_FORMAT",
    "GROUP_TIER",
    "Describer",
    "Group",
    "GroupedRun",
    "Validator",
    "describe_grouped",
    "group_prompt",
    "make_group_request",
    "parse_group_answer",
    "plan_groups",
]
