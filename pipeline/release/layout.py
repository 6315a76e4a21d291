"""Paths inside an export and a release: sample shard names, the sample index, the generated files.

Sample shard names are the exporter's (:mod:`pipeline.shards`: ``data/{split}-{i:05d}-of-{n:05d}.parquet``).
"""

from __future__ import annotations

#: Relative path of the per-sample index (id, split, content hash) inside a release.
SAMPLE_INDEX_PATH = "meta/samples.parquet"
#: Files the release tooling writes itself; an export may not contain them.
GENERATED_PATHS = frozenset({"manifest.json", "croissant.json", "CHANGELOG.md", SAMPLE_INDEX_PATH})
