"""Benchmark of the GeoParquet layers: peak RSS and throughput at two dataset sizes.

``python -m pipeline.geo.bench [--images 10 40]`` generates synthetic prepared folders (georeferenced
images of 4 × 4 tiles of 256 px, 40 rectangular and elliptical instances per tile, written image by image)
and runs :func:`~pipeline.geo.layers.write_geo_layers` on each in a fresh process, printing instance pieces,
seconds, pieces per second and peak RSS (MB). Streaming means the peak stays flat as the dataset grows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..rle import encode_full

TILE = 256
GRID = 4
PER_TILE = 40
_TILES = pa.schema([("tile_id", pa.string()), ("image_id", pa.string()), ("source_path", pa.string()),
                    ("x0", pa.int32()), ("y0", pa.int32()), ("x1", pa.int32()), ("y1", pa.int32()),
                    ("width", pa.int32()), ("height", pa.int32()), ("crs", pa.string()),
                    ("transform", pa.list_(pa.float64())), ("gsd", pa.float64()), ("tile_path", pa.string())])
_RLE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
_INSTANCES = pa.schema([("tile_id", pa.string()), ("image_id", pa.string()), ("instance_id", pa.int64()),
                        ("category", pa.string()), ("category_name", pa.string()), ("rle", _RLE),
                        ("area", pa.float64()), ("visible_fraction", pa.float64()), ("truncated", pa.bool_()),
                        ("geometry_kind", pa.string()), ("mask_source", pa.string()), ("source_ref", pa.string())])


def make_dataset(root: Path, images: int, seed: int = 0) -> int:
    """Write ``tiles.parquet`` and ``instances.parquet`` for ``images`` synthetic scenes; returns pieces."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:TILE, 0:TILE]
    pieces = 0
    with pq.ParquetWriter(root / "tiles.parquet", _TILES) as tw, pq.ParquetWriter(root / "instances.parquet", _INSTANCES) as iw:
        for i in range(images):
            image_id = f"S{i:05d}"
            east, north = 400000.0 + 2000 * i, 3280000.0
            tiles, insts = [], []
            for ty in range(GRID):
                for tx in range(GRID):
                    x0, y0 = tx * TILE, ty * TILE
                    tile_id = f"{image_id}_{y0}_{y0 + TILE}_{x0}_{x0 + TILE}"
                    tiles.append({"tile_id": tile_id, "image_id": image_id, "source_path": f"{image_id}.tif",
                                  "x0": x0, "y0": y0, "x1": x0 + TILE, "y1": y0 + TILE, "width": TILE,
                                  "height": TILE, "crs": "EPSG:32617",
                                  "transform": [0.3, 0.0, east + 0.3 * x0, 0.0, -0.3, north - 0.3 * y0],
                                  "gsd": 0.3, "tile_path": f"tiles/{tile_id}.png"})
                    for k in range(PER_TILE):
                        cx, cy = rng.uniform(0, TILE, 2)
                        rx, ry = rng.uniform(3, 25, 2)
                        if k % 2:
                            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
                        else:
                            mask = (abs(xx - cx) <= rx) & (abs(yy - cy) <= ry)
                        if not mask.any():
                            continue
                        rle = encode_full(mask)
                        insts.append({"tile_id": tile_id, "image_id": image_id, "instance_id": k + 1,
                                      "category": "c", "category_name": f"class {k % 5}", "rle": rle,
                                      "area": float(mask.sum()), "visible_fraction": 1.0, "truncated": False,
                                      "geometry_kind": "mask", "mask_source": "annotation", "source_ref": "bench"})
            tw.write_table(pa.Table.from_pylist(tiles, schema=_TILES))
            iw.write_table(pa.Table.from_pylist(insts, schema=_INSTANCES))
            pieces += len(insts)
    return pieces


_CHILD = """
import json, resource, sys, time
start = time.perf_counter()
if sys.argv[3] == "ours":
    from pipeline.geo import write_geo_layers
    rows = write_geo_layers(sys.argv[1], sys.argv[2]).layers[0].instance_rows
else:  # the peer: everything in memory, then geopandas writes GeoParquet with the bbox covering
    import geopandas, pyarrow.parquet as pq
    from rasterio.transform import Affine
    from pipeline.geo.vectorize import mask_outline
    tiles = {t["tile_id"]: t for t in pq.read_table(sys.argv[1] + "/tiles.parquet").to_pylist()}
    inst = pq.read_table(sys.argv[1] + "/instances.parquet").to_pylist()
    geoms = [mask_outline(r["rle"], Affine(*tiles[r["tile_id"]]["transform"])) for r in inst]
    for r in inst:
        del r["rle"]
    frame = geopandas.GeoDataFrame(inst, geometry=geoms, crs="EPSG:32617")
    frame.to_parquet(sys.argv[2] + ".parquet", write_covering_bbox=True)
    rows = len(frame)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(root: Path, out: Path, who: str = "ours") -> dict[str, float]:
    """Run ``ours`` (write_geo_layers) or the in-memory geopandas ``peer`` on ``root`` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(out), who],
                          capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs=2, default=[10, 40], help="Two dataset sizes (images).")
    args = parser.parse_args(argv)
    try:
        import geopandas  # noqa: F401
        peers = ["ours", "peer"]
    except ImportError:
        peers = ["ours"]
    with tempfile.TemporaryDirectory(prefix="geo-bench-") as tmp:
        results: dict[tuple[str, int], dict[str, float]] = {}
        pieces: dict[int, int] = {}
        for n in args.images:
            pieces[n] = make_dataset(Path(tmp) / f"d{n}", n)
            for who in peers:
                r = results[(who, n)] = measure(Path(tmp) / f"d{n}", Path(tmp) / f"o{who}{n}", who)
                assert int(r["rows"]) == pieces[n], (who, r, pieces[n])
        print("GeoParquet instance layer: ours = write_geo_layers (streamed); peer = all rows in memory, "
              "geopandas to_parquet")
        print(f"  {'who':5s} {'images':>6s} {'pieces':>8s} {'seconds':>8s} {'pieces/s':>9s} {'peak MB':>8s}")
        for (who, n), r in results.items():
            print(f"  {who:5s} {n:6d} {pieces[n]:8d} {r['seconds']:8.2f} {pieces[n] / r['seconds']:9.0f} "
                  f"{r['peak_mb']:8.1f}")
        small, large = args.images
        for who in peers:
            a, b = results[(who, small)], results[(who, large)]
            print(f"  {who}: {pieces[large] / pieces[small]:.1f}× the pieces → peak RSS "
                  f"{b['peak_mb'] / a['peak_mb']:.2f}× ({a['peak_mb']:.0f} → {b['peak_mb']:.0f} MB)")
        if "peer" in peers:
            for n in args.images:
                print(f"  {n} images: ours/peer speed {results[('peer', n)]['seconds'] / results[('ours', n)]['seconds']:.2f}×, "
                      f"peak RSS {results[('ours', n)]['peak_mb'] / results[('peer', n)]['peak_mb']:.2f}× the peer's")


if __name__ == "__main__":
    main()
