"""What the exporter does to each sample before any format sees it: quality filters, quote marks, paths.

* :class:`SampleFilter` leaves out samples by their validation flags (``--max-severity``,
  ``--exclude-flags``), for every format at once; each exclusion is counted by reason.
* :func:`unquote` removes a quote mark that opens a caption (and the mark that closes it): GLaMM's loader
  strips ``"`` from both ends of a caption before applying the phrase spans, which would shift every span
  of such a caption by one character.
* :func:`source_root` / :func:`relative_source`: ``source_image`` is written relative to the folder all
  source images share, never as an absolute path of the machine that built the dataset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import Any

from ..gcg import parse

#: Flag severities, least to most severe (``max_severity`` of a sample is the worst of its flags).
SEVERITIES = ("info", "warning", "error")


def parse_codes(text: str | Iterable[str] | None) -> frozenset[str]:
    """Flag codes from ``"a,b c"`` or a list; empty for ``None``."""
    if text is None:
        return frozenset()
    items = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    return frozenset(c.strip() for c in items if c and c.strip())


@dataclass(frozen=True)
class SampleFilter:
    """Which samples an export keeps, by their validation flags.

    Attributes:
        max_severity: keep samples whose worst flag is at most this severity (``info``, ``warning``,
            ``error``); ``None`` keeps every severity.
        exclude_flags: leave out samples carrying any of these flag codes.
    """

    max_severity: str | None = None
    exclude_flags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.max_severity is not None and self.max_severity not in SEVERITIES:
            raise ValueError(f"max severity {self.max_severity!r}: choose from {', '.join(SEVERITIES)}")

    @property
    def active(self) -> bool:
        return self.max_severity is not None or bool(self.exclude_flags)

    def reason(self, sample: dict[str, Any]) -> str | None:
        """Why ``sample`` is left out (``"severity error"``, ``"flag sam_empty"``), ``None`` when kept."""
        flags = sample.get("flags") or []
        if self.exclude_flags:
            for f in flags:
                if f.get("code") in self.exclude_flags:
                    return f"flag {f['code']}"
        if self.max_severity is not None:
            worst = sample.get("max_severity")
            if worst is None and flags:
                worst = max((f.get("severity") for f in flags if f.get("severity") in SEVERITIES),
                            key=SEVERITIES.index, default=None)
            if worst in SEVERITIES and SEVERITIES.index(worst) > SEVERITIES.index(self.max_severity):
                return f"severity {worst}"
        return None


# Opening quote mark → the marks that may close it.
_CLOSERS = {'"': '"', "\u201c": "\u201d\u201c\"", "\u201d": "\u201d", "\u201e": "\u201c\u201d", "\u00ab": "\u00bb",
            "'": "'", "\u2018": "\u2019", "\u2019": "\u2019"}
_LEADING = re.compile(r"^(\s*(?:<p>\s*)?)(\S)")


def _unquote_gcg(gcg: str) -> str | None:
    """``gcg`` without the quote mark that opens it and the one that closes it; ``None`` if it opens with none."""
    m = _LEADING.match(gcg)
    if m is None or m.group(2) not in _CLOSERS:
        return None
    mark, closers = m.group(2), _CLOSERS[m.group(2)]
    rest = gcg[m.end(2):]
    stripped = rest.rstrip()
    if stripped and stripped[-1] in closers:  # the whole caption is quoted
        rest = stripped[:-1]
    elif mark in "\"\u201c\u201e\u00ab":  # a quoted word or phrase at the start: drop its closing mark too
        ends = [i for i in (rest.find(c) for c in closers) if i >= 0]
        if ends:
            i = min(ends)
            rest = rest[:i] + rest[i + 1:]
    return m.group(1) + rest.lstrip()


def unquote(row: dict[str, Any]) -> bool:
    """Rewrite ``row`` (``gcg_caption``, ``caption``, ``phrases`` with spans) so its caption does not start
    with a quote mark; returns whether it changed. Phrase spans and texts are re-derived from the markup
    (:func:`pipeline.gcg.parse`), so they stay exact."""
    changed = False
    for _ in range(3):  # nested marks: ""text"" or “'text'”
        caption = row["caption"] or ""
        if not caption.lstrip()[:1] or caption.lstrip()[0] not in _CLOSERS:
            break
        new_gcg = _unquote_gcg(row["gcg_caption"] or "")
        if new_gcg is None:
            break
        parsed = parse(new_gcg)
        if len(parsed.phrases) != len(row["phrases"]):
            break  # malformed markup: leave the sample as it is
        row["gcg_caption"], row["caption"] = new_gcg, parsed.caption
        row["phrases"] = [{**p, "text": q.text, "start": q.start, "end": q.end}
                          for p, q in zip(row["phrases"], parsed.phrases, strict=True)]
        changed = True
    return changed


def source_root(paths: Iterable[str]) -> str | None:
    """The deepest folder every source image lies in (``None`` for no paths or different drives)."""
    parents = [os.path.dirname(os.path.normpath(p)) or "." for p in paths]
    if not parents:
        return None
    try:
        return os.path.commonpath(parents)
    except ValueError:  # absolute and relative mixed, or different drives
        return None


def relative_source(path: str, root: str | None) -> str:
    """``path`` relative to ``root``, with ``/`` separators; just the file name when it lies elsewhere."""
    norm = os.path.normpath(path)
    if root is not None:
        rel = os.path.relpath(norm, root) if os.path.isabs(norm) == os.path.isabs(root) else None
        if rel is not None and not rel.startswith(".."):
            return PurePath(rel).as_posix()
    return PurePosixPath(PurePath(norm).name).as_posix()


__all__ = ["SEVERITIES", "SampleFilter", "parse_codes", "relative_source", "source_root", "unquote"]
