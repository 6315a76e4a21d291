"""Versioned, immutable, checksummed dataset releases.

Publish an EXPORT folder to a store (a local folder or any fsspec URL such as ``s3://bucket/prefix``),
list and inspect releases, pull them with checksum verification, and load them for training::

    from pipeline.release import load
    splits = load("geopixeld-isaid", "1.2.0", store="s3://bucket/releases")
    table = splits["train"].to_table(columns=["id", "caption"])

Modules: :mod:`~pipeline.release.store` (store URIs and layout), :mod:`~pipeline.release.scan` (export
scan, with :mod:`~pipeline.release.export_stats`), :mod:`~pipeline.release.layout` (shard and generated
paths), :mod:`~pipeline.release.checksums` (file and row sha256), :mod:`~pipeline.release.sample_index`
(``meta/samples.parquet``), :mod:`~pipeline.release.manifest` (``manifest.json``, with
:mod:`~pipeline.release.provenance`), :mod:`~pipeline.release.croissant` (``croissant.json``),
:mod:`~pipeline.release.changelog` (diffs and the SemVer rule), :mod:`~pipeline.release.publish`,
:mod:`~pipeline.release.pull` and :mod:`~pipeline.release.cli` (``geopixeld release ...``).
"""

from pipeline.release.errors import (
    BumpTooSmallError,
    CacheConflictError,
    ChecksumError,
    ExportError,
    InvalidSpecError,
    ReleaseError,
    ReleaseExistsError,
    ReleaseNotFoundError,
)
from pipeline.release.publish import PublishResult, publish
from pipeline.release.pull import PullResult, ReleaseInfo, list_releases, load, pull, show_release
from pipeline.release.store import Store

__all__ = [
    "BumpTooSmallError",
    "CacheConflictError",
    "ChecksumError",
    "ExportError",
    "InvalidSpecError",
    "PublishResult",
    "PullResult",
    "ReleaseError",
    "ReleaseExistsError",
    "ReleaseInfo",
    "ReleaseNotFoundError",
    "Store",
    "list_releases",
    "load",
    "publish",
    "pull",
    "show_release",
]
