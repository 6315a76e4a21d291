"""Re-validating a fixed sample; the ``<p> phrase </p> [SEG]`` markup itself is ``pipeline.gcg``'s.

A caption in GCG form interleaves plain text with grounded phrases written ``<p> phrase </p> [SEG]``;
each ``[SEG]`` owns one mask, in order. The plain caption is the same text with ``<p> `` and
`` </p> [SEG]`` removed, and a phrase's ``start``/``end`` are character offsets into that plain caption.

``validate_fixed`` is what the review app runs on every fix before saving it; it returns flags in the
dataset's own shape (``{"code", "severity", "detail"}``) so the pipeline's validator can replace it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from pipeline import gcg
from pipeline.rle import counts_to_runs

OPEN, CLOSE, SEG = gcg.P_OPEN, gcg.P_CLOSE, gcg.SEG

# The markup is parsed by the library's one GCG module; the names are kept for the app's callers.
ParsedPhrase = gcg.Phrase
ParsedCaption = gcg.ParsedCaption


class Flag(TypedDict):
    """A review flag, the same shape as the ``flags`` column of ``samples.parquet``."""

    code: str
    severity: str  # "info" | "warning" | "error"
    detail: str


def _flag(code: str, severity: str, detail: str) -> Flag:
    return Flag(code=code, severity=severity, detail=detail)


def markup_problems(gcg_caption: str, n_masks: int | None = None) -> list[Flag]:
    """Flags for markup that is not a clean sequence of ``<p> text </p> [SEG]`` groups (and, with
    ``n_masks``, a ``[SEG]`` count that differs): ``pipeline.gcg.markup_problems``."""
    return [_flag(f["code"], f["severity"], f["detail"]) for f in gcg.markup_problems(gcg_caption, n_masks)]


def parse_gcg(gcg_caption: str) -> ParsedCaption:
    """Split a GCG caption into plain text and phrase spans, and re-write it in canonical markup
    (``pipeline.gcg.parse``). Whitespace inside the markup is tolerated (``<p>x</p>[SEG]`` reads like
    ``<p> x </p> [SEG]``); malformed markup stays in the text (``markup_problems`` reports it)."""
    return gcg.parse(gcg_caption)


rle_counts = counts_to_runs  # the library's pure-Python decoder of a compressed ``counts`` string


def _mask_problems(masks: Sequence[Mapping[str, Any]]) -> list[Flag]:
    flags: list[Flag] = []
    sizes: set[tuple[int, int]] = set()
    seen: dict[str, int] = {}
    for index, mask in enumerate(masks):
        size, counts = mask.get("size"), mask.get("counts")
        if not isinstance(counts, str) or size is None or len(size) != 2 or min(int(v) for v in size) <= 0:
            flags.append(_flag("mask_invalid", "error", f"mask {index} is not a COCO compressed RLE"))
            continue
        height, width = int(size[0]), int(size[1])
        sizes.add((height, width))
        try:
            runs = rle_counts(counts)
        except ValueError as exc:
            flags.append(_flag("mask_invalid", "error", f"mask {index}: {exc}"))
            continue
        if any(r < 0 for r in runs) or sum(runs) != height * width:
            flags.append(_flag("mask_invalid", "error", f"mask {index}: runs do not cover {height}x{width}"))
            continue
        if sum(runs[1::2]) == 0:
            flags.append(_flag("mask_empty", "warning", f"mask {index} has no pixels"))
        if counts in seen:
            flags.append(_flag("mask_duplicate", "warning", f"mask {index} repeats mask {seen[counts]}"))
        seen.setdefault(counts, index)
    if len(sizes) > 1:
        flags.append(_flag("mask_size_mismatch", "error", f"masks have different sizes {sorted(sizes)}"))
    return flags


def _span_problems(parsed: ParsedCaption, phrases: Sequence[Mapping[str, Any]]) -> list[Flag]:
    if len(phrases) != len(parsed.phrases):
        detail = f"{len(phrases)} phrases given, the caption has {len(parsed.phrases)}"
        return [_flag("phrase_count_mismatch", "error", detail)]
    flags: list[Flag] = []
    for index, (given, expected) in enumerate(zip(phrases, parsed.phrases, strict=True)):
        text, start, end = given.get("text"), given.get("start"), given.get("end")
        if (text, start, end) != (expected.text, expected.start, expected.end):
            detail = (
                f"phrase {index} {text!r} [{start}, {end}) does not match the caption "
                f"({expected.text!r} [{expected.start}, {expected.end}))"
            )
            flags.append(_flag("phrase_span_mismatch", "error", detail))
    return flags


def validate_fixed(
    gcg_caption: str,
    masks: Sequence[Mapping[str, Any]],
    phrases: Sequence[Mapping[str, Any]] | None = None,
) -> list[Flag]:
    """Re-validate a fixed sample; an empty list means it is clean.

    Checks: the markup is well-formed; every phrase has text; the number of ``[SEG]`` equals the number
    of masks; masks are valid COCO RLEs of one size (empty or repeated masks are warnings); and, when
    ``phrases`` (dicts with ``text``, ``start``, ``end``) are given, their spans match the plain caption.

    Args:
        gcg_caption: caption with ``<p> phrase </p> [SEG]`` markup.
        masks: one ``{"size": [h, w], "counts": str}`` per ``[SEG]``, in order.
        phrases: optional phrase records to check against the caption.

    Returns:
        Flags ``{"code", "severity", "detail"}``; severity ``error`` means the fix must not be saved.
    """
    flags = markup_problems(gcg_caption, n_masks=len(masks))
    flags.extend(_mask_problems(masks))
    if phrases is not None and not any(f["severity"] == "error" for f in flags):
        flags.extend(_span_problems(parse_gcg(gcg_caption), phrases))
    return flags


def has_errors(flags: Sequence[Flag]) -> bool:
    """True when any flag is an error (the fix is refused)."""
    return any(flag["severity"] == "error" for flag in flags)
