"""Sample shard names: ``data/{split}-{index:05d}-of-{count:05d}.parquet``, written and read in one place.

The exporter writes the Hugging Face ``datasets`` layout (:func:`shard_name`); the release tooling and
the STAC catalogue read the names back (:func:`parse_shard_path`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The shard name pattern, for messages.
SHARD_PATTERN = "data/{split}-{i:05d}-of-{n:05d}.parquet"
#: The folder of an export or release that holds the shards.
SHARD_DIR = "data"

_SHARD_RE = re.compile(r"^data/(?P<split>[A-Za-z0-9_.]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


@dataclass(frozen=True)
class ShardPath:
    """A sample shard path taken apart: ``data/{split}-{index:05d}-of-{count:05d}.parquet``."""

    path: str
    split: str
    index: int
    count: int


def shard_name(split: str, index: int, count: int) -> str:
    """File name (inside ``data/``) of shard ``index`` of ``count`` of ``split``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def parse_shard_path(path: str) -> ShardPath | None:
    """The parts of a sample shard path (relative, ``/``-separated); ``None`` if not named like a shard."""
    match = _SHARD_RE.match(path)
    if match is None:
        return None
    return ShardPath(path=path, split=match["split"], index=int(match["index"]), count=int(match["count"]))
