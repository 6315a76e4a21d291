"""Memory guard: publishing and pulling hash in chunks and read shards in small batches, so peak RSS does
not grow with the number of samples (measured in a subprocess at 16 and 128 samples)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.export.hf import ShardWriter, dataset_card
from pipeline.scale.measure import run_measured

ROOT = Path(__file__).resolve().parents[3]
IMAGE_BYTES = 512 * 1024  # incompressible, about a real 800² tile PNG


def _rows(n: int) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(n)
    for i in range(n):
        tile = f"T{i:05d}_0_800_0_800"
        yield {
            "id": tile, "tile_id": tile, "image": {"bytes": rng.bytes(IMAGE_BYTES), "path": f"{tile}.png"},
            "width": 800, "height": 800, "caption": "Two ships.", "gcg_caption": "Two <p> ships </p> [SEG].",
            "phrases": [{"text": "ships", "start": 4, "end": 9, "instance_ids": [1, 2], "category": "ship",
                         "kind": "cluster"}],
            "masks": [{"size": [800, 800], "counts": "PPYo0" * 20}], "categories": ["ship"], "crs": None,
            "transform": None, "gsd": 0.5, "source_image": f"S{i // 9}.png", "image_id": f"S{i // 9}",
            "split": "train", "review_status": "unreviewed", "reviewer": None, "decided_at": None, "flags": [],
            "max_severity": None, "lmm_model": "m", "prompt_version": "p",
        }


def _export(root: Path, n: int) -> Path:
    """An EXPORT folder of ``n`` samples in one shard, plus a per-sample side file (as GeoPixel's)."""
    shards = ShardWriter("train", root / "data", 1 << 30, row_group_rows=8)  # the exporter's rows, 4 MB groups
    for row in _rows(n):
        shards.add(row)
    shards.close()
    side = root / "geopixel" / "train"
    side.mkdir(parents=True)
    for i in range(n):
        (side / f"T{i:05d}.json").write_text(json.dumps({"id": i, "polygons": [[[0, 0], [5, 0], [5, 5]]]}))
    (root / "README.md").write_text(dataset_card("mem", {"train": n}, {}))
    (root / "export.json").write_text(json.dumps({"name": "mem", "splits": {"train": n}}))
    return root


def _peaks(tmp: Path, n: int) -> tuple[float, float]:
    export = _export(tmp / f"export{n}", n)
    gp = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.argv[0] = 'geopixeld'; main()"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    store, to = tmp / f"store{n}", tmp / f"pulled{n}"
    publish = run_measured([*gp, "release", "publish", str(export), "--name", "mem", "--version", "1.0.0",
                            "--store", str(store)], cwd=ROOT, env=env, timeout=600).check("publish")
    pull = run_measured([*gp, "release", "pull", "mem==1.0.0", "--store", str(store), "--to", str(to)],
                        cwd=ROOT, env=env, timeout=600).check("pull")
    assert len(list((to / "mem" / "1.0.0" / "geopixel" / "train").iterdir())) == n
    return publish.peak_mb, pull.peak_mb


def test_publish_and_pull_memory_does_not_grow_with_samples(tmp_path: Path) -> None:
    """8× the samples (8 MB → 64 MB of shard): the old 4096-row batches held the whole shard, twice."""
    publish_small, pull_small = _peaks(tmp_path, 16)
    publish_large, pull_large = _peaks(tmp_path, 128)
    assert publish_large - publish_small < 30 and publish_large < 1.25 * publish_small, (publish_small, publish_large)
    assert pull_large - pull_small < 30 and pull_large < 1.25 * pull_small, (pull_small, pull_large)
