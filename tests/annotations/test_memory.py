"""The review server's memory does not grow with the number of samples (issue 13's guard for the app).

The real server (``python -m annotations.cli serve``) runs as a subprocess on datasets of N and 8N
samples, each with 24 mask strings of ~1.5 kB (about 36 kB a sample, as many masks as a busy iSAID
tile has), written in row groups of 64 samples. A client logs in, walks and decides part of the queue,
opens samples, reads the queue summary and facets; then the server's peak RSS (``VmHWM``) is read from
``/proc``. The whole samples table is ~11 MB at N and ~88 MB at 8N, so a server that held it would
show it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotations.samples import INSTANCES_SCHEMA, SAMPLES_SCHEMA

N = 300
MASKS_PER_SAMPLE = 24
RLE_CHARS = "".join(chr(c) for c in range(48, 112))

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc (Linux)")


def write_big_dataset(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` samples with heavy masks (streamed out in row groups of 64); one instance per sample."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    severities = ("none", "info", "warning", "error")
    with pq.ParquetWriter(root / "samples.parquet", SAMPLES_SCHEMA) as writer:
        for start in range(0, n, 64):
            rows = []
            for i in range(start, min(n, start + 64)):
                severity = severities[i % 4]
                masks = [
                    {"size": [512, 512], "counts": "".join(rng.choices(RLE_CHARS, k=1500))}
                    for _ in range(MASKS_PER_SAMPLE)
                ]
                phrases = [
                    {
                        "text": f"thing {k}",
                        "start": 0,
                        "end": 1,
                        "instance_ids": [k],
                        "category": "ship",
                        "kind": "instance",
                    }
                    for k in range(MASKS_PER_SAMPLE)
                ]
                rows.append(
                    {
                        "tile_id": f"S{i:06d}_0_512_0_512",
                        "image_id": f"S{i:06d}",
                        "tile_path": f"tiles/S{i:06d}.png",
                        "width": 512,
                        "height": 512,
                        "gcg_caption": " ".join("<p> thing </p> [SEG]" for _ in range(MASKS_PER_SAMPLE)),
                        "caption": "thing " * MASKS_PER_SAMPLE,
                        "phrases": phrases,
                        "masks": masks,
                        "flags": []
                        if severity == "none"
                        else [{"code": f"c{i % 7}", "severity": severity, "detail": "x"}],
                        "max_severity": severity,
                    }
                )
            writer.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA))
    instances = [{"tile_id": f"S{i:06d}_0_512_0_512", "instance_id": 1, "category": "ship"} for i in range(n)]
    pq.write_table(
        pa.Table.from_pylist(instances, schema=INSTANCES_SCHEMA),
        root / "instances.parquet",
        row_group_size=256,
    )
    return root


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def serve_and_measure(data: Path, tools: Any) -> dict[str, float]:
    tools.cli("add-user", "alice", "--data", str(data), "--password-stdin", stdin=f"{tools.PASSWORD}\n")
    with tools.serve(data) as (base, process):
        started = peak_rss_mb(process.pid)
        with httpx.Client(base_url=base, timeout=60) as client:
            login = client.post("/api/login", json={"name": "alice", "password": tools.PASSWORD})
            assert login.status_code == 200, login.text
            client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            tile = None
            for _ in range(30):
                tile = client.get("/api/queue/next", params={"after": tile} if tile else {}).json()["tile_id"]
                sample = client.get(f"/api/samples/{tile}").json()
                assert len(sample["masks"]) == MASKS_PER_SAMPLE and sample["priors"][0]["tile_id"] == tile
                decision = client.post(
                    f"/api/samples/{tile}/decision", json={"action": "accept", "base_revision": 0}
                )
                assert decision.status_code == 200
            last = client.get("/api/samples/S000001_0_512_0_512")  # a sample at the other end of the file
            assert last.status_code == 200
            assert client.get("/api/queue/summary").json()["total"] > 0
            assert client.get("/api/queue/facets").status_code == 200
        return {"started": started, "peak": peak_rss_mb(process.pid)}


def test_review_server_memory_is_flat_from_n_to_8n(tmp_path, tools):
    small = serve_and_measure(write_big_dataset(tmp_path / "small", N), tools)
    big = serve_and_measure(write_big_dataset(tmp_path / "big", 8 * N, seed=1), tools)
    samples_mb = (tmp_path / "big" / "samples.parquet").stat().st_size / 2**20
    print(
        f"peak RSS: {small['peak']:.1f} MB at {N} samples, {big['peak']:.1f} MB at {8 * N} ({samples_mb:.0f} MB table)"
    )
    assert samples_mb > 50  # the table is big enough that holding it would show
    assert big["peak"] <= small["peak"] * 1.10 + 5, (small, big)
