"""``manifest.json``: the record of one release, its files and how it is (de)serialised.

The manifest lists every file of the release except itself with sha256, size in bytes, row count (parquet
only) and split (``None`` for files that belong to no split). :func:`build_manifest` assembles it from an
export scan (:mod:`pipeline.release.scan`) and the staged file entries.

Related modules: :mod:`~pipeline.release.layout` (shard names, generated paths),
:mod:`~pipeline.release.checksums` (file and row hashes), :mod:`~pipeline.release.sample_index`
(``meta/samples.parquet``) and :mod:`~pipeline.release.provenance` (version and commit).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from pipeline.release.checksums import FileDigest
from pipeline.release.provenance import geopixeld_version, git_commit
from pipeline.shards import parse_shard_path

if TYPE_CHECKING:
    from pipeline.release.scan import ExportScan

#: Version of the manifest layout; bump when fields change meaning.
SCHEMA_VERSION = 1


class FileEntry(BaseModel):
    """One file of a release: relative posix path, sha256 (hex), size in bytes, parquet rows, split."""

    path: str
    sha256: str
    bytes: int
    rows: int | None = None
    split: str | None = None

    def digest(self) -> FileDigest:
        """The sha256 and size the manifest records, to compare with :func:`~pipeline.release.checksums.file_sha256`."""
        return FileDigest(self.sha256, self.bytes)


class Manifest(BaseModel):
    """``manifest.json``: the self-description and checksum list of one release."""

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    created: str = Field(description="UTC timestamp of the publish, ISO 8601")
    geopixeld_version: str
    git_commit: str | None = None
    lmm_models: list[str] = Field(default_factory=list)
    prompt_versions: list[str] = Field(default_factory=list)
    counts: dict[str, Any] = Field(default_factory=dict)
    review: dict[str, Any] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict, description="parquet column -> arrow type")
    geo: dict[str, Any] = Field(default_factory=dict)
    previous_version: str | None = None
    bump: str | None = None
    files: list[FileEntry] = Field(default_factory=list)

    def file(self, path: str) -> FileEntry:
        """The entry for ``path``; ``KeyError`` if the release has no such file."""
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(f"{self.name}=={self.version} has no file {path!r}")

    def parquet_by_split(self) -> dict[str, list[str]]:
        """Sample shard paths grouped by split, in shard order."""
        shards: dict[str, list[str]] = {}
        for entry in sorted(self.files, key=lambda e: e.path):
            shard = parse_shard_path(entry.path)
            if shard is not None:
                shards.setdefault(shard.split, []).append(entry.path)
        return shards

    def to_json(self) -> bytes:
        """Canonical UTF-8 JSON bytes (indented, stable key order)."""
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n").encode()


def build_manifest(
    scan: ExportScan,
    *,
    name: str,
    version: str,
    created: str,
    files: list[FileEntry],
    previous_version: str | None,
    bump: str | None,
) -> Manifest:
    """Assemble the manifest of a release from its export scan and the staged file entries."""
    total = sum(scan.split_rows.values())
    return Manifest(
        name=name,
        version=version,
        created=created,
        geopixeld_version=geopixeld_version(),
        git_commit=git_commit(),
        lmm_models=scan.lmm_models,
        prompt_versions=scan.prompt_versions,
        counts={
            "samples": total,
            "splits": dict(sorted(scan.split_rows.items())),
            "files": len(files) + 1,
            "bytes": sum(f.bytes for f in files),
        },
        review=scan.review,
        columns=scan.columns,
        geo=scan.geo,
        previous_version=previous_version,
        bump=bump,
        files=sorted(files, key=lambda f: f.path),
    )
