"""Grounded captions: sentences + the objects they describe → ``<p> phrase </p> [SEG]`` text.

A ``GroundedSentence`` is one sentence with at most one grounded object (an instance or a cluster);
``assemble`` joins holistic and grounded sentences into the GeoPixelD caption and derives, from that
one string, everything downstream needs: the plain caption, each phrase's character span in it, and
the masks in ``[SEG]`` order. The markup itself (parsing, rendering, checks) lives in :mod:`pipeline.gcg`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import gcg, vocab

PHRASE_NAMING = ("indexed", "noun")


@dataclass
class Grounding:
    """The object a phrase points at."""

    kind: str  # instance | cluster
    category: str  # readable name
    instance_ids: list[int]
    mask: dict[str, Any]  # COCO RLE


@dataclass
class GroundedSentence:
    text: str
    grounding: Grounding | None = None
    index: int = 0  # 1-based number of this object among its category in the tile (for ``indexed`` names)
    position: str = ""
    flags: list[dict[str, str]] = field(default_factory=list)


def ground_sentence(s: GroundedSentence, naming: str = "indexed") -> tuple[str, bool]:
    """The sentence with its object's phrase marked up, and whether the sentence itself named it.

    ``indexed``: the phrase is ``category-k`` (GeoPixelD's ``tennis court-1``), replacing the sentence's
    mention of the category. ``noun``: the phrase is the mention itself (``white plane`` stays ``plane``).
    When the sentence never names the object, it is introduced: ``The <p> plane-2 </p> [SEG] at the top
    left: <sentence>``.
    """
    g = s.grounding
    if g is None:
        return s.text, True
    name = g.category if g.kind == "instance" else vocab.plural(g.category) if len(g.instance_ids) > 1 else g.category
    span = vocab.find_mention(s.text, g.category)
    if naming == "indexed":
        phrase = f"{name}-{s.index}"
    else:
        phrase = s.text[span[0] : span[1]] if span else name
    marked = gcg.render_phrase(phrase)
    if span:
        return s.text[: span[0]] + marked + s.text[span[1] :], True
    where = f" at the {s.position}" if s.position else ""
    return f"The {marked}{where}: {_lower_first(s.text)}", False


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


@dataclass
class Assembled:
    """A joined caption; ``sentences`` are its marked-up sentences, in order, each with its grounding
    (``None`` for holistic sentences), as the compose step receives them."""

    gcg_caption: str
    caption: str
    phrases: list[dict[str, Any]]
    masks: list[dict[str, Any]]
    sentences: list[tuple[str, Grounding | None]] = field(default_factory=list)


def assemble(sentences: list[GroundedSentence], naming: str = "indexed") -> Assembled:
    """Join sentences into a GCG caption; phrases and masks come out in ``[SEG]`` order."""
    if naming not in PHRASE_NAMING:
        raise ValueError(f"phrase naming must be one of {PHRASE_NAMING}")
    texts: list[str] = []
    groundings: list[Grounding] = []
    kept: list[tuple[str, Grounding | None]] = []
    for s in sentences:
        text, _ = ground_sentence(s, naming)
        text = " ".join(text.split())
        if not text:
            continue
        texts.append(text)
        kept.append((text, s.grounding))
        if s.grounding is not None:
            groundings.append(s.grounding)
    text_gcg = " ".join(texts)
    parsed = gcg.parse(text_gcg)
    caption, spans = parsed.caption, parsed.spans
    if len(spans) != len(groundings):  # a response contained its own markup
        raise ValueError(f"caption has {len(spans)} grounded phrases for {len(groundings)} objects")
    phrases = [
        {"text": p, "start": a, "end": b, "instance_ids": g.instance_ids, "category": g.category, "kind": g.kind}
        for (p, a, b), g in zip(spans, groundings, strict=True)
    ]
    return Assembled(text_gcg, caption, phrases, [g.mask for g in groundings], kept)


strip_markup = gcg.strip_markup
