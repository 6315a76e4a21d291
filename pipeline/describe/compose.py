"""The compose tier: one paragraph per tile, checked to keep every phrase; the final sample row."""

from __future__ import annotations

from typing import Any

from .. import gcg, validate
from ..lmm.types import LMMRequest, LMMResult
from ..prompts import PromptSet
from ..selection import SelectionPolicy
from .ground import Draft
from .plan import (
    TilePlan,
)


def compose_request(plan: TilePlan, draft: Draft, prompts: PromptSet, policy: SelectionPolicy) -> LMMRequest | None:
    """The tile's compose request (text only), or None when the policy does not compose or there is
    nothing to fuse."""
    if not policy.compose or "compose" not in prompts.tiers or len(draft.sentences) < 2:
        return None
    listing = "\n".join(f"- {s['text']}" for s in draft.sentences)
    facts = {"tier": "compose", "sentences": draft.sentences, "max_words": policy.compose_max_words}
    prompt = prompts.render("compose", sentences=listing, max_words=policy.compose_max_words)
    return LMMRequest("compose", prompt, b"", facts, f"{plan.tile['tile_id']}|compose")



def check_compose(answer: str, expected: list[str]) -> tuple[gcg.ParsedCaption | None, str]:
    """The composed paragraph parsed, or ``None`` and why it is refused: it must keep every expected phrase
    exactly once, in order, with well-formed markup and nothing added."""
    text = " ".join(answer.split())
    if not text:
        return None, "empty answer"
    problems = gcg.markup_problems(text, len(expected))
    errors = [p for p in problems if p["severity"] == "error"]
    if errors:
        return None, "; ".join(p["detail"] for p in errors[:3])
    parsed = gcg.parse(text)
    got = [p.text for p in parsed.phrases]
    if got != expected:
        diff = next((k for k, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
        return None, f"phrase {diff + 1} changed or moved ({len(got)} phrases for {len(expected)})"
    if len(parsed.caption.split()) < 2 * len(expected):
        return None, "too short to describe its phrases"
    return parsed, ""



def compose_flags(caption: str, plan: TilePlan, flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Categories the composed paragraph names that occur nowhere in the tile and that no answer named
    before (the compose step added them): ``absent_category`` flags of the sample. Counts are not checked
    here: a paragraph mixes group counts with the tile's."""
    seen = " ".join(f["detail"] for f in flags if f["code"] == "absent_category")
    found = validate.check_absent(caption, validate.Measured("holistic", tile_counts=plan.tile_counts,
                                                             labels=plan.labels))
    return [validate.flag(f["code"], f["severity"], f"compose: {f['detail']} (added by the compose step)")
            for f in found if f["detail"] not in seen]



def finish_sample(
    plan: TilePlan, draft: Draft, compose: LMMResult | None, model: str, prompt_version: str
) -> dict[str, Any]:
    """One ``samples.parquet`` row from the draft and the compose answer (see the module docstring)."""
    tile = plan.tile
    out = draft.assembled
    flags = list(draft.flags)
    gcg_caption, caption = out.gcg_caption, out.caption
    spans = [(p["text"], p["start"], p["end"]) for p in out.phrases]
    if compose is not None:
        if not compose.ok or compose.text is None:
            flags.append(validate.flag("compose_failed", "warning",
                                       f"compose: {compose.error or 'no answer'}; the sentences are joined as they are"))
        else:
            parsed, why = check_compose(compose.text, [p["text"] for p in out.phrases])
            if parsed is None:
                flags.append(validate.flag("compose_rejected", "warning",
                                           f"compose: {why}; the sentences are joined as they are"))
            else:
                gcg_caption, caption, spans = parsed.gcg_caption, parsed.caption, parsed.spans
                flags.extend(compose_flags(caption, plan, flags))
    phrases = [{**p, "start": a, "end": b} for p, (_, a, b) in zip(out.phrases, spans, strict=True)]
    # Flags about objects name their phrase.
    phrase_of = {i: k for k, p in enumerate(phrases) for i in p["instance_ids"]}
    for f in flags:
        ids = f.get("instance_ids")
        if ids:
            hits = {phrase_of[i] for i in ids if i in phrase_of}
            f["phrase"] = hits.pop() if len(hits) == 1 else None
    flags.extend(validate.check_markup(gcg_caption, len(out.masks)))
    if not phrases:
        flags.append(validate.flag("no_grounding", "info", "no grounded phrase in this tile"))
    return {
        "tile_id": tile["tile_id"],
        "image_id": tile["image_id"],
        "tile_path": tile["tile_path"],
        "marks_path": tile["marks_path"],
        "width": tile["width"],
        "height": tile["height"],
        "gcg_caption": gcg_caption,
        "caption": caption,
        "phrases": phrases,
        "masks": out.masks,
        "flags": flags,
        "max_severity": validate.max_severity(flags),
        "review_score": validate.review_score(flags, draft.agreement),
        "holistic": draft.holistic,
        "n_instances": plan.n_instances,
        "n_grounded_instances": len({i for p in phrases for i in p["instance_ids"]}),
        "lmm_model": model,
        "prompt_version": prompt_version,
    }

