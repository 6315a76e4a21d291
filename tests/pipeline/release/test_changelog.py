"""Changelog diffs, the SemVer rule and refused bumps (pipeline/release/changelog.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.release import BumpTooSmallError, InvalidSpecError, publish
from pipeline.release.changelog import Bump, ReleaseDiff, Version, diff_indexes, prepend_entry
from pipeline.release.checksums import row_hashes


def _index(rows: list[tuple[str, str, str]]) -> pa.Table:
    ids, splits, hashes = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {
            "id": pa.array(list(ids), pa.string()),
            "split": pa.array(list(splits), pa.string()),
            "content_sha256": pa.array(list(hashes), pa.string()),
        }
    )


COLUMNS = {"id": "string", "caption": "string"}


def _diff(
    old: list[tuple[str, str, str]], new: list[tuple[str, str, str]], **kwargs: dict[str, str]
) -> ReleaseDiff:
    return diff_indexes(
        _index(old),
        _index(new),
        previous_columns=kwargs.get("previous_columns", COLUMNS),
        current_columns=kwargs.get("current_columns", COLUMNS),
        previous_files=kwargs.get("previous_files", {}),
        current_files=kwargs.get("current_files", {}),
    )


# -- versions ------------------------------------------------------------------------------------------


def test_version_parse_order_and_bumps() -> None:
    assert Version.parse("1.10.0") > Version.parse("1.9.3")
    assert str(Version.parse(" 2.0.1 ")) == "2.0.1"
    assert Version.parse("2.0.0").bump_from(Version.parse("1.9.9")) is Bump.MAJOR
    assert Version.parse("1.3.0").bump_from(Version.parse("1.2.7")) is Bump.MINOR
    assert Version.parse("1.2.8").bump_from(Version.parse("1.2.7")) is Bump.PATCH
    assert Version.parse("1.2.3").bumped(Bump.MINOR) == Version(1, 3, 0)


@pytest.mark.parametrize("text", ["1.0", "v1.0.0", "1.0.0-rc1", "01.0.0", "", "latest"])
def test_invalid_versions_are_rejected(text: str) -> None:
    with pytest.raises(InvalidSpecError, match="MAJOR.MINOR.PATCH"):
        Version.parse(text)


def test_version_must_increase() -> None:
    with pytest.raises(BumpTooSmallError, match="not greater than the latest published version 1.2.0"):
        Version.parse("1.2.0").bump_from(Version.parse("1.2.0"))


# -- row hashes ----------------------------------------------------------------------------------------


def test_row_hash_ignores_id_and_column_order_but_sees_every_value() -> None:
    a = pa.table({"id": ["x", "y"], "caption": ["boats", "cars"], "masks": [["m1"], ["m2"]]})
    reordered = pa.table({"masks": [["m1"], ["m2"]], "caption": ["boats", "cars"], "id": ["other", "ids"]})
    assert row_hashes(a) == row_hashes(reordered)
    fixed = pa.table({"id": ["x", "y"], "caption": ["boats", "cars!"], "masks": [["m1"], ["m2"]]})
    assert row_hashes(fixed)[0] == row_hashes(a)[0]
    assert row_hashes(fixed)[1] != row_hashes(a)[1]
    # Values that print alike must still hash apart.
    tricky = pa.table({"id": ["a", "b", "c"], "v": [None, "", "None"]})
    assert len(set(row_hashes(tricky))) == 3
    nested = pa.table({"id": ["a", "b"], "v": [["ab", "c"], ["a", "bc"]]})
    assert len(set(row_hashes(nested))) == 2


# -- the SemVer rule -----------------------------------------------------------------------------------


def test_added_samples_need_minor() -> None:
    diff = _diff([("a", "train", "h1")], [("a", "train", "h1"), ("b", "val", "h2")])
    assert diff.added == ["b"] and not diff.removed and not diff.changed and diff.unchanged == 1
    assert diff.split_counts == {"train": (1, 1), "val": (0, 1)}
    bump, reasons = diff.required_bump()
    assert bump is Bump.MINOR and reasons == ["1 sample(s) added"]


def test_changed_or_moved_samples_need_minor() -> None:
    diff = _diff([("a", "train", "h1"), ("b", "train", "h2")], [("a", "train", "h1*"), ("b", "val", "h2")])
    assert diff.changed == ["a", "b"]
    assert diff.moved == {"b": ("train", "val")}
    assert diff.required_bump() == (Bump.MINOR, ["2 sample(s) changed"])


def test_removed_samples_need_major() -> None:
    diff = _diff([("a", "train", "h1"), ("b", "train", "h2")], [("a", "train", "h1"), ("c", "train", "h3")])
    assert diff.removed == ["b"] and diff.added == ["c"]
    bump, reasons = diff.required_bump()
    assert bump is Bump.MAJOR and reasons == ["1 sample(s) removed"]


def test_schema_changes() -> None:
    rows = [("a", "train", "h1")]
    added = _diff(rows, rows, current_columns={**COLUMNS, "score": "double"})
    assert added.required_bump() == (Bump.MINOR, ["column(s) added: score"])
    removed = _diff(rows, rows, current_columns={"id": "string"})
    assert removed.required_bump() == (Bump.MAJOR, ["column(s) removed: caption"])
    retyped = _diff(rows, rows, current_columns={"id": "string", "caption": "large_string"})
    assert retyped.required_bump() == (Bump.MAJOR, ["column type(s) changed: caption string -> large_string"])


def test_metadata_only_changes_need_patch() -> None:
    rows = [("a", "train", "h1")]
    diff = _diff(
        rows, rows, previous_files={"README.md": "x"}, current_files={"README.md": "y", "glamm/a.json": "z"}
    )
    assert diff.files_changed == ["README.md"] and diff.files_added == ["glamm/a.json"]
    assert diff.required_bump() == (
        Bump.PATCH,
        ["no sample changed; 2 metadata/documentation file(s) changed"],
    )
    assert _diff(rows, rows).required_bump() == (Bump.PATCH, ["no sample or file changed"])


def test_prepend_entry_keeps_history_newest_first() -> None:
    first = prepend_entry("## 1.0.0 - 2025-01-01\n\nInitial release.\n", None)
    second = prepend_entry("## 1.1.0 - 2025-02-01\n\nMore.\n", first)
    assert second.startswith("# Changelog\n\n## 1.1.0")
    assert second.count("# Changelog") == 1
    assert second.index("## 1.1.0") < second.index("## 1.0.0")


# -- through publish -----------------------------------------------------------------------------------


def _changelog(store: Path, version: str) -> str:
    return (store / "tiny" / version / "CHANGELOG.md").read_text()


def test_publish_sequence_enforces_the_rule(make_export, make_rows, store_dir: Path) -> None:
    base = {"train": make_rows(6), "val": make_rows(2, "val", start=100)}
    first = publish(make_export("v1", base), "tiny", "0.3.0", store_dir)
    assert first.previous is None and "Initial release." in first.entry

    # Added samples: PATCH refused (MINOR needed), MINOR accepted.
    grown = {"train": make_rows(8), "val": base["val"]}
    grown_export = make_export("v2", grown)
    with pytest.raises(BumpTooSmallError) as refused:
        publish(grown_export, "tiny", "0.3.1", store_dir)
    message = str(refused.value)
    assert "PATCH bump over 0.3.0" in message and "MINOR bump (at least 0.4.0)" in message
    assert "2 sample(s) added" in message
    assert not (store_dir / "tiny" / "0.3.1").exists()
    second = publish(grown_export, "tiny", "0.4.0", store_dir)
    assert second.bump == "MINOR" and second.previous == "0.3.0"
    entry = _changelog(store_dir, "0.4.0")
    assert "(+2 added, -0 removed, 0 changed, 8 unchanged)" in entry
    assert "`tile_0006-s0`, `tile_0007-s0`" in entry
    assert entry.index("## 0.4.0") < entry.index("## 0.3.0")

    # A corrected caption: PATCH refused, MINOR accepted.
    fixed_rows = [dict(r) for r in grown["train"]]
    fixed_rows[3]["caption"] = "Corrected: a harbour with two boats."
    fixed_export = make_export("v3", {"train": fixed_rows, "val": base["val"]})
    with pytest.raises(
        BumpTooSmallError, match=r"need a MINOR bump \(at least 0.5.0\): 1 sample\(s\) changed"
    ):
        publish(fixed_export, "tiny", "0.4.1", store_dir)
    publish(fixed_export, "tiny", "0.5.0", store_dir)
    assert "- Changed ids: `tile_0003-s0`" in _changelog(store_dir, "0.5.0")

    # Removed samples: MINOR refused (MAJOR needed), MAJOR accepted.
    shrunk_export = make_export("v4", {"train": fixed_rows[:5], "val": base["val"]})
    with pytest.raises(BumpTooSmallError, match=r"MAJOR bump \(at least 1.0.0\): 3 sample\(s\) removed"):
        publish(shrunk_export, "tiny", "0.6.0", store_dir)
    third = publish(shrunk_export, "tiny", "1.0.0", store_dir)
    assert third.bump == "MAJOR"
    assert "-3 removed" in _changelog(store_dir, "1.0.0")

    # Only the dataset card changed: PATCH is enough; a bigger bump is allowed too.
    card_export = make_export(
        "v5", {"train": fixed_rows[:5], "val": base["val"]}, card="# Tiny\n\nBetter docs.\n"
    )
    patch = publish(card_export, "tiny", "1.0.1", store_dir)
    assert patch.bump == "PATCH"
    assert "Files changed: `README.md`" in _changelog(store_dir, "1.0.1")
    history = _changelog(store_dir, "1.0.1")
    assert [line.split(" - ")[0] for line in history.splitlines() if line.startswith("## ")] == [
        "## 1.0.1",
        "## 1.0.0",
        "## 0.5.0",
        "## 0.4.0",
        "## 0.3.0",
    ]

    # Not newer than the latest: refused, whatever the diff.
    with pytest.raises(
        BumpTooSmallError, match="0.9.0 is not greater than the latest published version 1.0.1"
    ):
        publish(card_export, "tiny", "0.9.0", store_dir)


def test_removed_column_needs_major(
    make_export, make_rows, sample_schema: pa.Schema, store_dir: Path
) -> None:
    rows = make_rows(3)
    publish(make_export("a", {"train": rows}), "tiny", "1.0.0", store_dir)
    slim_rows = [{k: v for k, v in r.items() if k != "flags"} for r in rows]
    slim_schema = sample_schema.remove(sample_schema.get_field_index("flags"))
    slim = make_export("b", {"train": slim_rows}, schema=slim_schema)
    with pytest.raises(BumpTooSmallError, match=r"MAJOR bump \(at least 2.0.0\): column\(s\) removed: flags"):
        publish(slim, "tiny", "1.1.0", store_dir)
    publish(slim, "tiny", "2.0.0", store_dir)
    assert "- Schema: removed flags" in _changelog(store_dir, "2.0.0")


def test_dry_run_writes_nothing(make_export, make_rows, store_dir: Path) -> None:
    export = make_export("a", {"train": make_rows(3)})
    publish(export, "tiny", "1.0.0", store_dir)
    grown = make_export("b", {"train": make_rows(4)})
    result = publish(grown, "tiny", "1.1.0", store_dir, dry_run=True)
    assert not result.committed and result.bump == "MINOR" and "+1 added" in result.entry
    assert sorted(p.name for p in (store_dir / "tiny").iterdir()) == ["1.0.0"]
