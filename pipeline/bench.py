"""`make bench`: throughput and memory of prepare, with ratios measured in one run.

1. Prepare on the bundled iSAID samples vs. the floor of decoding each source image once and
   encoding its tiles (tile PNG + set-of-marks PNG, same encoder settings): the ratio floor / prepare
   says how close prepare comes to the unavoidable I/O.
2. Peak RSS of prepare on a generated 20000 × 20000 3-band GeoTIFF (must stay under 1.5 GB: windowed
   reads keep one band of tile rows in memory).
3. Benchmarks of the other stages, when present (LMM client, LMM cost per object vs grouped, review app).

Run: ``python -m pipeline.bench [--quick]`` (``--quick`` uses a 6000² image for step 2).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from . import png
from .config import PrepareConfig
from .prepare import prepare
from .tiling import tile_grid

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "isaid"
RSS_LIMIT_MB = 1536


def floor_seconds(images: list[Path], out: Path, size: int = 800, overlap: int = 200) -> tuple[float, int]:
    """Decode each image once and encode every tile twice (tile and marks) as PNG."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    n = 0
    for path in images:
        with rasterio.open(path) as ds:
            arr = np.moveaxis(ds.read([1, 2, 3]), 0, -1)
        for t in tile_grid(path.stem, arr.shape[1], arr.shape[0], size, overlap):
            crop = np.ascontiguousarray(arr[t.y0 : t.y1, t.x0 : t.x1])
            for kind in ("t", "m"):
                png.write(out / f"{t.tile_id}.{kind}.png", crop)  # prepare's own PNG encoder
            n += 1
    return time.perf_counter() - start, n


def bench_prepare(repeats: int = 3) -> dict[str, float]:
    images = sorted(p for p in SAMPLES.glob("P*.png") if "_instance_" not in p.name)
    best_prep, best_floor, tiles, instances = float("inf"), float("inf"), 0, 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            s = prepare([SAMPLES], PrepareConfig(format="isaid"), Path(tmp) / "p", progress=False, resume=False)
            best_prep = min(best_prep, time.perf_counter() - t0)
            tiles, instances = s.tiles, s.instances
            fl, _ = floor_seconds(images, Path(tmp) / "f")
            best_floor = min(best_floor, fl)
    return {
        "images": len(images),
        "tiles": tiles,
        "instances": instances,
        "prepare_s": best_prep,
        "floor_s": best_floor,
        "tiles_per_s": tiles / best_prep,
        "ratio_floor_over_prepare": best_floor / best_prep,
    }


def bench_export(repeats: int = 3) -> dict[str, float]:
    """Export (GCG Parquet only) vs. a plain pyarrow write of the same rows, on the described samples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .describe import DescribeConfig, describe
    from .export import export

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d"
        prepare([SAMPLES], PrepareConfig(format="isaid"), data, progress=False)
        describe(data, DescribeConfig(), progress=False)
        best_export = best_plain = float("inf")
        for k in range(repeats):
            t0 = time.perf_counter()
            export(data, Path(tmp) / f"e{k}", formats=["gcg-parquet"], ratios=(1, 0, 0))
            best_export = min(best_export, time.perf_counter() - t0)
            # The floor: read the same inputs, build the same rows, one pyarrow write.
            t0 = time.perf_counter()
            samples = pq.read_table(data / "samples.parquet").to_pylist()
            rows = [{**s, "image": {"bytes": (data / s["tile_path"]).read_bytes(), "path": s["tile_path"]}} for s in samples]
            pq.write_table(pa.Table.from_pylist(rows), Path(tmp) / f"plain{k}.parquet", row_group_size=64)
            best_plain = min(best_plain, time.perf_counter() - t0)
        n = len(samples)
    return {"rows": n, "export_s": best_export, "plain_pyarrow_s": best_plain,
            "ratio_plain_over_export": best_plain / best_export}


def make_big_geotiff(path: Path, side: int) -> Path:
    """A ``side``² 3-band uint8 tiled GeoTIFF, written block row by block row (bounded memory)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "width": side, "height": side, "count": 3, "dtype": "uint8", "tiled": True,
        "blockxsize": 512, "blockysize": 512, "compress": "deflate", "crs": "EPSG:32617", "BIGTIFF": "IF_SAFER",
        "transform": rasterio.transform.from_origin(400000, 3300000, 0.3, 0.3),
    }
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        for y in range(0, side, 512):
            h = min(512, side - y)
            coarse = rng.integers(0, 255, size=(3, h // 16 + 1, side // 16 + 1), dtype=np.uint8)
            block = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :h, :side]
            ds.write(block, window=Window(0, y, side, h))
    tmp.replace(path)
    return path


CHILD = """
import resource, sys, time
from pipeline.config import PrepareConfig
from pipeline.prepare import prepare
t = time.perf_counter()
s = prepare([sys.argv[1]], PrepareConfig(format="raster"), sys.argv[2], progress=False, resume=False)
print(s.tiles, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_big(side: int, cache: Path) -> dict[str, float]:
    src = make_big_geotiff(cache / f"big_{side}.tif", side)
    out = Path(tempfile.mkdtemp(prefix="gpxd-big-"))
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out)], capture_output=True, text=True, check=True)
        tiles, seconds, rss_kb = proc.stdout.split()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rss_mb = int(rss_kb) / 1024
    return {
        "side": side, "tiles": int(tiles), "seconds": float(seconds), "peak_rss_mb": rss_mb,
        "limit_mb": RSS_LIMIT_MB, "raw_image_mb": side * side * 3 / 2**20, "within_limit": rss_mb < RSS_LIMIT_MB,
    }


def _table(title: str, rows: Mapping[str, object]) -> str:
    lines = [title, "-" * len(title)]
    for k, v in rows.items():
        lines.append(f"  {k:28s} {v:.3f}" if isinstance(v, float) else f"  {k:28s} {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller big-image case (6000²)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench", help="where the generated GeoTIFF is kept")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, object] = {}
    results["prepare_isaid"] = r1 = bench_prepare()
    print(_table("prepare on the iSAID samples (best of 3)", r1))
    results["export"] = r3 = bench_export()
    print(_table("export (GCG Parquet) vs plain pyarrow write (best of 3)", r3))
    results["prepare_big"] = r2 = bench_big(6000 if args.quick else 20000, args.cache)
    print(_table("prepare of a large GeoTIFF (peak RSS)", r2))
    for module in ("pipeline.bench_prepare", "pipeline.bench_fidelity", "pipeline.lmm.bench", "pipeline.bench_cost", "annotations.bench", "flows.bench", "pipeline.sam.bench", "geopixel.bench"):
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            print(f"\n== {module}: not run ({exc}) ==")
            continue
        print(f"\n== {module} ==", flush=True)
        runner = getattr(mod, "run_bench", None)
        out = runner() if runner is not None else mod.main([])
        if isinstance(out, dict):
            results[module] = out
            print(_table(module, {k: v for k, v in out.items() if not isinstance(v, dict | list)}))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
