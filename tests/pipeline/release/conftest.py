"""Fixtures for the release tests: small EXPORT folders written with pyarrow, and a loopback S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.loopback import free_port, stop_process

SAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tile_id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("caption", pa.string()),
        ("gcg_caption", pa.string()),
        ("phrases", pa.list_(pa.string())),
        ("masks", pa.list_(pa.string())),
        ("categories", pa.list_(pa.string())),
        ("crs", pa.string()),
        ("transform", pa.list_(pa.float64())),
        ("gsd", pa.float64()),
        ("source_image", pa.string()),
        ("review_status", pa.string()),
        ("flags", pa.list_(pa.string())),
        ("lmm_model", pa.string()),
        ("prompt_version", pa.string()),
    ]
)

CARD = """---
license: cc-by-4.0
pretty_name: Tiny GeoPixelD
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
  - split: val
    path: data/val-*.parquet
---

# Tiny GeoPixelD

Pixel-grounded captions of tiny synthetic remote-sensing tiles, for tests.
"""

Row = dict[str, Any]
MakeRows = Callable[..., list[Row]]
MakeExport = Callable[..., Path]


def sample_row(i: int, split: str = "train", **overrides: Any) -> Row:
    """One exporter-style sample row; ``overrides`` replace columns."""
    tile = f"tile_{i:04d}"
    row: Row = {
        "id": f"{tile}-s0",
        "tile_id": tile,
        "image": {"bytes": bytes([i % 256]) * 16 + b"PNG", "path": f"images/{tile}.png"},
        "width": 64,
        "height": 64,
        "caption": f"A small harbour with {i % 7 + 1} boats.",
        "gcg_caption": f"A small harbour with <p>{i % 7 + 1} boats</p> [SEG].",
        "phrases": [f"{i % 7 + 1} boats"],
        "masks": [f"rle:{i}:{i + 3}"],
        "categories": ["ship"],
        "crs": "EPSG:32633",
        "transform": [0.5, 0.0, 500000.0 + 32 * i, 0.0, -0.5, 4000000.0],
        "gsd": 0.5 if split == "train" else 0.3,
        "source_image": f"P{i // 10:04d}",
        "review_status": "accepted" if i % 3 == 0 else "unreviewed",
        "flags": [] if i % 2 else ["low_confidence"],
        "lmm_model": "gpt-4o-2024-08-06",
        "prompt_version": "gcg-v3",
    }
    row.update(overrides)
    return row


@pytest.fixture
def sample_schema() -> pa.Schema:
    """The exporter's sample parquet schema used by the fixtures."""
    return SAMPLE_SCHEMA


@pytest.fixture
def make_rows() -> MakeRows:
    """``make_rows(n, split="train", start=0, **overrides)`` -> ``n`` sample rows with ids from ``start``."""

    def make(n: int, split: str = "train", start: int = 0, **overrides: Any) -> list[Row]:
        return [sample_row(i, split, **overrides) for i in range(start, start + n)]

    return make


def write_export(
    root: Path,
    splits: dict[str, list[Row]],
    *,
    card: str | None = CARD,
    export_json: dict[str, Any] | None = None,
    shards: int = 1,
    schema: pa.Schema = SAMPLE_SCHEMA,
    side_files: bool = True,
) -> Path:
    """Write an EXPORT folder: parquet shards, COCO / GeoPixel side files, card and export.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    for split, rows in splits.items():
        per_shard = max(1, -(-len(rows) // shards))
        for index in range(shards):
            chunk = rows[index * per_shard : (index + 1) * per_shard]
            table = pa.Table.from_pylist(chunk, schema=schema)
            pq.write_table(table, root / "data" / f"{split}-{index:05d}-of-{shards:05d}.parquet")
        if not side_files:
            continue
        coco = {"images": [{"id": r["tile_id"], "file_name": r["image"]["path"]} for r in rows]}
        (root / "coco").mkdir(exist_ok=True)
        (root / "coco" / f"instances_{split}.json").write_text(json.dumps(coco))
        (root / "coco" / f"captions_{split}.json").write_text(json.dumps({"annotations": len(rows)}))
        tiles = root / "geopixel" / split
        tiles.mkdir(parents=True, exist_ok=True)
        (root / "geopixel" / f"GeoPixelD_{split}.json").write_text(json.dumps([r["id"] for r in rows]))
        for r in rows:
            (tiles / f"{r['tile_id']}.json").write_text(json.dumps({"caption": r["caption"]}))
            (tiles / f"{r['tile_id']}.png").write_bytes(r["image"]["bytes"])
    if card is not None:
        (root / "README.md").write_text(card)
    meta = {
        "name": "tiny",
        "splits": {s: len(r) for s, r in splits.items()},
        "crs": ["EPSG:32633"],
        "gsd": [0.3, 0.5],
        "bbox_wgs84": [14.9, 36.1, 15.1, 36.2],
        "review": {},
        "lmm_models": ["gpt-4o-2024-08-06"],
        "prompt_versions": ["gcg-v3"],
    }
    meta.update(export_json or {})
    (root / "export.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def make_export(tmp_path: Path) -> MakeExport:
    """``make_export(label, splits, **kwargs)`` writes ``tmp_path/exports/label`` (see ``write_export``)."""

    def make(label: str, splits: dict[str, list[Row]], **kwargs: Any) -> Path:
        return write_export(tmp_path / "exports" / label, splits, **kwargs)

    return make


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A local store folder (not yet created; publish creates it)."""
    return tmp_path / "store"


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip one byte of a file in place (the middle byte by default)."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def flip() -> Callable[..., None]:
    """The :func:`flip_byte` helper as a fixture."""
    return flip_byte


# -- loopback S3 (moto server) -----------------------------------------------------------------------


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Start ``python -m moto.server`` on a free loopback port; yield its URL; stop it by PID."""
    for module in ("moto", "moto.server", "s3fs", "boto3"):
        pytest.importorskip(module, reason=f"S3 tests need moto[server] and s3fs ({module} not importable)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **AWS_TEST_ENV},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with code {proc.returncode} before accepting connections")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {endpoint} within 30 s")
                time.sleep(0.1)
        yield endpoint
    finally:
        stop_process(proc)


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket on the moto server, with dummy AWS credentials set for the test."""
    import boto3

    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    name = f"releases-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name
