"""Release stores: where published releases live, addressed by a URI.

A store URI is either a plain local path (``./releases``, ``/data/releases``, ``file:///data/releases``)
or any fsspec URL (``s3://bucket/prefix`` through s3fs, ``gs://``, ``memory://`` ...). Storage options
(fsspec keyword arguments) come from ``--store-option key=value`` / the ``options`` argument; for S3 the
keys ``endpoint_url`` and ``region_name`` are moved into s3fs' ``client_kwargs``, and the environment
variable ``GEOPIXELD_S3_ENDPOINT_URL`` supplies ``endpoint_url`` when none is given (S3-compatible servers
such as MinIO or moto).

Layout inside a store::

    {root}/{name}/{version}/manifest.json      # visibility marker, written last
    {root}/{name}/{version}/...                # the release files listed in the manifest
    {root}/{name}/{version}/.claim             # remote stores only: who is publishing this version
    {root}/{name}/.staging-*/                  # local stores only: a publish in progress

A version is *visible* (listed, pullable, used as "previous" for changelogs) only once its
``manifest.json`` exists.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.core import split_protocol

from pipeline.release.changelog import Version
from pipeline.release.errors import InvalidSpecError, ReleaseNotFoundError

#: Environment variable naming a default store URI for the CLI and :func:`pipeline.release.load`.
STORE_ENV = "GEOPIXELD_STORE"
#: Environment variable giving an S3 endpoint URL (S3-compatible servers) when none is passed.
S3_ENDPOINT_ENV = "GEOPIXELD_S3_ENDPOINT_URL"
#: File whose existence makes a version visible.
MANIFEST_NAME = "manifest.json"
#: Claim object written with a conditional put before uploading to a remote store.
CLAIM_NAME = ".claim"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_S3_CLIENT_KEYS = ("endpoint_url", "region_name")
_LOCAL_PROTOCOLS = ("file", "local")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid release name (letters, digits, ``._-``; not starting with ``.``)."""
    if not _NAME_RE.match(name):
        raise InvalidSpecError(
            f"invalid release name {name!r}: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_store_options(pairs: list[str] | None) -> dict[str, Any]:
    """Turn CLI ``key=value`` strings into storage options (``true``/``false`` become booleans)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidSpecError(f"invalid store option {pair!r}: expected key=value")
        lowered = value.lower()
        options[key.strip()] = True if lowered == "true" else False if lowered == "false" else value
    return options


@dataclass(frozen=True)
class Store:
    """An fsspec-backed release store.

    Attributes:
        uri: the URI the store was opened with (for messages).
        protocol: fsspec protocol, ``"file"`` for local stores.
        root: protocol-less root path (absolute for local stores, ``bucket/prefix`` for S3).
        storage_options: keyword arguments the filesystem was created with.
        fs: the fsspec filesystem.
    """

    uri: str
    protocol: str
    root: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    fs: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_uri(cls, uri: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> Store:
        """Open a store; plain paths and ``file://`` URLs are local folders (created on first publish)."""
        text = os.fspath(uri)
        protocol, path = split_protocol(text)
        protocol = protocol or "file"
        opts = dict(options or {})
        if protocol in _LOCAL_PROTOCOLS:
            protocol = "file"
            root = str(Path(path).expanduser().resolve())
        else:
            root = path.rstrip("/")
            if protocol in ("s3", "s3a"):
                opts = _s3_options(opts)
        fs = fsspec.filesystem(protocol, **opts)
        return cls(uri=text, protocol=protocol, root=root, storage_options=opts, fs=fs)

    @property
    def is_local(self) -> bool:
        """Whether the store is a local folder (publishing then uses an atomic directory rename)."""
        return self.protocol == "file"

    def path(self, *parts: str) -> str:
        """Protocol-less path of ``parts`` under the root (posix separators)."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def url(self, *parts: str) -> str:
        """Human-readable location of ``parts`` (a local path or ``protocol://path``)."""
        path = self.path(*parts)
        return path if self.is_local else f"{self.protocol}://{path}"

    def public_url(self, *parts: str) -> str:
        """Absolute URL of ``parts`` (``file:///...`` for local stores), e.g. for Croissant's ``url``."""
        return Path(self.path(*parts)).as_uri() if self.is_local else self.url(*parts)

    # -- raw file operations ------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        """Whether a file exists (remote listing caches are bypassed)."""
        self._refresh(path)
        return bool(self.fs.exists(path))

    def read_bytes(self, path: str) -> bytes:
        """Whole content of a file."""
        data: bytes = self.fs.cat_file(path)
        return data

    def open_read(self, path: str) -> IO[bytes]:
        """A binary file object for streaming reads."""
        handle: IO[bytes] = self.fs.open(path, "rb")
        return handle

    def size(self, path: str) -> int:
        """Size of a file in bytes."""
        return int(self.fs.size(path))

    def put_file(self, local: Path, path: str) -> None:
        """Upload a local file to ``path`` (overwriting; only used under a claimed prefix)."""
        self.fs.put_file(str(local), path)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` (overwriting; only used under a claimed prefix)."""
        self.fs.pipe_file(path, data)

    def create_exclusive(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` only if nothing exists there; otherwise raise ``FileExistsError``.

        Local stores use ``O_CREAT | O_EXCL``; S3 uses a conditional put (``If-None-Match: *``), which is
        atomic on AWS S3, MinIO and moto. Other fsspec backends fall back to check-then-write, which is
        *not* atomic: two concurrent publishers of one version may then both proceed.
        """
        if self.is_local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            raise
        except OSError as exc:
            if _is_precondition_failure(exc):
                raise FileExistsError(errno.EEXIST, "object already exists", path) from exc
            raise
        finally:
            self._refresh(path)

    def remove(self, path: str, recursive: bool = False) -> None:
        """Delete a file (or a prefix with ``recursive=True``); missing paths are ignored."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=recursive)
        self._refresh(path)

    def list_dir(self, path: str) -> list[str]:
        """Base names of the entries directly under ``path`` (empty if it does not exist)."""
        self._refresh(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({posixpath.basename(str(e).rstrip("/")) for e in entries})

    # -- release layout -----------------------------------------------------------------------------

    def release_path(self, name: str, version: str | Version, *parts: str) -> str:
        """Path of a release folder (or of ``parts`` inside it)."""
        return self.path(name, str(version), *parts)

    def is_visible(self, name: str, version: str | Version) -> bool:
        """Whether ``name==version`` is published (its manifest exists)."""
        return self.exists(self.release_path(name, version, MANIFEST_NAME))

    def names(self) -> list[str]:
        """Release names that have at least one visible version, sorted."""
        return [n for n in self.list_dir(self.root) if _NAME_RE.match(n) and self.versions(n)]

    def versions(self, name: str) -> list[Version]:
        """Visible versions of ``name``, oldest first."""
        found = [Version.parse(v) for v in self.list_dir(self.path(name)) if Version.is_valid(v)]
        return sorted(v for v in found if self.is_visible(name, v))

    def latest(self, name: str) -> Version | None:
        """Highest visible version of ``name``, or ``None`` if there is none."""
        versions = self.versions(name)
        return versions[-1] if versions else None

    def resolve(self, name: str, version: str | Version = "latest") -> Version:
        """Turn ``"latest"`` or ``"X.Y.Z"`` into a visible version; raise if it is not published."""
        validate_name(name)
        if str(version) == "latest":
            latest = self.latest(name)
            if latest is None:
                raise ReleaseNotFoundError(f"no published release named {name!r} in store {self.uri}")
            return latest
        parsed = version if isinstance(version, Version) else Version.parse(version)
        if not self.is_visible(name, parsed):
            known = ", ".join(str(v) for v in self.versions(name)) or "none"
            raise ReleaseNotFoundError(
                f"release {name}=={parsed} not found in store {self.uri} (published versions: {known})"
            )
        return parsed

    def _refresh(self, path: str) -> None:
        invalidate = getattr(self.fs, "invalidate_cache", None)
        if invalidate is not None and not self.is_local:
            invalidate(posixpath.dirname(path))
            invalidate(path)


def _s3_options(options: dict[str, Any]) -> dict[str, Any]:
    client_kwargs = dict(options.pop("client_kwargs", None) or {})
    for key in _S3_CLIENT_KEYS:
        if key in options:
            client_kwargs[key] = options.pop(key)
    endpoint = os.environ.get(S3_ENDPOINT_ENV)
    if endpoint and "endpoint_url" not in client_kwargs:
        client_kwargs["endpoint_url"] = endpoint
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    # Another process may publish at any time; a stale listing would hide its versions.
    options.setdefault("use_listings_cache", False)
    return options


def _is_precondition_failure(exc: BaseException) -> bool:
    """Whether an s3fs error is a failed ``If-None-Match`` (HTTP 412 / 409 conditional conflict)."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        code = str(error.get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or status in (
            412,
            409,
        )
    return False
