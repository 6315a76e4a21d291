"""Naming automatic masks: an optional LMM tier that picks each object's category from a given list.

For every object, the LMM gets a crop of its tile around the object (context on every side, at most
``MAX_VIEW_SIDE`` px), with the object's outline drawn and a number mark on it, and the prompt set's
``category`` tier (``prompts/geopixeld-v1/category.txt``: pick one of ``{candidates}`` for the object
marked ``{mark_number}``, or say unknown). Requests go through the describe stage's client (``pipeline.lmm.client.LMMClient``),
so they share its cache, retries and concurrency; tier ``category``, facts ``{"tier": "category",
"candidates": [...]}`` (the offline describer answers this tier: it measures no appearance, so it answers
``unknown`` unless the facts carry a category from the list).

An answer is validated against the list, never trusted: it names a candidate when, after normalising
case, ``_``/``-`` and punctuation, it equals one (or its plural), or contains exactly one of them as whole
words (the longest when one candidate contains another: ``small vehicle`` over ``vehicle``). Outcomes:

============  ==========================================================================
status        meaning (the object keeps its category unless ``named``)
============  ==========================================================================
``named``     the answer is a candidate; the object takes the candidate's spelling
``unknown``   the LMM said ``unknown``/``none``/``other`` (flag ``category_unknown``, info)
``invalid``   anything else (flag ``category_invalid``, warning; the answer is kept)
``failed``    the request failed after its retries (flag ``category_failed``, warning)
============  ==========================================================================
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from ..lmm.types import LMMRequest, LMMResult
from ..marks import Mark, draw_marks, font_size_for, place_marks
from ..prompts import PromptSet, load_prompt_set
from ..records import TileInstance
from ..rle import LocalMask
from ..vocab import category_name

if TYPE_CHECKING:
    from .config import SamNamingConfig

TIER = "category"
MAX_VIEW_SIDE = 1024  # px; larger crops are downscaled after drawing
MIN_VIEW_SIDE = 96  # px of context around small objects
UNKNOWN_ANSWERS = {"unknown", "none", "other", "none of them", "not sure", "n a"}
FLAG_SEVERITY = {"category_unknown": "info", "category_invalid": "warning", "category_failed": "warning"}


class CategoryClient(Protocol):
    """What naming needs of a client (``LMMClient`` has it)."""

    def describe_all_sync(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]: ...


@dataclass(frozen=True)
class NamingOutcome:
    """The LMM's answer for one object.

    Attributes:
        ref: the request's ref.
        status: ``named``, ``unknown``, ``invalid`` or ``failed`` (see the module table).
        category: the candidate named (spelled as in the list), ``None`` unless ``named``.
        answer: the raw answer text (``None`` when the request failed).
        result: the full LMM result (for ``lmm_calls.parquet``).
    """

    ref: str
    status: str
    category: str | None
    answer: str | None
    result: LMMResult

    @property
    def flag(self) -> str | None:
        """``category_unknown`` / ``category_invalid`` / ``category_failed``, or ``None`` when named."""
        return None if self.status == "named" else f"category_{self.status}"


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", category_name(text)).replace("_", " ").split())


def check_candidates(candidates: Sequence[str]) -> list[str]:
    """The candidate list, validated: non-empty, no blank names, no two equal after normalising."""
    names = [str(c) for c in candidates]
    if not names:
        raise ValueError("naming needs at least one candidate category")
    seen: dict[str, str] = {}
    for c in names:
        key = _norm(c)
        if not key:
            raise ValueError(f"blank candidate category {c!r}")
        if key in seen:
            raise ValueError(f"candidate categories {seen[key]!r} and {c!r} are the same after normalising")
        seen[key] = c
    return names


def match_category(answer: str | None, candidates: Sequence[str]) -> tuple[str, str | None]:
    """``(status, candidate)`` for an answer: ``named`` with the candidate, or ``unknown``/``invalid``."""
    if answer is None or not answer.strip():
        return "invalid", None
    text = _norm(answer.strip().splitlines()[0])
    keys = {_norm(c): c for c in candidates}
    for form in (text, text[:-1] if text.endswith("s") else text, text[:-2] if text.endswith("es") else text):
        if form in keys:
            return "named", keys[form]
    if text in UNKNOWN_ANSWERS:
        return "unknown", None
    found = [k for k in keys if re.search(rf"\b{re.escape(k)}(?:s|es)?\b", text)]
    found = [k for k in found if not any(k != o and re.search(rf"\b{re.escape(k)}\b", o) for o in found)]
    if len(found) == 1:
        return "named", keys[found[0]]
    if not found and any(re.search(rf"\b{re.escape(u)}\b", text) for u in ("unknown", "none of them")):
        return "unknown", None
    return "invalid", None


def object_view(rgb: np.ndarray, mask: LocalMask, mark: int = 1) -> bytes:
    """PNG of a crop around ``mask`` (tile px) with its outline and a number mark drawn.

    The crop adds the object's own size of context on every side (at least ``MIN_VIEW_SIDE`` px around
    small objects), stays inside the ``H×W×3`` tile, and is downscaled to ``MAX_VIEW_SIDE`` px at most.
    """
    h, w = rgb.shape[:2]
    mh, mw = mask.array.shape
    pad = max(mh, mw, MIN_VIEW_SIDE // 2)
    x0, y0 = max(0, mask.x0 - pad), max(0, mask.y0 - pad)
    x1, y1 = min(w, mask.x0 + mw + pad), min(h, mask.y0 + mh + pad)
    crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    local = LocalMask(mask.x0 - x0, mask.y0 - y0, mask.array)
    size = font_size_for(x1 - x0, y1 - y0)
    (mx, my, box) = place_marks([local], x1 - x0, y1 - y0, size)[0]
    image = draw_marks(crop, [Mark(mark, mx, my, box)], [local], font_size=size)
    if max(image.size) > MAX_VIEW_SIDE:
        scale = MAX_VIEW_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def category_request(
    rgb: np.ndarray,
    mask: LocalMask,
    candidates: Sequence[str],
    ref: str,
    mark: int = 1,
    prompts: PromptSet | None = None,
) -> LMMRequest:
    """The ``category`` tier request for one object (``mask`` in the tile px of ``rgb``).

    ``prompts``: the prompt set whose ``category`` template is used (default: the default set).
    """
    prompt = (prompts or load_prompt_set()).render(TIER, mark_number=mark, candidates=", ".join(candidates))
    facts = {"tier": TIER, "candidates": list(candidates), "area_px": mask.area}
    return LMMRequest(tier=TIER, prompt=prompt, image_png=object_view(rgb, mask, mark), facts=facts, ref=ref)


def name_objects(
    rgb: np.ndarray,
    masks: Sequence[LocalMask],
    candidates: Sequence[str],
    client: CategoryClient,
    refs: Sequence[str] | None = None,
    progress: bool = False,
    prompts: PromptSet | None = None,
) -> list[NamingOutcome]:
    """Ask for the category of each object of one tile.

    Args:
        rgb: the ``H×W×3`` uint8 tile.
        masks: the objects' masks in tile px (empty masks are answered ``invalid`` without a request).
        candidates: the allowed categories.
        client: ``LMMClient`` (its cache, retries and concurrency apply) or anything with ``describe_all_sync``.
        refs: a label per object for the LMM call records (default ``object-<n>``).
        progress: show the client's progress bar.
        prompts: the prompt set of the ``category`` template (default: the default set).

    Returns:
        One outcome per mask, in order.
    """
    names = check_candidates(candidates)
    labels = list(refs) if refs is not None else [f"object-{n}" for n in range(1, len(masks) + 1)]
    if len(labels) != len(masks):
        raise ValueError(f"{len(labels)} refs for {len(masks)} masks")
    asked = [k for k, m in enumerate(masks) if m.area > 0]
    prompts = prompts or load_prompt_set()
    requests = [category_request(rgb, masks[k], names, labels[k], prompts=prompts) for k in asked]
    results = client.describe_all_sync(requests, progress=progress) if requests else []
    by_index = dict(zip(asked, results, strict=True))
    outcomes = []
    for k, label in enumerate(labels):
        res = by_index.get(k)
        if res is None:
            empty = LMMResult(
                ref=label, key="", status="error", text=None, from_cache=False, attempts=0, latency_s=0.0,
                input_tokens=0, output_tokens=0, error="empty mask: not asked", raw=None, model="", tier=TIER,
            )  # fmt: skip
            outcomes.append(NamingOutcome(label, "invalid", None, None, empty))
        elif not res.ok:
            outcomes.append(NamingOutcome(label, "failed", None, None, res))
        else:
            status, category = match_category(res.text, names)
            outcomes.append(NamingOutcome(label, status, category, res.text, res))
    return outcomes


def naming_extras(outcome: NamingOutcome, unnamed_source: str = "sam") -> dict[str, object]:
    """The record ``extras`` of an asked object: ``category_source`` (``lmm`` when named, else
    ``unnamed_source``), ``lmm_category_answer`` (raw answer or ``None``) and ``category_flags``."""
    return {
        "category_source": "lmm" if outcome.category is not None else unnamed_source,
        "lmm_category_answer": outcome.answer,
        "category_flags": [outcome.flag] if outcome.flag else [],
    }


def naming_columns(extras: dict[str, object], mask_source: str | None) -> dict[str, object]:
    """The naming columns of an ``instances.parquet`` row.

    ``category_source``: ``lmm`` (named by the LMM), ``sam`` (an automatic mask, not named) or
    ``annotation`` (the labels' category); ``category_answer``: the LMM's raw answer (``None`` when not
    asked); ``category_flags``: the naming flag codes (``[]`` when named or not asked).
    """
    flags = extras.get("category_flags")
    automatic = mask_source == "sam" and "sam_tiles" in extras
    return {
        "category_source": extras.get("category_source") or ("sam" if automatic else "annotation"),
        "category_answer": extras.get("lmm_category_answer"),
        "category_flags": list(flags) if isinstance(flags, list | tuple) else [],
    }


def name_tile_instances(
    rgb: np.ndarray,
    instances: Sequence[TileInstance],
    candidates: Sequence[str],
    client: CategoryClient,
    tile_id: str,
    select: Callable[[TileInstance], bool] | None = None,
    progress: bool = False,
) -> tuple[list[TileInstance], list[NamingOutcome]]:
    """Name the selected instances of one tile (default: those whose category is ``object``).

    Named instances take the candidate as ``category``; every asked instance gets ``extras`` entries
    ``category_source`` (``lmm`` when named), ``lmm_category_answer`` and ``category_flags`` (list of codes).

    Returns:
        ``(instances, outcomes)``: new records in input order, and one outcome per asked instance.
    """
    chosen = [k for k, inst in enumerate(instances) if (select or (lambda i: i.category == "object"))(inst)]
    refs = [f"{tile_id}#{instances[k].instance_id}" for k in chosen]
    outcomes = name_objects(rgb, [instances[k].mask for k in chosen], candidates, client, refs, progress)
    out = list(instances)
    for k, outcome in zip(chosen, outcomes, strict=True):
        inst = instances[k]
        extras = {**inst.extras, **naming_extras(outcome, str(inst.extras.get("category_source", "sam")))}
        out[k] = replace(inst, category=outcome.category or inst.category, extras=extras)
    return out, outcomes


class NameableSource(Protocol):
    """What :func:`name_auto_objects` needs (``SamAutoAnnotations`` has it)."""

    def name_objects(
        self, client: CategoryClient, candidates: Sequence[str], progress: bool = False, prompts: PromptSet | None = None
    ) -> list[NamingOutcome]: ...


def name_auto_objects(
    source: NameableSource, config: SamNamingConfig, out_dir: Path, calls_path: Path, progress: bool = False
) -> dict[str, int]:
    """Name one image's automatic masks through the configured endpoint (prepare's naming step).

    Starts the embedded offline describer on 127.0.0.1 when ``config.base_url`` is ``None``. Every call,
    failed ones included, is written to ``calls_path`` (the ``lmm_calls.parquet`` schema).

    Returns:
        Objects by outcome status (``named``, ``unknown``, ``invalid``, ``failed``).
    """
    from ..lmm.client import LMMClient
    from ..lmm.records import write_calls_parquet
    from ..lmm.server import running_offline_server

    prompts = load_prompt_set(config.prompts)
    with contextlib.ExitStack() as stack:
        base_url = config.base_url or stack.enter_context(running_offline_server())
        # a choice from a list, not prose: no sampling, a short answer
        settings = config.lmm_settings(base_url, out_dir / "lmm_cache", prompts.version, temperature=0.0, max_tokens=20)
        outcomes = source.name_objects(LMMClient(settings), config.categories, progress=progress, prompts=prompts)
    write_calls_parquet([o.result for o in outcomes], calls_path)
    return dict(Counter(o.status for o in outcomes))
