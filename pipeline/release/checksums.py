"""Checksums: sha256 of files (read or copied in 1 MiB chunks) and of sample rows.

A row's hash (:func:`row_hashes`) covers every column but the key, independent of column order, so
two releases can be compared sample by sample (see :mod:`pipeline.release.changelog`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    """sha256 (hex) and size in bytes of a file's contents."""

    sha256: str
    bytes: int


def file_sha256(path: Path) -> FileDigest:
    """sha256 (hex) and size in bytes of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return FileDigest(digest.hexdigest(), size)


def copy_with_sha256(src: Path, dst: Path) -> FileDigest:
    """Copy ``src`` to ``dst`` and return sha256 and size of the bytes actually written."""
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        for chunk in iter(lambda: reader.read(_CHUNK), b""):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
    return FileDigest(digest.hexdigest(), size)


def row_hashes(batch: pa.RecordBatch | pa.Table, key: str = "id") -> list[str]:
    """sha256 (hex) of each row's columns other than ``key``, independent of column order.

    Each column contributes its name and a type-tagged, length-prefixed encoding of its value (nested
    lists and structs included), so different values never encode to the same bytes.
    """
    names = sorted(n for n in batch.schema.names if n != key)
    columns = [batch.column(n).to_pylist() for n in names]
    encoded_names = [_encode(n) for n in names]
    out: list[str] = []
    for row in range(batch.num_rows):
        digest = hashlib.sha256()
        for name, values in zip(encoded_names, columns, strict=True):
            digest.update(name)
            digest.update(_encode(values[row]))
        out.append(digest.hexdigest())
    return out


def _encode(value: Any) -> bytes:
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return b"I" + _sized(str(value).encode())
    if isinstance(value, float):
        return b"D" + _sized(repr(value).encode())
    if isinstance(value, str):
        return b"S" + _sized(value.encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return b"B" + _sized(bytes(value))
    if isinstance(value, list | tuple):
        return b"L" + _sized(b"".join(_encode(v) for v in value))
    if isinstance(value, dict):
        return b"M" + _sized(b"".join(_encode(str(k)) + _encode(value[k]) for k in sorted(value, key=str)))
    return b"O" + _sized(str(value).encode())


def _sized(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data
