"""Validation flags: suspicious answers are flagged and kept, never dropped.

Each flag is ``{"code", "severity", "detail"}``, plus ``instance_ids`` and ``phrase`` (index into the
sample's phrases) when it is about one object; severity is ``info``, ``warning`` or ``error`` and drives
the review queue. Codes:

==========================  ========  ==========================================================
code                        severity  when
==========================  ========  ==========================================================
``lmm_failed``              error     the LMM request failed after its retries (error kept)
``empty_response``          error     the answer is empty
``refusal``                 error     the answer refuses or says it cannot see the object
``wrong_category``          error     names another category and not the object's own
``markup_*`` etc.           error     malformed ``<p> phrase </p> [SEG]`` markup or ``[SEG]`` count ≠ masks:
                                      the codes of :mod:`pipeline.gcg` (one set for the whole project)
``compose_failed``          warning   the compose call failed; the sentences are joined as they are
``compose_rejected``        warning   the composed paragraph changed, dropped or added a phrase (kept out)
``not_grounded``            warning   objects with neither a mark nor a group (no phrase can ground them)
``mark_leak``               warning   the answer mentions the mark number
``position_contradiction``  warning   says left/right/top/bottom against the position prior
``length_out_of_bounds``    warning   fewer or more words than the tier's bounds
``repeated_sentence``       warning   the same sentence as another object's in the tile
``mostly_cut_off``          warning   the object is mostly outside the tile (visible < 50 %)
``category_not_named``      info      the sentence never names the object; a phrase was added
``no_grounding``            info      the tile has no grounded phrase
==========================  ========  ==========================================================

**Checks against what was measured** (:func:`check_measured`; the words they read live in
:mod:`pipeline.vocab`). Each compares an answer's words with the facts of its subject (the instance row,
the group's members, the tile's categories, the colour names of the mask's pixels, :mod:`pipeline.colour`):

==============================  ========  ======================================================
code                            severity  when
==============================  ========  ======================================================
``count_mismatch``              error     count phrases or numbers attached to the category
                                          (``a single car``, ``several planes``, ``14 cars``)
                                          and none fits the group's count (holistic: the tile's
                                          count of that category); the phrase's range is
                                          :data:`pipeline.vocab.COUNT_PHRASES`, a number may be
                                          off by 10 % of the count (rounded down)
``absent_category``             error     names a category of the label set that occurs nowhere
                                          in the tile (synonyms count: ``truck`` is a large
                                          vehicle; generic words like ``vehicle`` never do)
``plural_mismatch``             warning   one object named only in the plural (``planes``), not
                                          after ``one of``
``orientation_contradiction``   warning   ``horizontal``/``vertical``/``diagonal``/``rising to
                                          the right``… and none fits the measured long axis of
                                          an object with elongation ≥ ``ORIENTED_MIN_ELONGATION``
                                          (each word's range widened by 7.5°; round categories
                                          skipped)
``size_contradiction``          warning   a small-like word (``small``, ``tiny``) before or about
                                          an object of size class ``large``, or a large-like one
                                          (``large``, ``huge``) about a ``small`` one
``metres_contradiction``        warning   a stated length in metres fits none of the measured
                                          length, width or their mean (ratio ≤ ``METRES_RATIO``
                                          or within ``METRES_ABS`` m)
``colour_contradiction``        warning   a colour word about the object whose colour family
                                          (:data:`pipeline.vocab.COLOUR_WORDS`) covers less than
                                          ``COLOUR_MIN_SHARE`` of the mask's pixels
``second_opinion_disagreement`` warning   a second answer (``--second-opinion``/``--samples 2``)
                                          contradicts the first on category, colour, count,
                                          orientation or position, or agrees less than
                                          ``AGREEMENT_MIN`` overall (the score is in the detail;
                                          :mod:`pipeline.agreement`)
==============================  ========  ======================================================

Idioms and orientation phrases (``right next to``, ``rising to the right``, ``left behind``, ``to the left
of the road``, ``on top of``; :data:`pipeline.vocab.NON_POSITION_PATTERNS`) never count as positions.

Flags about one object carry ``instance_ids`` and, once the caption is assembled, ``phrase`` (the index of
its phrase); sample-level flags have neither. :func:`review_score` turns a sample's flags (and the lowest
second-opinion agreement) into the needs-review score in ``samples.review_score``.

Flags that prepare leaves on instance records are carried to their tile's sample by
:func:`instance_flags`, one per instance and code, so reviewers see them too: SAM mask quality
(``sam_empty``, ``sam_box_disagreement``, ``sam_low_iou``, ``sam_unstable``; see
:mod:`pipeline.sam.quality`) and LMM naming of automatic masks (``category_unknown``,
``category_invalid``, ``category_failed``; see :mod:`pipeline.sam.naming`), with those modules' severities.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from . import gcg, vocab
from .sam.naming import FLAG_SEVERITY as NAMING_SEVERITY
from .sam.quality import FLAG_SEVERITY as SAM_SEVERITY

SEVERITY_RANK = {"none": 0, "info": 1, "warning": 2, "error": 3}
LENGTH_BOUNDS = {"holistic": (8, 160), "instance": (3, 60), "instance_metric": (3, 60), "cluster": (3, 60)}
MOSTLY_CUT_OFF = 0.5
REPEAT_RATIO = 0.97
REFUSAL_RE = re.compile(
    r"\b(i'?m sorry|i am sorry|i cannot|i can'?t|i am unable|i'?m unable|unable to (see|identify|determine)|"
    r"as an ai|cannot (see|identify|determine)|no (object|number) (is )?marked)\b",
    re.IGNORECASE,
)
SIDES = {"left": "h-", "right": "h+", "top": "v-", "upper": "v-", "bottom": "v+", "lower": "v+"}


def flag(code: str, severity: str, detail: str) -> dict[str, str]:
    return {"code": code, "severity": severity, "detail": detail}


def max_severity(flags: list[dict[str, str]]) -> str:
    return max((f["severity"] for f in flags), key=lambda s: SEVERITY_RANK[s], default="none")


INSTANCE_FLAG_SEVERITY = {**SAM_SEVERITY, **NAMING_SEVERITY}


def _instance_flag_detail(code: str, row: dict[str, Any]) -> str:
    def num(key: str) -> str:
        v = row.get(key)
        return "n/a" if v is None else f"{v:.2f}"

    if code == "sam_empty":
        return "SAM returned no pixel for the box; the box outline is kept"
    if code == "sam_box_disagreement":
        return f"SAM mask disagrees with its box (box IoU {num('sam_box_iou')}, box fill {num('sam_box_fill')})"
    if code == "sam_low_iou":
        return f"SAM's predicted IoU is low ({num('sam_predicted_iou')})"
    if code == "sam_unstable":
        return f"SAM mask outline is unstable (stability {num('sam_stability')})"
    if code == "category_unknown":
        return "the LMM could not name this automatic mask from the category list; it stays 'object'"
    if code == "category_invalid":
        return f"the LMM's answer is not in the category list: {str(row.get('category_answer'))[:60]!r}"
    if code == "category_failed":
        return "the naming request failed after its retries; it stays 'object'"
    return code


def instance_flags(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The flags prepare left on a tile's instance rows (``sam_flags``, ``category_flags``), one per
    instance and code, detail naming the instance and the measured number behind the flag."""
    out = []
    for r in sorted(rows, key=lambda r: r["instance_id"]):
        for code in list(r.get("sam_flags") or []) + list(r.get("category_flags") or []):
            detail = f"instance {r['instance_id']} ({r.get('category_name') or r.get('category')}): "
            out.append(flag(code, INSTANCE_FLAG_SEVERITY.get(code, "warning"), detail + _instance_flag_detail(code, r)))
    return out


def check_answer(text: str | None, tier: str) -> list[dict[str, str]]:
    """Flags any answer can earn: empty, refusal, length."""
    if text is None or not text.strip():
        return [flag("empty_response", "error", f"{tier} answer is empty")]
    flags = []
    if REFUSAL_RE.search(text):
        flags.append(flag("refusal", "error", f"{tier} answer reads as a refusal: {text[:80]!r}"))
    n = len(text.split())
    lo, hi = LENGTH_BOUNDS.get(tier, (1, 200))
    if not lo <= n <= hi:
        flags.append(flag("length_out_of_bounds", "warning", f"{tier} answer has {n} words (bounds {lo}–{hi})"))
    return flags


def check_mark_leak(text: str, mark: int) -> list[dict[str, str]]:
    pattern = rf"(\b(mark(ed)?|label(l)?ed|number(ed)?|no\.?|tag(ged)?)\s*(with\s*)?(the\s*)?(number\s*)?#?\s*{mark}\b)|(#\s*{mark}\b)"
    if re.search(pattern, text, re.IGNORECASE):
        return [flag("mark_leak", "warning", f"answer mentions mark number {mark}")]
    return []


def check_category(text: str, category: str, known: list[str]) -> list[dict[str, str]]:
    if vocab.find_mention(text, category):
        return []
    others = vocab.other_categories_named(text, category, known)
    if others:
        return [flag("wrong_category", "error", f"describes {', '.join(others)} but the object is a {category}")]
    return []


def check_position(text: str, position: str) -> list[dict[str, str]]:
    """Opposite sides only: an object in the left column described as on the right, and so on."""
    prior = {SIDES[w] for w in position.split() if w in SIDES}
    # Idioms and orientation wording ("right next to", "left behind", "rising to the right") are no position.
    text = vocab.strip_non_positions(text)
    said = {SIDES[w.lower()] for w in re.findall(r"\b(left|right|top|upper|bottom|lower)\b", text, re.IGNORECASE)}
    clashes = [s for s in said if (s[0] + ("+" if s[1] == "-" else "-")) in prior and s not in prior]
    if clashes:
        words = {"h-": "left", "h+": "right", "v-": "top", "v+": "bottom"}
        return [flag("position_contradiction", "warning", f"says {', '.join(words[c] for c in sorted(clashes))} but the object is at the {position}")]
    return []


def check_repeats(sentences: list[str]) -> list[list[dict[str, str]]]:
    """Per sentence: a flag when it repeats an earlier sentence of the tile (case, spacing and
    punctuation aside; a similarity ratio ≥ ``REPEAT_RATIO``)."""
    out: list[list[dict[str, str]]] = []
    norm = [" ".join(re.sub(r"[^\w\s]", " ", s.lower()).split()) for s in sentences]
    for i, s in enumerate(norm):
        hit = next((j for j in range(i) if s == norm[j] or _similar(s, norm[j])), None)
        out.append([flag("repeated_sentence", "warning", f"repeats sentence {hit + 1} of the tile")] if hit is not None else [])
    return out


def _similar(a: str, b: str) -> bool:
    """difflib's ratio of ``a`` and ``b`` ≥ ``REPEAT_RATIO``, computed only when its cheap upper bounds
    (the lengths', then the character multisets') allow it: the same answer, a fraction of the work on a
    tile with a hundred sentences."""
    if not a and not b:
        return True
    if 2.0 * min(len(a), len(b)) / (len(a) + len(b)) < REPEAT_RATIO:
        return False
    m = difflib.SequenceMatcher(None, a, b)
    return m.quick_ratio() >= REPEAT_RATIO and m.ratio() >= REPEAT_RATIO


def check_markup(gcg_caption: str, n_masks: int) -> list[dict[str, str]]:
    """Well-formed ``<p> phrase </p> [SEG]`` groups, nothing stray, one mask per ``[SEG]``
    (:func:`pipeline.gcg.markup_problems`)."""
    return gcg.markup_problems(gcg_caption, n_masks)


def summarize_flags(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        for f in r["flags"]:
            counts[f["code"]] = counts.get(f["code"], 0) + 1
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------------------------------------
# Checks against what was measured
# --------------------------------------------------------------------------------------------------------

#: Objects with a smaller elongation (length / width) have no orientation worth checking.
ORIENTED_MIN_ELONGATION = 1.5
#: A stated length fits a measured one when their ratio is at most this (either way) ...
METRES_RATIO = 1.6
#: ... or when they differ by at most this many metres (small objects).
METRES_ABS = 1.0
#: A colour word is borne out when its family covers at least this share of the object's mask pixels
#: (of a group's: ``COLOUR_MIN_SHARE_GROUP``).
COLOUR_MIN_SHARE = 0.08
COLOUR_MIN_SHARE_GROUP = 0.03
#: Second opinions agreeing less than this are flagged, as are contradicted facets (:mod:`pipeline.agreement`).
AGREEMENT_MIN = 0.6
#: Categories whose footprint is round (no orientation).
ROUND_CATEGORIES = frozenset({"storage tank", "roundabout"})

MEASURED_SEVERITY = {
    "count_mismatch": "error",
    "absent_category": "error",
    "plural_mismatch": "warning",
    "orientation_contradiction": "warning",
    "size_contradiction": "warning",
    "metres_contradiction": "warning",
    "colour_contradiction": "warning",
    "second_opinion_disagreement": "warning",
}

_STOP = frozenset(["of", "with", "in", "on", "at", "near", "next", "to", "by", "beside", "behind", "from", "among", "between", "into", "onto"])
_SOFT = frozenset({"dark", "light", "pale", "bright", "deep", "dull"})
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
_COUNT_ALTS = "|".join(sorted((re.escape(k).replace(r"\ ", r"\s+") for k in vocab.COUNT_PHRASES), key=len, reverse=True))
_NUMBER_ALTS = r"\d+|" + "|".join(sorted(vocab.NUMBER_VALUES, key=len, reverse=True))
_COLOUR_ALTS = "|".join(sorted(vocab.COLOUR_WORDS, key=len, reverse=True))
_COLOUR_LIST = rf"(?:(?:{'|'.join(_SOFT)})[\s-]+)?(?:{_COLOUR_ALTS})"
_COLOUR_STATED = re.compile(
    rf"\b(?:mostly|mainly|predominantly|largely|primarily|chiefly|painted|coloured|colored|all|entirely|"
    rf"(?:is|are|appears?|looks?|seems?)(?:\s+(?:mostly|mainly|predominantly|largely|primarily|all|entirely))?)"
    rf"\s+({_COLOUR_LIST}(?:(?:\s*,\s*|\s+and\s+|\s+or\s+|\s*/\s*){_COLOUR_LIST})*)\b"
    rf"|\b({_COLOUR_LIST}(?:(?:\s*,\s*|\s+and\s+){_COLOUR_LIST})*)\s+in\s+colou?r\b",
    re.IGNORECASE,
)
_ORIENTATION = re.compile("|".join(f"(?P<o{k}>\\b(?:{p})\\b)" for k, p in enumerate(vocab.ORIENTATION_PHRASES)),
                          re.IGNORECASE)
_ORIENTATION_RANGES = list(vocab.ORIENTATION_PHRASES.values())
_METRES = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:(?:m|meters?|metres?)\s*)?(?:by|x|×)\s*(?=\d+(?:\.\d+)?\s*-?\s*(?:m|meters?|metres?)\b)"
    r"|(?<![\w.])(\d+(?:\.\d+)?)\s*-?\s*(?:m|meters?|metres?)\b(?!\s*(?:²|2\b|squared|per\b|/))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Measured:
    """What was measured about the subject of one answer (what :func:`check_measured` compares words with).

    Attributes:
        kind: ``instance`` (one object), ``cluster`` (a group) or ``holistic`` (the whole tile).
        category: readable category of the subject ("" for holistic).
        count: objects in the subject (1 for an instance).
        size_class: ``small``/``medium``/``large`` (instances.parquet), None when unknown.
        length_m, width_m: measured sides of the rotated rectangle in metres (None without a GSD).
        orientation_deg: long-axis angle in degrees, [0, 180), counter-clockwise from the image x axis.
        elongation: length / width.
        colours: measured colour names of the mask's pixels with their shares, most frequent first
            (:func:`pipeline.colour.colour_shares`); empty when not measured.
        tile_counts: objects per readable category in the whole tile.
        labels: the label set (readable categories the dataset knows).
    """

    kind: str
    category: str = ""
    count: int = 1
    size_class: str | None = None
    length_m: float | None = None
    width_m: float | None = None
    orientation_deg: float | None = None
    elongation: float | None = None
    colours: tuple[tuple[str, float], ...] = ()
    tile_counts: tuple[tuple[str, int], ...] = ()
    labels: frozenset[str] = field(default_factory=frozenset)

    @property
    def tile_categories(self) -> frozenset[str]:
        return frozenset(c for c, _ in self.tile_counts)


def _mflag(code: str, detail: str) -> dict[str, str]:
    return flag(code, MEASURED_SEVERITY[code], detail)


def _words_before(text: str, at: int, n: int = 3) -> list[str]:
    """Up to ``n`` words right before character ``at``, within its clause (stops at punctuation and at
    prepositions that start another object's phrase)."""
    clause = re.split(r"[.;:,!?()]", text[:at])[-1]
    words = [w.lower() for w in _WORD.findall(clause)]
    out: list[str] = []
    for w in reversed(words):
        if w in _STOP or len(out) == n:
            break
        out.append(w)
    return out[::-1]


def _range_text(lo: int, hi: int | None) -> str:
    return f"{lo}" if hi == lo else f"{lo}+" if hi is None else f"{lo}–{hi}"


def stated_counts(text: str, category: str, others: frozenset[str] = frozenset()) -> list[tuple[str, int, int | None]]:
    """Count phrases and numbers attached to a mention of ``category`` (at most three words between, none
    of them ``of``/``and``/``with``/…): ``(phrase, low, high)``, ``high`` None for no limit. ``others``:
    categories whose longer terms hide a mention (:func:`pipeline.vocab.own_mentions`)."""
    out: list[tuple[str, int, int | None]] = []
    for start, _, _ in vocab.own_mentions(text, category, others):
        before = text[:start]
        m = re.search(
            rf"\b({_COUNT_ALTS}|{_NUMBER_ALTS})\s+((?:(?!(?:of|and|with|or|in|on|at|to|from|by|near|than|out)\b)"
            rf"[A-Za-z-]+\s+){{0,3}})$",
            before,
            re.IGNORECASE,
        )
        if not m or any(vocab.number_value(w) is not None for w in m.group(2).split()):
            continue
        said = " ".join(m.group(1).lower().split())
        if said in vocab.COUNT_PHRASES:
            lo, hi = vocab.COUNT_PHRASES[said]
        else:
            n = vocab.number_value(said)
            if n is None:
                continue
            lo, hi = n, n
        out.append((said, lo, hi))
    return out


def check_count(text: str, category: str, count: int, others: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """``count_mismatch`` when the answer gives counts for the category and none fits ``count`` (a number may
    be off by 10 % of ``count``, rounded down; a second count may be a subset: "five cars, one car is red")."""
    wrong = []
    for said, lo, hi in stated_counts(text, category, others):
        slack = int(0.1 * count) if lo == hi and said not in vocab.COUNT_PHRASES else 0
        if count < lo - slack or (hi is not None and count > hi + slack):
            wrong.append((said, lo, hi))
        else:
            return []
    if not wrong:
        return []
    said, lo, hi = wrong[0]
    return [_mflag("count_mismatch", f"says {said!r} ({_range_text(lo, hi)}) {category} but counted {count}")]


def check_plural(text: str, category: str, others: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """``plural_mismatch`` when one object is named only in the plural (and never ``one of …``)."""
    mentions = vocab.own_mentions(text, category, others)
    if not mentions or not all(vocab.is_plural_term(t, category) for _, _, t in mentions):
        return []
    if re.search(r"\b(one|each|either|any)\s+of\b", text, re.IGNORECASE):
        return []
    return [_mflag("plural_mismatch", f"names the single {category} in the plural ({mentions[0][2]!r})")]


def check_orientation(text: str, m: Measured) -> list[dict[str, str]]:
    """``orientation_contradiction`` when orientation words are said and none fits the measured angle."""
    if (m.orientation_deg is None or m.elongation is None or m.elongation < ORIENTED_MIN_ELONGATION
            or m.category in ROUND_CATEGORIES):
        return []
    angle = float(m.orientation_deg) % 180.0
    said: list[str] = []
    for hit in _ORIENTATION.finditer(text):
        k = int(next(name for name, v in hit.groupdict().items() if v is not None)[1:])
        if any(lo <= angle <= hi for lo, hi in _ORIENTATION_RANGES[k]):
            return []
        said.append(" ".join(hit.group().lower().split()))
    if not said:
        return []
    return [_mflag("orientation_contradiction",
                   f"says {said[0]!r} but the long axis is at {angle:.0f}° (elongation {m.elongation:.1f})")]


def _object_words(text: str, category: str, others: frozenset[str] = frozenset()) -> list[str]:
    """Words said about the object: the few words before each mention of its category, and what follows
    ``is``/``appears``… (``the plane is small``)."""
    words: list[str] = []
    for start, end, _ in vocab.own_mentions(text, category, others):
        words += _words_before(text, start)
        after = re.match(r"\s+(?:is|appears|looks|seems)\s+(?:quite\s+|very\s+|relatively\s+|rather\s+|fairly\s+)?"
                         r"([A-Za-z]+)", text[end:], re.IGNORECASE)
        if after:
            words.append(after.group(1).lower())
    return words


def check_size(text: str, m: Measured) -> list[dict[str, str]]:
    """``size_contradiction``: a small-like word about a ``large`` object or a large-like one about a
    ``small`` one (words of the category name itself, ``small vehicle``, do not count)."""
    if m.size_class not in ("small", "large"):
        return []
    words = set(_object_words(text, m.category, m.labels | m.tile_categories))
    clash = words & (vocab.SMALL_WORDS if m.size_class == "large" else vocab.LARGE_WORDS)
    if clash:
        return [_mflag("size_contradiction", f"calls the {m.category} {sorted(clash)[0]!r} but its size class "
                                             f"is {m.size_class}")]
    return []


def stated_metres(text: str) -> list[float]:
    """Lengths stated in metres (``24 m``, ``24-metre``, ``24 by 11 m``; not areas or ``m per pixel``)."""
    return [float(a or b) for a, b in _METRES.findall(text)]


def check_metres(text: str, m: Measured) -> list[dict[str, str]]:
    """``metres_contradiction`` when a stated length fits none of the measured length, width or their mean."""
    measured = [x for x in (m.length_m, m.width_m) if x]
    if not measured:
        return []
    if len(measured) == 2:
        measured.append(sum(measured) / 2)
    for v in stated_metres(text):
        if not any(abs(v - d) <= METRES_ABS or (v > 0 and max(v / d, d / v) <= METRES_RATIO) for d in measured):
            sides = " × ".join(f"{x:.1f}" for x in (m.length_m, m.width_m) if x)
            return [_mflag("metres_contradiction", f"says {v:g} m but the {m.category} measures {sides} m")]
    return []


def stated_colours(text: str, category: str, others: frozenset[str] = frozenset()) -> list[str]:
    """Colour words said about the object (before its category's mention, or after ``mostly``, ``is``,
    ``painted``…, or before ``in colour``), ``dark``/``light`` dropped, in order, once each."""
    found: list[str] = []
    for w in _object_words(text, category, others):
        if w in vocab.COLOUR_WORDS:
            found.append(w)
    for hit in _COLOUR_STATED.finditer(text):
        listing = hit.group(1) or hit.group(2) or ""
        found += [w.lower() for w in re.findall(rf"\b({_COLOUR_ALTS})\b", listing, re.IGNORECASE)]
    return list(dict.fromkeys(found))


def check_colour(text: str, m: Measured) -> list[dict[str, str]]:
    """``colour_contradiction`` when a colour word's family covers too little of the mask's pixels."""
    if not m.colours:
        return []
    shares = dict(m.colours)
    floor = COLOUR_MIN_SHARE if m.kind == "instance" else COLOUR_MIN_SHARE_GROUP
    for w in stated_colours(text, m.category, m.labels | m.tile_categories):
        share = sum(shares.get(name, 0.0) for name in vocab.COLOUR_WORDS[w])
        if share < floor:
            top = ", ".join(f"{n} {s:.0%}" for n, s in m.colours[:3])
            return [_mflag("colour_contradiction", f"says {w!r} ({share:.0%} of the mask's pixels) but measured {top}")]
    return []


def check_absent(text: str, m: Measured, skip: frozenset[str] | set[str] = frozenset()) -> list[dict[str, str]]:
    """``absent_category`` for each category of the label set named in ``text`` that occurs nowhere in the
    tile (``skip``: categories another flag already reports, e.g. ``wrong_category``)."""
    if not m.labels:
        return []
    named = vocab.categories_named(text, m.labels, exclude=m.tile_categories)
    return [_mflag("absent_category", f"names {c}, which occurs nowhere in the tile") for c in named if c not in skip]


def check_measured(text: str, m: Measured, skip: frozenset[str] | set[str] = frozenset()) -> list[dict[str, str]]:
    """Every check against measurements that applies to ``m.kind`` (see the module docstring)."""
    out = check_absent(text, m, skip)
    if m.kind == "holistic":
        for category, n in m.tile_counts:
            out += check_count(text, category, n, m.labels | m.tile_categories)
        return out
    if m.kind == "cluster" and m.count > 1:
        out += check_count(text, m.category, m.count, m.labels | m.tile_categories)
    else:
        out += check_plural(text, m.category, m.labels | m.tile_categories)
    if m.kind == "instance":
        out += check_orientation(text, m)
        out += check_size(text, m)
        out += check_metres(text, m)
    out += check_colour(text, m)
    return out


# --------------------------------------------------------------------------------------------------------
# Needs-review score
# --------------------------------------------------------------------------------------------------------

#: Weight of one flag of each severity in :func:`review_score`.
SEVERITY_WEIGHT = {"error": 0.5, "warning": 0.25, "info": 0.05, "none": 0.0}


def review_score(
    flags: list[dict[str, Any]], agreement: float | None = None, weights: dict[str, float] | None = None
) -> float:
    """How much a sample needs review, in [0, 1): ``1 − Π (1 − w)`` over its flags, ``w`` the flag code's
    weight in ``weights`` (e.g. a calibrated reject rate, :mod:`pipeline.calibration`) or else its
    severity's (:data:`SEVERITY_WEIGHT`), times one more factor ``1 − (1 − agreement) / 2`` for the lowest
    second-opinion agreement of its objects (when asked). No flags and full agreement: 0."""
    keep = 1.0
    for f in flags:
        w = (weights or {}).get(f["code"], SEVERITY_WEIGHT.get(f.get("severity") or "none", 0.0))
        keep *= 1.0 - min(max(w, 0.0), 0.99)
    if agreement is not None:
        keep *= 1.0 - (1.0 - min(max(agreement, 0.0), 1.0)) / 2
    return min(round(1.0 - keep, 4), 0.9999)
