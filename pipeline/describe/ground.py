"""Grounding: each answer checked, each object's sentence marked ``<p> phrase </p> [SEG]``, joined per tile."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .. import gcg, validate, vocab
from ..colour import colour_shares
from ..grounding import Assembled, GroundedSentence, Grounding, assemble
from ..lmm.offline import decode_image, masked_pixels
from ..lmm.types import LMMResult
from ..rle import merge
from .config import DescribeConfig
from .plan import (
    Subject,
    TilePlan,
)


@dataclass
class Draft:
    """A tile's sentences grounded and joined, before the compose step."""

    assembled: Assembled
    flags: list[dict[str, Any]]
    holistic: str
    sentences: list[dict[str, Any]]  # compose input: {"text", "category", "kind"}
    agreement: float | None = None  # lowest second-opinion agreement of the tile's objects (None: not asked)



def measured_sentence(category: str, count: int, position: str) -> str:
    """A sentence from measurements alone, for groups past the call budget and failed calls:
    ``There are a few storage tanks at the bottom.`` (nothing is said that was not measured)."""
    where = vocab.place(position) or "in the image"
    if count == 1:
        return f"There is {vocab.article(category)} {category} {where}."
    from ..priors import count_word

    return f"There are {count_word(count)} {vocab.plural(category, count)} {where}."



def _flag(code: str, severity: str, detail: str, subject: Subject | None = None) -> dict[str, Any]:
    f: dict[str, Any] = validate.flag(code, severity, detail)
    if subject is not None and subject.kind != "holistic":
        f["instance_ids"] = subject.instance_ids
    return f



def _measured_flags(
    text: str, plan: TilePlan, s: Subject, images: dict[int, Any], known: list[str]
) -> list[dict[str, str]]:
    """The checks against measurements (:func:`pipeline.validate.check_measured`) of one answer: the instance
    row's size, metres and orientation, the group's count, the tile's categories, and the colour names of the
    mask's pixels in the image the request sent (the set-of-marks tile minus the mark box for an instance, as
    the offline describer measures them). Categories ``wrong_category`` reports are not reported again."""
    colours: tuple[tuple[str, float], ...] = ()
    if s.request is not None:
        req = plan.requests[s.request]
        key = id(req.image_png)
        if key not in images:
            images[key] = decode_image(req.image_png)
        pixels = masked_pixels(images[key], req.facts, exclude_mark=s.kind == "instance")
        colours = tuple(colour_shares(pixels)) if pixels is not None else ()
    r = s.row or {}
    measured = validate.Measured(
        kind=s.kind, category=s.category, count=len(s.instance_ids), size_class=r.get("size_class"),
        length_m=r.get("length_m"), width_m=r.get("width_m"), orientation_deg=r.get("orientation_deg"),
        elongation=r.get("elongation"), colours=colours, tile_counts=plan.tile_counts, labels=plan.labels,
    )
    skip = set() if vocab.find_mention(text, s.category) else set(vocab.other_categories_named(text, s.category, known))
    return validate.check_measured(text, measured, skip)



def ground_tile(
    plan: TilePlan, results: list[LMMResult], known_categories: list[str], config: DescribeConfig
) -> Draft:
    """Check each answer, ground each object's sentence and join them (the pre-compose caption)."""
    flags: list[dict[str, Any]] = list(plan.instance_flags)
    sentences: list[GroundedSentence] = []
    owners: list[Subject] = []  # the subject of each grounded sentence, in order
    holistic_text = ""
    index: Counter[str] = Counter()
    images: dict[int, Any] = {}  # decoded request images of this tile
    for s in plan.subjects:
        res = results[s.request] if s.request is not None else None
        text: str | None = None
        if res is not None:
            if not res.ok or res.text is None:
                kept = "" if s.kind == "holistic" else "; a measured sentence keeps it grounded"
                flags.append(_flag("lmm_failed", "error", f"{s.label}: {res.error or 'no answer'}{kept}", s))
            else:
                text = gcg.strip_markup(res.text)
                answer_flags = validate.check_answer(text, res.tier or s.kind)
                flags.extend(_flag(f["code"], f["severity"], f"{s.label}: {f['detail']}", s) for f in answer_flags)
                if any(f["code"] == "empty_response" for f in answer_flags):
                    text = None
        if s.kind == "holistic":
            if text:
                holistic_text = text
                holistic = validate.Measured("holistic", tile_counts=plan.tile_counts, labels=plan.labels)
                flags.extend(_flag(f["code"], f["severity"], f"holistic: {f['detail']}")
                             for f in validate.check_measured(text, holistic))
                sentences.append(GroundedSentence(text))
            continue
        measured = text is None
        if text is None:
            text = measured_sentence(s.category, len(s.instance_ids), s.position)
        extra: list[dict[str, str]] = []
        if s.row is not None:
            r = s.row
            if not measured:
                extra += validate.check_mark_leak(text, r["mark"])
                extra += validate.check_category(text, r["category_name"], known_categories)
                extra += validate.check_position(text, r["position"])
                extra += _measured_flags(text, plan, s, images, known_categories)
            if r["visible_fraction"] < validate.MOSTLY_CUT_OFF:
                extra.append(validate.flag("mostly_cut_off", "warning", f"only {r['visible_fraction']:.0%} visible"))
            grounding = Grounding("instance", s.category, s.instance_ids, r["rle"])
        else:
            assert s.group is not None
            if not measured:
                extra += validate.check_category(text, s.category, known_categories)
                extra += _measured_flags(text, plan, s, images, known_categories)
            grounding = Grounding("cluster", s.category, s.instance_ids, merge([m["rle"] for m in s.group.members]))
        index[s.category] += 1
        if vocab.find_mention(text, s.category) is None:
            extra.append(validate.flag("category_not_named", "info", "the phrase was added in front of the sentence"))
        flags.extend(_flag(f["code"], f["severity"], f"{s.label}: {f['detail']}", s) for f in extra)
        sentences.append(GroundedSentence(text, grounding, index[s.category], s.position))
        owners.append(s)
    grounded = [k for k, x in enumerate(sentences) if x.grounding is not None]
    for k, rep in enumerate(validate.check_repeats([sentences[i].text for i in grounded])):
        s = owners[k]
        flags.extend(_flag(f["code"], f["severity"], f"{s.label}: {f['detail']}", s) for f in rep)
    if plan.selection.ungrounded:
        ids = [int(r["instance_id"]) for r in plan.selection.ungrounded]
        flags.append(
            {**validate.flag("not_grounded", "warning", f"{len(ids)} object(s) have neither a mark nor a group"),
             "instance_ids": ids}
        )
    out = assemble(sentences, config.phrase_naming)
    compose_input = [
        {"text": text, "category": g.category if g else None, "kind": g.kind if g else "holistic"}
        for text, g in out.sentences
    ]
    return Draft(out, flags, holistic_text, compose_input)

