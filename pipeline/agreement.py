"""Second opinion: how far two answers about the same object agree.

With ``--second-opinion MODEL`` (or ``--samples 2`` at a temperature above 0) every instance and group
request is asked twice; :func:`agreement` scores the two answers, 0 (contradict each other) to 1 (say the
same thing). What each answer says is read into facets (:func:`facets`, with :mod:`pipeline.vocab`'s
words):

* **category** — the known categories it names;
* **colour** — colour words, compared through their families (``white`` and ``light grey`` agree);
* **count** — count phrases and numbers attached to the category, compared as ranges;
* **orientation** — orientation wording, compared as angle ranges;
* **position** — the sides it names (``left``, ``top``…; idioms removed).

A facet that both answers leave out is not scored; one answer saying something the other leaves out scores
0.9 (an omission is no contradiction); otherwise 1 when they are compatible and 0 when not. The agreement is ``0.8 × mean(facets) + 0.2 ×
text similarity`` (difflib's ratio over lower-cased words), or the text similarity alone when no facet
applies. A contradicted facet, or an agreement below :data:`pipeline.validate.AGREEMENT_MIN`, is a
``second_opinion_disagreement`` flag.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from . import validate, vocab

_SIDES = {"left": "left", "right": "right", "top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
FACET_WEIGHT = 0.8
#: Score of a facet one answer speaks to and the other leaves out.
OMITTED = 0.9


@dataclass(frozen=True)
class Facets:
    """What one answer says about its object (see the module docstring)."""

    categories: frozenset[str]
    colours: frozenset[str]
    counts: tuple[tuple[int, int | None], ...]
    orientation: tuple[tuple[tuple[float, float], ...], ...]
    sides: frozenset[str]


def facets(text: str, category: str, known: list[str] | tuple[str, ...] | frozenset[str]) -> Facets:
    """The facets of one answer about an object of ``category`` (``known``: the label set)."""
    cats = {category} if vocab.find_mention(text, category) else set()
    cats |= set(vocab.other_categories_named(text, category, list(known)))
    colours = frozenset(validate.stated_colours(text, category))
    counts = tuple((lo, hi) for _, lo, hi in validate.stated_counts(text, category))
    orientation = tuple(
        validate._ORIENTATION_RANGES[int(next(k for k, v in hit.groupdict().items() if v is not None)[1:])]
        for hit in validate._ORIENTATION.finditer(text)
    )
    plain = vocab.strip_non_positions(text)
    sides = frozenset(_SIDES[w.lower()] for w in re.findall(r"\b(left|right|top|upper|bottom|lower)\b", plain, re.I))
    return Facets(frozenset(cats), colours, counts, orientation, sides)


def _colours_agree(a: frozenset[str], b: frozenset[str]) -> bool:
    fam_a = set().union(*(vocab.COLOUR_WORDS[w] for w in a))
    fam_b = set().union(*(vocab.COLOUR_WORDS[w] for w in b))
    return bool(fam_a & fam_b)


def _ranges_overlap(a: tuple[int, int | None], b: tuple[int, int | None]) -> bool:
    hi_a = a[1] if a[1] is not None else 10**9
    hi_b = b[1] if b[1] is not None else 10**9
    return a[0] <= hi_b and b[0] <= hi_a


def _angles_overlap(a: tuple[tuple[float, float], ...], b: tuple[tuple[float, float], ...]) -> bool:
    return any(x0 < y1 and y0 < x1 for x0, x1 in a for y0, y1 in b)


def text_similarity(a: str, b: str) -> float:
    """difflib's ratio over the lower-cased words of both answers (0..1)."""
    wa, wb = re.findall(r"\w+", a.lower()), re.findall(r"\w+", b.lower())
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio() if wa or wb else 1.0


def facet_scores(a: Facets, b: Facets) -> dict[str, float]:
    """Per facet both or one answer speak to: 1 compatible, 0 contradicting, 0.9 said by one only."""
    out: dict[str, float] = {}

    def score(name: str, x: object, y: object, agree: bool) -> None:
        if not x and not y:
            return
        out[name] = OMITTED if not x or not y else (1.0 if agree else 0.0)

    score("category", a.categories, b.categories, bool(a.categories & b.categories))
    score("colour", a.colours, b.colours, bool(a.colours and b.colours and _colours_agree(a.colours, b.colours)))
    score("count", a.counts, b.counts, all(_ranges_overlap(x, y) for x in a.counts for y in b.counts))
    score("orientation", a.orientation, b.orientation,
          any(_angles_overlap(x, y) for x in a.orientation for y in b.orientation))
    score("position", a.sides, b.sides, not _opposed(a.sides, b.sides))
    return out


def _opposed(a: frozenset[str], b: frozenset[str]) -> bool:
    pairs = (("left", "right"), ("top", "bottom"))
    return any((x in a and y in b and x not in b and y not in a) or (y in a and x in b and y not in b and x not in a)
               for x, y in pairs)


def agreement(a: str, b: str, category: str, known: list[str] | tuple[str, ...] | frozenset[str]) -> tuple[float, dict[str, float]]:
    """The agreement of two answers about one object (see the module docstring) and its facet scores."""
    scores = facet_scores(facets(a, category, known), facets(b, category, known))
    sim = text_similarity(a, b)
    value = FACET_WEIGHT * sum(scores.values()) / len(scores) + (1 - FACET_WEIGHT) * sim if scores else sim
    return round(value, 4), {**scores, "text": round(sim, 4)}


def disagreement_flag(score: float, scores: dict[str, float], model: str) -> dict[str, str] | None:
    """A ``second_opinion_disagreement`` flag when a facet is contradicted (scores 0) or ``score`` <
    :data:`pipeline.validate.AGREEMENT_MIN`."""
    contradicted = any(v == 0.0 for k, v in scores.items() if k != "text")
    if score >= validate.AGREEMENT_MIN and not contradicted:
        return None
    worst = ", ".join(f"{k} {v:.2f}" for k, v in sorted(scores.items(), key=lambda kv: kv[1])[:3])
    return validate.flag("second_opinion_disagreement", validate.MEASURED_SEVERITY["second_opinion_disagreement"],
                         f"agreement {score:.2f} with {model} ({worst})")


__all__ = ["Facets", "agreement", "disagreement_flag", "facet_scores", "facets", "text_similarity"]
