"""Read releases from a store: list, show, pull into a local folder, and load for training.

``pull`` copies ``{store}/{name}/{version}/`` to ``{to}/{name}/{version}/`` and guarantees that folder is
complete and matches the manifest byte for byte:

* every file is streamed into ``{to}/{name}/.partial-{version}-{manifest sha256[:16]}/`` and its sha256 and
  size are checked against ``manifest.json`` before it takes its final name there; the partial folder is
  renamed to the version folder only once every file is verified, so the version folder is never half
  written;
* a checksum mismatch means the store copy is corrupt or was tampered with: :class:`ChecksumError` is
  raised and the partial folder is deleted (re-downloading would not help);
* any other interruption (network error, Ctrl-C) keeps the partial folder; the next pull reuses every file
  already there whose sha256 matches (resume) and fetches only the rest;
* the cache key is the version plus the sha256 of its manifest: a second pull of a version finds the
  version folder, checks its manifest is byte-identical to the store's, and re-verifies the files
  cheaply (size, and sha256 only for files whose size or mtime changed since they were verified;
  ``verify="full"`` rehashes everything). A local copy that no longer matches raises instead of being
  silently replaced; ``force=True`` re-downloads it.

The training API :func:`load` pulls into ``$GEOPIXELD_CACHE`` (default ``~/.cache/geopixeld/releases``)
and returns each split as a :class:`pyarrow.dataset.Dataset`; it needs no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import pyarrow.dataset as ds

from pipeline.release.changelog import Version
from pipeline.release.checksums import file_sha256
from pipeline.release.errors import CacheConflictError, ChecksumError, InvalidSpecError, ReleaseError
from pipeline.release.manifest import FileEntry, Manifest
from pipeline.release.store import MANIFEST_NAME, STORE_ENV, Store, validate_name

if TYPE_CHECKING:
    from pipeline.geo.frames import ReleaseData

#: Environment variable overriding the cache folder used by :func:`load`.
CACHE_ENV = "GEOPIXELD_CACHE"
#: Per-copy record of when each file was last verified (size and mtime in ns).
VERIFIED_STAMP = ".geopixeld-verified.json"

_CHUNK = 1 << 20

#: Called after each file with (relative path, files done, files total).
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ReleaseSpec:
    """``NAME==X.Y.Z`` or ``NAME==latest`` (a bare ``NAME`` means latest)."""

    name: str
    version: str = "latest"

    @classmethod
    def parse(cls, text: str) -> ReleaseSpec:
        """Parse a spec string; raise :class:`InvalidSpecError` with the expected form on error."""
        name, sep, version = text.strip().partition("==")
        version = version.strip() if sep else "latest"
        if version != "latest" and not Version.is_valid(version):
            raise InvalidSpecError(f"invalid release spec {text!r}: expected NAME==X.Y.Z or NAME==latest")
        return cls(validate_name(name.strip()), version)

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class ReleaseInfo:
    """One line of :func:`list_releases`: a visible release and its headline numbers."""

    name: str
    version: str
    created: str
    samples: int
    splits: dict[str, int]
    url: str


@dataclass
class PullResult:
    """Outcome of :func:`pull`.

    Attributes:
        name / version: the resolved release.
        path: the local version folder.
        manifest_sha256: sha256 of the release's ``manifest.json`` (the cache key with the version).
        manifest: the parsed manifest.
        downloaded: files fetched from the store in this call.
        reused: files taken from a partial folder left by an interrupted pull.
        cached: whether the version folder already existed (nothing was fetched).
    """

    name: str
    version: str
    path: Path
    manifest_sha256: str
    manifest: Manifest
    downloaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    cached: bool = False


def default_cache_dir() -> Path:
    """``$GEOPIXELD_CACHE`` or ``~/.cache/geopixeld/releases``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "geopixeld" / "releases").expanduser()


def open_store(store: str | os.PathLike[str] | Store | None, options: dict[str, Any] | None = None) -> Store:
    """An opened store from a URI, a :class:`Store` or ``$GEOPIXELD_STORE``."""
    if isinstance(store, Store):
        return store
    uri = store if store is not None else os.environ.get(STORE_ENV)
    if not uri:
        raise ReleaseError(f"no release store given: pass a store URI or set ${STORE_ENV}")
    return Store.from_uri(uri, options)


def list_releases(
    store: str | os.PathLike[str] | Store | None,
    name: str | None = None,
    *,
    store_options: dict[str, Any] | None = None,
) -> list[ReleaseInfo]:
    """Visible releases in the store (of one name if given), sorted by name then version."""
    opened = open_store(store, store_options)
    names = [validate_name(name)] if name else opened.names()
    infos: list[ReleaseInfo] = []
    for release_name in names:
        for version in opened.versions(release_name):
            manifest = _read_manifest(opened, release_name, version)[1]
            infos.append(
                ReleaseInfo(
                    name=release_name,
                    version=str(version),
                    created=manifest.created,
                    samples=int(manifest.counts.get("samples", 0)),
                    splits=dict(manifest.counts.get("splits", {})),
                    url=opened.url(release_name, str(version)),
                )
            )
    return infos


def show_release(
    spec: str,
    store: str | os.PathLike[str] | Store | None,
    *,
    store_options: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of ``NAME==X.Y.Z`` / ``NAME==latest`` / ``NAME``."""
    parsed = ReleaseSpec.parse(spec)
    opened = open_store(store, store_options)
    return _read_manifest(opened, parsed.name, opened.resolve(parsed.name, parsed.version))[1]


def pull(
    spec: str,
    store: str | os.PathLike[str] | Store | None,
    to: str | os.PathLike[str],
    *,
    store_options: dict[str, Any] | None = None,
    verify: Literal["fast", "full"] = "fast",
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> PullResult:
    """Download and verify a release into ``{to}/{name}/{version}/`` (see module docstring).

    Args:
        spec: ``NAME==X.Y.Z``, ``NAME==latest`` or ``NAME``.
        store: store URI, opened :class:`Store`, or ``None`` for ``$GEOPIXELD_STORE``.
        to: local folder holding pulled releases.
        verify: ``"fast"`` re-hashes only files changed since their last verification; ``"full"`` all.
        force: replace an existing local copy that fails verification or differs from the store.
        progress: called after each file as ``progress(path, done, total)``.

    Raises:
        ReleaseNotFoundError: no such visible release.
        ChecksumError: a store file does not match the manifest (nothing is left behind), or a cached
            copy was modified (use ``force=True``).
        CacheConflictError: the cached copy's manifest differs from the store's.
    """
    parsed = ReleaseSpec.parse(spec)
    opened = open_store(store, store_options)
    version = opened.resolve(parsed.name, parsed.version)
    manifest_bytes, manifest = _read_manifest(opened, parsed.name, version)
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    for entry in manifest.files:
        _check_relative(entry.path, parsed.name, version)
    base = Path(to).expanduser() / parsed.name
    dest = base / str(version)
    result = PullResult(parsed.name, str(version), dest, manifest_sha, manifest)
    if dest.exists() and force:
        shutil.rmtree(dest)
    if dest.exists():
        _verify_copy(dest, manifest, manifest_bytes, verify)
        result.cached = True
        return result
    partial = base / f".partial-{version}-{manifest_sha[:16]}"
    partial.mkdir(parents=True, exist_ok=True)
    try:
        for done, entry in enumerate(manifest.files, start=1):
            local = partial / entry.path
            if local.exists() and file_sha256(local) == entry.digest():
                result.reused.append(entry.path)
            else:
                _download(
                    opened, opened.release_path(parsed.name, version, entry.path), local, entry, dest=dest
                )
                result.downloaded.append(entry.path)
            if progress is not None:
                progress(entry.path, done, len(manifest.files))
        (partial / MANIFEST_NAME).write_bytes(manifest_bytes)
        _write_stamp(partial, manifest)
    except ChecksumError:
        shutil.rmtree(partial, ignore_errors=True)
        _remove_if_empty(base)
        raise
    try:
        os.rename(partial, dest)
    except OSError:
        if not (dest / MANIFEST_NAME).exists():
            raise
        # Another pull of the same version finished first; keep its copy.
        shutil.rmtree(partial, ignore_errors=True)
        _verify_copy(dest, manifest, manifest_bytes, verify)
    return result


def load(
    name: str,
    version: str = "latest",
    store: str | os.PathLike[str] | Store | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    store_options: dict[str, Any] | None = None,
) -> ReleaseData:
    """Pull ``name==version`` into the local cache and return ``{split: pyarrow.dataset.Dataset}``.

    The returned :class:`~pipeline.geo.frames.ReleaseData` is that dict plus pandas access for analysis:
    ``.to_pandas("samples" | "instances" | "flags" | "calls")`` (or ``.samples()``, ``.flags()``...).

    Args:
        name: release name.
        version: ``"X.Y.Z"`` or ``"latest"``.
        store: store URI, opened :class:`Store`, or ``None`` for ``$GEOPIXELD_STORE``.
        cache_dir: where releases are cached (default :func:`default_cache_dir`).
        store_options: fsspec storage options when ``store`` is a URI.
    """
    from pipeline.geo.frames import ReleaseData

    result = pull(f"{name}=={version}", store, cache_dir or default_cache_dir(), store_options=store_options)
    return ReleaseData(
        {
            split: ds.dataset([str(result.path / p) for p in paths], format="parquet")
            for split, paths in sorted(result.manifest.parquet_by_split().items())
        },
        result.path,
    )


def _read_manifest(store: Store, name: str, version: Version) -> tuple[bytes, Manifest]:
    data = store.read_bytes(store.release_path(name, version, MANIFEST_NAME))
    try:
        return data, Manifest.model_validate_json(data)
    except ValueError as exc:
        raise ReleaseError(
            f"{store.url(name, str(version), MANIFEST_NAME)}: invalid manifest ({exc})"
        ) from exc


def _check_relative(path: str, name: str, version: Version) -> None:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path or not pure.parts or path == MANIFEST_NAME:
        raise ReleaseError(f"manifest of {name}=={version} lists an unsafe file path {path!r}")


def _download(store: Store, remote: str, local: Path, entry: FileEntry, *, dest: Path) -> None:
    """Stream ``remote`` to ``local`` through a ``.part`` file, verifying sha256 and size first."""
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(local.name + ".part")
    digest = hashlib.sha256()
    size = 0
    where = remote if store.is_local else f"{store.protocol}://{remote}"
    try:
        reader_handle = store.open_read(remote)
    except FileNotFoundError as exc:
        raise ChecksumError(
            f"{where} is listed in the manifest but missing from the store; nothing was written to {dest}"
        ) from exc
    with reader_handle as reader, open(part, "wb") as writer:
        # Read at most one byte more than expected so an oversized (tampered) file is not fetched whole.
        while size <= entry.bytes:
            chunk = reader.read(min(_CHUNK, entry.bytes + 1 - size))
            if not chunk:
                break
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
    sha = digest.hexdigest()
    if sha != entry.sha256 or size != entry.bytes:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch for {where}: "
            f"sha256 {sha} ({size} bytes read) but the manifest records {entry.sha256} "
            f"({entry.bytes} bytes). "
            f"The store copy is corrupt or was tampered with; nothing was written to {dest}"
        )
    os.replace(part, local)


def _verify_copy(dest: Path, manifest: Manifest, manifest_bytes: bytes, verify: str) -> None:
    local_manifest = dest / MANIFEST_NAME
    if not local_manifest.exists() or local_manifest.read_bytes() != manifest_bytes:
        raise CacheConflictError(
            f"{dest} does not hold the store's manifest of {manifest.name}=={manifest.version}; releases are "
            "immutable, so the local copy or the store was altered. "
            "Pull with --force to replace the local copy"
        )
    stamp = _read_stamp(dest)
    for entry in manifest.files:
        local = dest / entry.path
        if not local.is_file():
            raise ChecksumError(
                f"{local} is missing from the local copy of {manifest.name}=={manifest.version}; "
                "pull with --force to repair it"
            )
        stat = local.stat()
        if (
            stat.st_size == entry.bytes
            and verify == "fast"
            and stamp.get(entry.path) == [stat.st_size, stat.st_mtime_ns]
        ):
            continue
        digest = file_sha256(local)
        if digest != entry.digest():
            raise ChecksumError(
                f"{local} was modified after it was pulled (sha256 {digest.sha256}, manifest {entry.sha256}); "
                "pull with --force to replace the local copy"
            )
    _write_stamp(dest, manifest)


def _read_stamp(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / VERIFIED_STAMP).read_text())
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _write_stamp(directory: Path, manifest: Manifest) -> None:
    files = {}
    for entry in manifest.files:
        stat = (directory / entry.path).stat()
        files[entry.path] = [stat.st_size, stat.st_mtime_ns]
    tmp = directory / (VERIFIED_STAMP + ".tmp")
    tmp.write_text(json.dumps({"files": files}))
    os.replace(tmp, directory / VERIFIED_STAMP)


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()
