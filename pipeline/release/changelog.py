"""Release diffs, the SemVer rule they imply, and CHANGELOG entries.

Two releases of one dataset name are compared sample by sample: samples are keyed by the parquet ``id``
column and each sample carries a *content hash*, the sha256 of every other column of its row (see
:func:`pipeline.release.checksums.row_hashes`) together with the split it belongs to. Files that are not
sample parquet shards (the dataset card, ``export.json``, COCO / GeoPixel / GLaMM side files) are compared
by their sha256.

The SemVer rule (Croissant's reading of ``version``: MAJOR.MINOR.PATCH), applied to the diff against the
latest published version of the same name:

* **MAJOR** – a change that can break a consumer: at least one sample ``id`` was *removed* (this includes
  a whole split disappearing), or the sample schema lost a column, or a column changed its Arrow type.
* **MINOR** – a backwards-compatible change to the samples: at least one sample was *added*, or an existing
  sample's content changed (a corrected caption or mask, a new review status, a move to another split),
  or a column was added to the schema.
* **PATCH** – no sample was added, removed or changed and the schema is unchanged: only metadata or
  documentation changed (dataset card, ``export.json``, side files), or nothing changed at all.

The requested version must be strictly greater than the latest published version, and its bump (the
highest component that increased) must be at least the required one; a larger bump is always allowed.
The first version of a name may be any version and gets an "initial release" entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import pyarrow as pa

from pipeline.release.errors import BumpTooSmallError, InvalidSpecError

_VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")

#: How many sample ids of each kind (added / removed / changed) a changelog entry spells out.
MAX_LISTED_IDS = 20


class Bump(IntEnum):
    """Size of a SemVer step, ordered so that ``Bump.MAJOR > Bump.MINOR > Bump.PATCH``."""

    PATCH = 1
    MINOR = 2
    MAJOR = 3


@dataclass(frozen=True, order=True)
class Version:
    """A strict ``MAJOR.MINOR.PATCH`` version (no pre-release or build suffix)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``"X.Y.Z"``; raise :class:`InvalidSpecError` for anything else (``"v1.0"``, ``"1.0"``...)."""
        match = _VERSION_RE.match(text.strip())
        if match is None:
            raise InvalidSpecError(f"invalid version {text!r}: expected MAJOR.MINOR.PATCH, e.g. 1.2.0")
        return cls(int(match[1]), int(match[2]), int(match[3]))

    @staticmethod
    def is_valid(text: str) -> bool:
        """Whether ``text`` is a strict ``X.Y.Z`` version."""
        return _VERSION_RE.match(text) is not None

    def bump_from(self, previous: Version) -> Bump:
        """The bump that leads from ``previous`` to this version; this version must be greater."""
        if self <= previous:
            raise BumpTooSmallError(
                f"version {self} is not greater than the latest published version {previous}"
            )
        if self.major != previous.major:
            return Bump.MAJOR
        if self.minor != previous.minor:
            return Bump.MINOR
        return Bump.PATCH

    def bumped(self, bump: Bump) -> Version:
        """The smallest version that is ``bump`` away from this one (``1.2.3`` MINOR → ``1.3.0``)."""
        if bump is Bump.MAJOR:
            return Version(self.major + 1, 0, 0)
        if bump is Bump.MINOR:
            return Version(self.major, self.minor + 1, 0)
        return Version(self.major, self.minor, self.patch + 1)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class ReleaseDiff:
    """What changed between two releases of one name.

    Attributes:
        added: sample ids present only in the new release, sorted.
        removed: sample ids present only in the previous release, sorted.
        changed: sample ids in both whose content hash or split differs, sorted.
        moved: the subset of ``changed`` whose split differs, as ``{id: (old_split, new_split)}``.
        unchanged: number of samples identical in both.
        columns_added / columns_removed: parquet column names, sorted.
        columns_retyped: ``{column: (old_arrow_type, new_arrow_type)}``.
        split_counts: ``{split: (old_rows, new_rows)}`` over the union of splits.
        files_added / files_removed / files_changed: non-sample files (card, side files), sorted paths.
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    moved: dict[str, tuple[str, str]] = field(default_factory=dict)
    unchanged: int = 0
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    columns_retyped: dict[str, tuple[str, str]] = field(default_factory=dict)
    split_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)

    def required_bump(self) -> tuple[Bump, list[str]]:
        """The smallest bump this diff allows, and the human-readable reasons for it (module rule)."""
        major: list[str] = []
        if self.removed:
            major.append(f"{len(self.removed)} sample(s) removed")
        if self.columns_removed:
            major.append(f"column(s) removed: {', '.join(self.columns_removed)}")
        if self.columns_retyped:
            retyped = ", ".join(f"{c} {a} -> {b}" for c, (a, b) in sorted(self.columns_retyped.items()))
            major.append(f"column type(s) changed: {retyped}")
        if major:
            return Bump.MAJOR, major
        minor: list[str] = []
        if self.added:
            minor.append(f"{len(self.added)} sample(s) added")
        if self.changed:
            minor.append(f"{len(self.changed)} sample(s) changed")
        if self.columns_added:
            minor.append(f"column(s) added: {', '.join(self.columns_added)}")
        if minor:
            return Bump.MINOR, minor
        touched = len(self.files_added) + len(self.files_removed) + len(self.files_changed)
        if touched:
            return Bump.PATCH, [f"no sample changed; {touched} metadata/documentation file(s) changed"]
        return Bump.PATCH, ["no sample or file changed"]


def diff_indexes(
    previous: pa.Table,
    current: pa.Table,
    *,
    previous_columns: Mapping[str, str],
    current_columns: Mapping[str, str],
    previous_files: Mapping[str, str],
    current_files: Mapping[str, str],
) -> ReleaseDiff:
    """Diff two releases.

    Args:
        previous / current: sample indexes with string columns ``id``, ``split``, ``content_sha256``
            (``meta/samples.parquet`` of a release, see :func:`pipeline.release.sample_index.build_sample_index`).
        previous_columns / current_columns: parquet schema as ``{column: arrow type string}``.
        previous_files / current_files: ``{relative path: sha256}`` of the non-sample files to compare.
    """
    old = _index_dict(previous)
    new = _index_dict(current)
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    changed: list[str] = []
    moved: dict[str, tuple[str, str]] = {}
    unchanged = 0
    for sample_id in old.keys() & new.keys():
        (old_split, old_hash), (new_split, new_hash) = old[sample_id], new[sample_id]
        if old_split != new_split:
            moved[sample_id] = (old_split, new_split)
        if old_split != new_split or old_hash != new_hash:
            changed.append(sample_id)
        else:
            unchanged += 1
    retyped = {
        name: (previous_columns[name], current_columns[name])
        for name in previous_columns.keys() & current_columns.keys()
        if previous_columns[name] != current_columns[name]
    }
    return ReleaseDiff(
        added=added,
        removed=removed,
        changed=sorted(changed),
        moved=moved,
        unchanged=unchanged,
        columns_added=sorted(current_columns.keys() - previous_columns.keys()),
        columns_removed=sorted(previous_columns.keys() - current_columns.keys()),
        columns_retyped=retyped,
        split_counts=_split_counts(old.values(), new.values()),
        files_added=sorted(current_files.keys() - previous_files.keys()),
        files_removed=sorted(previous_files.keys() - current_files.keys()),
        files_changed=sorted(
            p for p in previous_files.keys() & current_files.keys() if previous_files[p] != current_files[p]
        ),
    )


def check_bump(previous: Version, requested: Version, diff: ReleaseDiff, *, name: str) -> Bump:
    """Refuse ``requested`` if its bump over ``previous`` is smaller than ``diff`` requires.

    Returns the actual bump. Raises :class:`BumpTooSmallError` naming the required bump, the smallest
    acceptable version and the reasons.
    """
    actual = requested.bump_from(previous)
    required, reasons = diff.required_bump()
    if actual < required:
        raise BumpTooSmallError(
            f"{name}=={requested} is a {actual.name} bump over {previous}, but the changes need a "
            f"{required.name} bump (at least {previous.bumped(required)}): {'; '.join(reasons)}"
        )
    return actual


def render_entry(
    *,
    version: Version,
    date: str,
    previous: Version | None,
    diff: ReleaseDiff | None,
    total_samples: int,
    split_counts: Mapping[str, int],
) -> str:
    """One Markdown CHANGELOG entry (``## X.Y.Z - YYYY-MM-DD`` plus bullet points).

    ``previous``/``diff`` are ``None`` for the first release of a name.
    """
    lines = [f"## {version} - {date}", ""]
    if previous is None or diff is None:
        splits = ", ".join(f"{s} {n}" for s, n in sorted(split_counts.items()))
        lines += ["Initial release.", "", f"- Samples: {total_samples} ({splits})", ""]
        return "\n".join(lines)
    actual = version.bump_from(previous)
    required, reasons = diff.required_bump()
    old_total = sum(a for a, _ in diff.split_counts.values())
    lines += [
        f"Compared with {previous}: **{actual.name}** bump "
        f"(required: {required.name}; {'; '.join(reasons)}).",
        "",
        f"- Samples: {old_total} -> {total_samples} (+{len(diff.added)} added, -{len(diff.removed)} removed, "
        f"{len(diff.changed)} changed, {diff.unchanged} unchanged)",
        "- Splits: " + ", ".join(f"{s} {a} -> {b}" for s, (a, b) in sorted(diff.split_counts.items())),
    ]
    schema = []
    if diff.columns_added:
        schema.append("added " + ", ".join(diff.columns_added))
    if diff.columns_removed:
        schema.append("removed " + ", ".join(diff.columns_removed))
    for col, (a, b) in sorted(diff.columns_retyped.items()):
        schema.append(f"{col}: {a} -> {b}")
    lines.append("- Schema: " + ("; ".join(schema) if schema else "unchanged"))
    for label, ids in (("Added", diff.added), ("Removed", diff.removed), ("Changed", diff.changed)):
        if ids:
            lines.append(f"- {label} ids: {_id_list(ids)}")
    if diff.moved:
        moves = [f"{i} ({a} -> {b})" for i, (a, b) in sorted(diff.moved.items())]
        lines.append(f"- Moved between splits: {_id_list(moves)}")
    for label, paths in (
        ("Files added", diff.files_added),
        ("Files removed", diff.files_removed),
        ("Files changed", diff.files_changed),
    ):
        if paths:
            lines.append(f"- {label}: {_id_list(paths)}")
    lines.append("")
    return "\n".join(lines)


def prepend_entry(entry: str, previous_changelog: str | None) -> str:
    """The full ``CHANGELOG.md``: a title, the new entry, then the older entries (newest first)."""
    title = "# Changelog\n\n"
    older = ""
    if previous_changelog:
        older = previous_changelog.removeprefix(title).lstrip("\n")
    return title + entry.rstrip("\n") + "\n" + ("\n" + older if older else "")


def _index_dict(index: pa.Table) -> dict[str, tuple[str, str]]:
    ids = index.column("id").to_pylist()
    splits = index.column("split").to_pylist()
    hashes = index.column("content_sha256").to_pylist()
    return {i: (s, h) for i, s, h in zip(ids, splits, hashes, strict=True)}


def _split_counts(
    old: Iterable[tuple[str, str]], new: Iterable[tuple[str, str]]
) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = {}
    for slot, values in ((0, old), (1, new)):
        for split, _ in values:
            counts.setdefault(split, [0, 0])[slot] += 1
    return {s: (a, b) for s, (a, b) in counts.items()}


def _id_list(ids: list[str]) -> str:
    shown = ", ".join(f"`{i}`" for i in ids[:MAX_LISTED_IDS])
    more = len(ids) - MAX_LISTED_IDS
    return shown + (f" and {more} more" if more > 0 else "")
