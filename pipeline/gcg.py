"""The GCG caption markup, in one place: ``<p> phrase </p> [SEG]``.

A grounded caption interleaves plain text with grounded phrases written ``<p> phrase </p> [SEG]``; each
``[SEG]`` owns one mask, in order. The *plain caption* is the same text with the markup removed (the
phrase's words stay), and a phrase's ``start``/``end`` are character offsets into that plain caption (what
GLaMM calls ``token_positives``).

Everything that reads, writes or checks this markup uses this module: the describe stage (assembling
captions), the quality checks (:mod:`pipeline.validate`), the review app (fixes typed by annotators), the
exporters and the trainer/evaluator (:mod:`geopixel`). One parser, one canonical rendering, one set of error
codes:

==========================  ========  ==========================================================
code                        severity  when
==========================  ========  ==========================================================
``markup_nested``           error     ``<p>`` inside another phrase
``markup_stray_close``      error     ``</p>`` without an opening ``<p>``
``markup_missing_seg``      error     ``</p>`` not followed by ``[SEG]``
``markup_orphan_seg``       error     ``[SEG]`` without a phrase right before it
``markup_unclosed``         error     ``<p>`` never closed
``phrase_empty``            error     ``<p> </p> [SEG]`` with no words
``seg_mask_count_mismatch`` error     number of ``[SEG]`` ≠ number of masks
``markup_unexpected_tag``   warning   another HTML-looking tag in the text
==========================  ========  ==========================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

P_OPEN, P_CLOSE, SEG = "<p>", "</p>", "[SEG]"
#: One grounded phrase; whitespace inside the markup is tolerated (GeoPixel's inference regex, anchored on
#: the opening tag). Group 1 is the phrase text, stripped.
PHRASE_RE = re.compile(r"<p>\s*(.*?)\s*</p>\s*\[SEG\]", re.S)
_TOKEN = re.compile(r"<p>|</p>|\[SEG\]")
_PHRASE_BEFORE = re.compile(r"<p>\s*(.*?)\s*</p>\s*$", re.S)
# Any other HTML-looking tag: LMM output sometimes carries them; they are text, but worth a look.
_OTHER_TAG = re.compile(r"</?(?!p>)[A-Za-z][^<>]*>")

#: Severity of each markup code (see the module docstring).
MARKUP_SEVERITY = {
    "markup_nested": "error",
    "markup_stray_close": "error",
    "markup_missing_seg": "error",
    "markup_orphan_seg": "error",
    "markup_unclosed": "error",
    "phrase_empty": "error",
    "seg_mask_count_mismatch": "error",
    "markup_unexpected_tag": "warning",
}


@dataclass(frozen=True)
class Phrase:
    """A grounded phrase: its text and ``[start, end)`` character span in the plain caption."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class ParsedCaption:
    """A GCG caption split into its plain text and phrases.

    Attributes:
        gcg_caption: the caption re-written in canonical markup (``<p> text </p> [SEG]``).
        caption: the plain text (markup removed, phrase words kept).
        phrases: grounded phrases in ``[SEG]`` order.
    """

    gcg_caption: str
    caption: str
    phrases: tuple[Phrase, ...]

    @property
    def spans(self) -> list[tuple[str, int, int]]:
        """``(text, start, end)`` per phrase."""
        return [(p.text, p.start, p.end) for p in self.phrases]


def render_phrase(text: str) -> str:
    """``render_phrase("plane-1") == "<p> plane-1 </p> [SEG]"`` (the canonical form)."""
    return f"{P_OPEN} {text} {P_CLOSE} {SEG}"


def parse(gcg_caption: str) -> ParsedCaption:
    """Split a GCG caption into plain text and phrase spans, and re-write it in canonical markup.

    Malformed markup is not an error here: it stays in the text (:func:`markup_problems` reports it).
    """
    caption_parts: list[str] = []
    gcg_parts: list[str] = []
    phrases: list[Phrase] = []
    length = 0
    cursor = 0
    for match in PHRASE_RE.finditer(gcg_caption):
        before = gcg_caption[cursor : match.start()]
        caption_parts.append(before)
        gcg_parts.append(before)
        length += len(before)
        text = match.group(1)
        phrases.append(Phrase(text, length, length + len(text)))
        caption_parts.append(text)
        gcg_parts.append(render_phrase(text))
        length += len(text)
        cursor = match.end()
    caption_parts.append(gcg_caption[cursor:])
    gcg_parts.append(gcg_caption[cursor:])
    return ParsedCaption("".join(gcg_parts), "".join(caption_parts), tuple(phrases))


def phrase_texts(gcg_caption: str) -> list[str]:
    """The phrases of a caption in ``[SEG]`` order."""
    return [m.group(1) for m in PHRASE_RE.finditer(gcg_caption)]


def seg_phrases(text: str) -> list[str]:
    """The phrase of every ``[SEG]`` of a (possibly malformed, generated) caption, in order; ``""`` when no
    ``<p> … </p>`` stands right before that ``[SEG]``."""
    out = []
    for m in re.finditer(re.escape(SEG), text):
        before = _PHRASE_BEFORE.search(text[: m.start()])
        out.append(before.group(1) if before else "")
    return out


def count_seg(gcg_caption: str) -> int:
    """Number of ``[SEG]`` tokens (= masks a well-formed sample carries)."""
    return gcg_caption.count(SEG)


def strip_markup(text: str) -> str:
    """Remove every ``<p>``, ``</p>`` and ``[SEG]`` from untrusted text (an LMM answer) so it cannot break a
    caption's structure; whitespace is collapsed."""
    text = re.sub(r"</?p>", " ", text).replace(SEG, " ")
    return " ".join(text.split())


def plain_text(text: str) -> str:
    """The caption without markup for caption metrics: tags and ``[SEG]`` removed, whitespace collapsed and
    no space before punctuation (``tennis court-1 , and`` → ``tennis court-1, and``)."""
    text = re.sub(r"\s+", " ", _TOKEN.sub(" ", text)).strip()
    return re.sub(r"\s+([,.;:!?])", r"\1", text)


def markup_problems(gcg_caption: str, n_masks: int | None = None) -> list[dict[str, str]]:
    """Flags (``{"code", "severity", "detail"}``) for markup that is not a clean sequence of
    ``<p> text </p> [SEG]`` groups, and, when ``n_masks`` is given, for a ``[SEG]`` count that differs."""
    found: list[tuple[str, str]] = []
    state = "text"  # "text" | "phrase" (after <p>) | "closed" (after </p>, waiting for [SEG])
    phrase_start = 0
    last_end = 0
    for match in _TOKEN.finditer(gcg_caption):
        token, at = match.group(), match.start()
        if state == "closed" and gcg_caption[last_end:at].strip():
            found.append(("markup_missing_seg", f"'</p>' at {last_end} is not followed by [SEG]"))
            state = "text"
        if token == P_OPEN:
            if state == "phrase":
                found.append(("markup_nested", f"'<p>' at {at} inside another phrase"))
            elif state == "closed":
                found.append(("markup_missing_seg", f"'</p>' before {at} is not followed by [SEG]"))
            state, phrase_start = "phrase", match.end()
        elif token == P_CLOSE:
            if state != "phrase":
                found.append(("markup_stray_close", f"'</p>' at {at} without an opening '<p>'"))
                state = "text"
            else:
                if not gcg_caption[phrase_start:at].strip():
                    found.append(("phrase_empty", f"empty phrase at {phrase_start}"))
                state = "closed"
        else:  # [SEG]
            if state == "closed":
                state = "text"
            else:
                where = "inside a phrase" if state == "phrase" else "without a phrase"
                found.append(("markup_orphan_seg", f"[SEG] at {at} {where}"))
        last_end = match.end()
    if state == "phrase":
        found.append(("markup_unclosed", f"'<p>' before {phrase_start} is never closed"))
    elif state == "closed":
        found.append(("markup_missing_seg", "the last phrase is not followed by [SEG]"))
    for match in _OTHER_TAG.finditer(gcg_caption):
        found.append(("markup_unexpected_tag", f"unexpected tag {match.group()[:40]!r}"))
    if n_masks is not None and count_seg(gcg_caption) != n_masks:
        found.append(("seg_mask_count_mismatch", f"{count_seg(gcg_caption)} [SEG] tokens but {n_masks} masks"))
    return [{"code": c, "severity": MARKUP_SEVERITY[c], "detail": d} for c, d in found]


__all__ = [
    "MARKUP_SEVERITY",
    "PHRASE_RE",
    "P_CLOSE",
    "P_OPEN",
    "SEG",
    "ParsedCaption",
    "Phrase",
    "count_seg",
    "markup_problems",
    "parse",
    "phrase_texts",
    "plain_text",
    "render_phrase",
    "seg_phrases",
    "strip_markup",
]
