"""Publish an EXPORT folder as an immutable, versioned release in a store.

Publishing runs in three steps, each usable on its own (tests drive them separately):

1. :func:`plan_release` scans and validates the export, finds the latest published version of the name,
   diffs against it and refuses a version bump smaller than the diff requires (see
   :mod:`pipeline.release.changelog` for the rule). Nothing is written.
2. :func:`stage_release` writes the complete release (export files, ``meta/samples.parquet``,
   ``CHANGELOG.md``, ``croissant.json`` and, last, ``manifest.json``) into a staging folder that readers
   never look at: ``{store}/{name}/.staging-*`` for local stores (same filesystem as the target), a
   temporary folder for remote stores.
3. :func:`commit_release` makes it visible, never overwriting an existing version:

   * local store: ``os.rename(staging, {store}/{name}/{version})``. POSIX rename of a directory fails
     when the target exists and is not empty, so of two concurrent publishes of one version exactly one
     rename succeeds; the other gets :class:`ReleaseExistsError` and its staging folder is removed.
   * remote store: a claim object ``{version}/.claim`` is created with a conditional put
     (``If-None-Match: *``; atomic on S3, MinIO, moto), so only one publisher uploads into the version
     prefix; the files are uploaded, and ``manifest.json`` (the visibility marker) is written last, also
     conditionally. Readers ignore versions without a manifest, so a half-uploaded release is never seen.
     Backends without conditional writes fall back to check-then-write (no guarantee against a concurrent
     publish of the same version). A publish that dies after claiming leaves the claim behind; the version
     then stays unpublishable until an operator deletes the ``.claim`` object (the error says so).
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import socket
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.release.changelog import (
    Bump,
    ReleaseDiff,
    Version,
    check_bump,
    diff_indexes,
    prepend_entry,
    render_entry,
)
from pipeline.release.checksums import copy_with_sha256, file_sha256
from pipeline.release.croissant import build_croissant, card_front_matter, card_summary
from pipeline.release.errors import ReleaseExistsError
from pipeline.release.layout import GENERATED_PATHS, SAMPLE_INDEX_PATH
from pipeline.release.manifest import FileEntry, Manifest, build_manifest
from pipeline.release.scan import ExportScan, scan_export
from pipeline.release.store import CLAIM_NAME, MANIFEST_NAME, Store, validate_name

CARD_PATH = "README.md"
CHANGELOG_PATH = "CHANGELOG.md"
CROISSANT_PATH = "croissant.json"
#: STAC metadata the release writes itself (pipeline.geo.stac) when the export has GeoParquet layers.
STAC_PREFIX = "stac/"


@dataclass
class PublishPlan:
    """A validated, not yet written release.

    Attributes:
        name / version: what will be published.
        store: the target store.
        scan: the scanned export.
        previous: latest published version of ``name`` (``None`` for a first release).
        diff: the diff against ``previous`` (``None`` for a first release).
        bump: the actual bump over ``previous`` (``None`` for a first release).
        created: UTC publish timestamp, ISO 8601 (seconds).
        entry: the new CHANGELOG entry (Markdown).
        changelog: the full new ``CHANGELOG.md``.
    """

    name: str
    version: Version
    store: Store
    scan: ExportScan
    previous: Version | None
    diff: ReleaseDiff | None
    bump: Bump | None
    created: str
    entry: str
    changelog: str


@dataclass
class StagedRelease:
    """A complete release in a staging folder, waiting for :func:`commit_release`."""

    plan: PublishPlan
    directory: Path
    manifest: Manifest


@dataclass(frozen=True)
class PublishResult:
    """Outcome of :func:`publish`: where the release went, its manifest and changelog entry."""

    name: str
    version: str
    url: str
    manifest: Manifest | None
    previous: str | None
    bump: str | None
    entry: str
    committed: bool


def plan_release(export_dir: str | os.PathLike[str], name: str, version: str, store: Store) -> PublishPlan:
    """Validate an export and a requested version against the store (see module docstring, step 1).

    Raises:
        InvalidSpecError: bad name or version string.
        ExportError: the export folder is invalid.
        ReleaseExistsError: ``name==version`` is already published.
        BumpTooSmallError: the version is not greater than the latest, or its bump is too small.
    """
    validate_name(name)
    requested = Version.parse(version)
    if store.is_visible(name, requested):
        raise ReleaseExistsError(
            f"release {name}=={requested} already exists in {store.url(name, str(requested))}"
        )
    scan = scan_export(Path(export_dir))
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    previous = store.latest(name)
    old_changelog: str | None = None
    diff: ReleaseDiff | None = None
    bump: Bump | None = None
    if previous is not None:
        requested.bump_from(previous)  # refuses versions that are not newer, before any heavy reading
        diff = _diff_against(store, name, previous, scan)
        bump = check_bump(previous, requested, diff, name=name)
        old_changelog = _read_text(store, store.release_path(name, previous, CHANGELOG_PATH))
    entry = render_entry(
        version=requested,
        date=created[:10],
        previous=previous,
        diff=diff,
        total_samples=sum(scan.split_rows.values()),
        split_counts=scan.split_rows,
    )
    return PublishPlan(
        name=name,
        version=requested,
        store=store,
        scan=scan,
        previous=previous,
        diff=diff,
        bump=bump,
        created=created,
        entry=entry,
        changelog=prepend_entry(entry, old_changelog),
    )


def stage_release(
    plan: PublishPlan,
    *,
    description: str | None = None,
    license: str | None = None,
    url: str | None = None,
    cite_as: str | None = None,
) -> StagedRelease:
    """Write the complete release into a staging folder (module docstring, step 2).

    ``description``/``license``/``url`` override what the export's ``export.json`` and dataset card say.
    """
    store, scan = plan.store, plan.scan
    if store.is_local:
        parent = Path(store.path(plan.name))
        parent.mkdir(parents=True, exist_ok=True)
        directory = parent / f".staging-{plan.version}-{uuid.uuid4().hex[:12]}"
        directory.mkdir()
    else:
        directory = Path(tempfile.mkdtemp(prefix=f"geopixeld-release-{plan.name}-{plan.version}-"))
    try:
        entries = [_copy(scan, rel, directory) for rel in scan.files if not rel.startswith(STAC_PREFIX)]
        if CARD_PATH not in scan.files:
            entries.append(_write(directory, CARD_PATH, _default_card(plan).encode(), None))
        buffer = io.BytesIO()
        pq.write_table(scan.index, buffer, compression="zstd")
        entries.append(
            _write(directory, SAMPLE_INDEX_PATH, buffer.getvalue(), None, rows=scan.index.num_rows)
        )
        entries.append(_write(directory, CHANGELOG_PATH, plan.changelog.encode(), None))
        card = (directory / CARD_PATH).read_text(errors="replace")
        draft = _manifest(plan, entries)
        doc = build_croissant(
            draft,
            pq.read_schema(directory / next(iter(scan.shards.values()))[0]),
            description=description or _description(plan, card),
            license=license or _license(scan, card),
            url=url or str(scan.export_meta.get("url") or store.public_url(plan.name, str(plan.version))),
            date_published=plan.created[:10],
            cite_as=cite_as or _optional_str(scan.export_meta.get("citation")),
        )
        entries.append(_write(directory, CROISSANT_PATH, _json_bytes(doc), None))
        entries += _stac(
            plan, directory, description or _description(plan, card), license or _license(scan, card)
        )
        manifest = _manifest(plan, entries)
        (directory / MANIFEST_NAME).write_bytes(manifest.to_json())
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return StagedRelease(plan=plan, directory=directory, manifest=manifest)


def commit_release(staged: StagedRelease) -> str:
    """Make a staged release visible without ever overwriting a version (module docstring, step 3).

    Returns the release location. Raises :class:`ReleaseExistsError` if the version was published (or
    claimed) first by someone else; the staging folder is removed in every case.
    """
    plan, store = staged.plan, staged.plan.store
    version = str(plan.version)
    try:
        if store.is_local:
            target = Path(store.release_path(plan.name, version))
            try:
                os.rename(staged.directory, target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise ReleaseExistsError(
                        f"release {plan.name}=={version} already exists in {target} "
                        "(published concurrently by another process); nothing was overwritten"
                    ) from exc
                raise
            return str(target)
        _commit_remote(staged)
        return store.url(plan.name, version)
    finally:
        shutil.rmtree(staged.directory, ignore_errors=True)


def publish(
    export_dir: str | os.PathLike[str],
    name: str,
    version: str,
    store: str | os.PathLike[str] | Store,
    *,
    store_options: dict[str, Any] | None = None,
    description: str | None = None,
    license: str | None = None,
    url: str | None = None,
    cite_as: str | None = None,
    dry_run: bool = False,
) -> PublishResult:
    """Publish ``export_dir`` as ``name==version`` in ``store`` (plan, stage, commit).

    Args:
        export_dir: an EXPORT folder written by the exporter.
        name: release name (letters, digits, ``._-``).
        version: ``MAJOR.MINOR.PATCH``; must be a large enough bump over the latest published version.
        store: store URI (local path or fsspec URL) or an opened :class:`Store`.
        store_options: fsspec storage options when ``store`` is a URI.
        description / license / url / cite_as: Croissant overrides of the export's own metadata.
        dry_run: only plan; return the changelog entry without writing anything.
    """
    opened = store if isinstance(store, Store) else Store.from_uri(store, store_options)
    plan = plan_release(export_dir, name, version, opened)
    previous = str(plan.previous) if plan.previous else None
    bump = plan.bump.name if plan.bump else None
    if dry_run:
        url_preview = opened.url(name, str(plan.version))
        return PublishResult(name, str(plan.version), url_preview, None, previous, bump, plan.entry, False)
    staged = stage_release(plan, description=description, license=license, url=url, cite_as=cite_as)
    location = commit_release(staged)
    return PublishResult(name, str(plan.version), location, staged.manifest, previous, bump, plan.entry, True)


def _commit_remote(staged: StagedRelease) -> None:
    plan, store = staged.plan, staged.plan.store
    version = str(plan.version)
    claim_path = store.release_path(plan.name, version, CLAIM_NAME)
    claim = {"host": socket.gethostname(), "pid": os.getpid(), "created": plan.created}
    try:
        store.create_exclusive(claim_path, _json_bytes(claim))
    except FileExistsError as exc:
        raise ReleaseExistsError(
            f"release {plan.name}=={version} is already published or being published in "
            f"{store.url(plan.name, version)} (claim {store.url(plan.name, version, CLAIM_NAME)} exists; "
            "if no publish is running and the version has no manifest.json, delete that claim and retry)"
        ) from exc
    for entry in staged.manifest.files:
        store.put_file(staged.directory / entry.path, store.release_path(plan.name, version, entry.path))
    try:
        store.create_exclusive(
            store.release_path(plan.name, version, MANIFEST_NAME),
            (staged.directory / MANIFEST_NAME).read_bytes(),
        )
    except FileExistsError as exc:
        raise ReleaseExistsError(
            f"release {plan.name}=={version}: manifest.json appeared in {store.url(plan.name, version)} "
            "while publishing; another publisher ignored the claim"
        ) from exc


def _diff_against(store: Store, name: str, previous: Version, scan: ExportScan) -> ReleaseDiff:
    manifest = Manifest.model_validate_json(
        store.read_bytes(store.release_path(name, previous, MANIFEST_NAME))
    )
    old_index = pq.read_table(
        io.BytesIO(store.read_bytes(store.release_path(name, previous, SAMPLE_INDEX_PATH)))
    )
    shard_paths = {p for paths in manifest.parquet_by_split().values() for p in paths}
    old_files = {
        e.path: e.sha256
        for e in manifest.files
        if e.path not in shard_paths and e.path not in GENERATED_PATHS and not e.path.startswith(STAC_PREFIX)
    }
    new_shards = {p for paths in scan.shards.values() for p in paths}
    new_files = {
        rel: file_sha256(scan.root / rel).sha256
        for rel in scan.files
        if rel not in new_shards and not rel.startswith(STAC_PREFIX)
    }
    return diff_indexes(
        old_index,
        scan.index,
        previous_columns=manifest.columns,
        current_columns=scan.columns,
        previous_files=old_files,
        current_files=new_files,
    )


def _copy(scan: ExportScan, rel: str, directory: Path) -> FileEntry:
    digest = copy_with_sha256(scan.root / rel, directory / rel)
    rows = pq.read_metadata(directory / rel).num_rows if rel.endswith(".parquet") else None
    return FileEntry(path=rel, sha256=digest.sha256, bytes=digest.bytes, rows=rows, split=scan.split_of(rel))


def _write(directory: Path, rel: str, data: bytes, split: str | None, rows: int | None = None) -> FileEntry:
    path = directory / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = file_sha256(path)
    return FileEntry(path=rel, sha256=digest.sha256, bytes=digest.bytes, rows=rows, split=split)


def _manifest(plan: PublishPlan, entries: list[FileEntry]) -> Manifest:
    return build_manifest(
        plan.scan,
        name=plan.name,
        version=str(plan.version),
        created=plan.created,
        files=entries,
        previous_version=str(plan.previous) if plan.previous else None,
        bump=plan.bump.name if plan.bump else None,
    )


def _description(plan: PublishPlan, card: str) -> str:
    meta_description = plan.scan.export_meta.get("description") or card_front_matter(card).get("description")
    return str(
        meta_description
        or card_summary(card)
        or f"{plan.name}: pixel-grounded remote-sensing captions (GeoPixelD style) built with geopixeld."
    )


def _license(scan: ExportScan, card: str) -> str:
    return str(scan.export_meta.get("license") or card_front_matter(card).get("license") or "unknown")


def _default_card(plan: PublishPlan) -> str:
    configs = "\n".join(
        f"  - split: {split}\n    path: data/{split}-*.parquet" for split in sorted(plan.scan.shards)
    )
    return (
        f"---\npretty_name: {plan.name}\nconfigs:\n- config_name: default\n  data_files:\n{configs}\n---\n\n"
        f"# {plan.name}\n\nPixel-grounded remote-sensing captions (GeoPixelD style) built with geopixeld.\n"
    )


def _read_text(store: Store, path: str) -> str | None:
    return store.read_bytes(path).decode() if store.exists(path) else None


def _optional_str(value: Any) -> str | None:
    return str(value) if value else None


def _stac(plan: PublishPlan, directory: Path, description: str, license: str) -> list[FileEntry]:
    """``stac/`` for exports with GeoParquet layers (``geo/``); without pystac a warning and no STAC."""
    if not any(rel.startswith("geo/") for rel in plan.scan.files):
        return []
    from pipeline.geo import GeoError
    from pipeline.geo.stac import write_stac

    try:
        written = write_stac(
            directory,
            directory,
            name=plan.name,
            version=str(plan.version),
            created=plan.created,
            description=description,
            license=license,
        )
    except GeoError as exc:
        warnings.warn(f"release {plan.name}=={plan.version} carries no STAC metadata: {exc}", stacklevel=2)
        return []
    return [
        FileEntry(path=rel, sha256=digest.sha256, bytes=digest.bytes)
        for rel in written
        for digest in [file_sha256(directory / rel)]
    ]


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
