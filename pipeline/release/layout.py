"""Paths inside an export and a release: sample shard names, the sample index, the generated files.

Sample shards are named ``data/{split}-{i:05d}-of-{n:05d}.parquet`` (the Hugging Face ``datasets``
layout the exporter writes); :func:`parse_shard_path` reads a path back into a :class:`ShardPath`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Relative path of the per-sample index (id, split, content hash) inside a release.
SAMPLE_INDEX_PATH = "meta/samples.parquet"
#: Files the release tooling writes itself; an export may not contain them.
GENERATED_PATHS = frozenset({"manifest.json", "croissant.json", "CHANGELOG.md", SAMPLE_INDEX_PATH})
#: The shard name pattern, for messages.
SHARD_PATTERN = "data/{split}-{i:05d}-of-{n:05d}.parquet"

_SHARD_RE = re.compile(r"^data/(?P<split>[A-Za-z0-9_.]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


@dataclass(frozen=True)
class ShardPath:
    """A sample shard path taken apart: ``data/{split}-{index:05d}-of-{count:05d}.parquet``."""

    path: str
    split: str
    index: int
    count: int


def parse_shard_path(path: str) -> ShardPath | None:
    """The parts of a sample shard path; ``None`` if ``path`` is not named like a shard."""
    match = _SHARD_RE.match(path)
    if match is None:
        return None
    return ShardPath(path=path, split=match["split"], index=int(match["index"]), count=int(match["count"]))
