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

Flags that prepare leaves on instance records are carried to their tile's sample by
:func:`instance_flags`, one per instance and code, so reviewers see them too: SAM mask quality
(``sam_empty``, ``sam_box_disagreement``, ``sam_low_iou``, ``sam_unstable``; see
:mod:`pipeline.sam.quality`) and LMM naming of automatic masks (``category_unknown``,
``category_invalid``, ``category_failed``; see :mod:`pipeline.sam.naming`), with those modules' severities.
"""

from __future__ import annotations

import difflib
import re
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
    # Orientation wording ("rising to the right") is not a position.
    text = re.sub(r"\b(rising|falling|leaning|pointing|sloping|tilted|tilting)\s+to\s+the\s+(left|right)\b", "", text, flags=re.IGNORECASE)
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
        hit = next((j for j in range(i) if s == norm[j] or difflib.SequenceMatcher(None, s, norm[j]).ratio() >= REPEAT_RATIO), None)
        out.append([flag("repeated_sentence", "warning", f"repeats sentence {hit + 1} of the tile")] if hit is not None else [])
    return out


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
