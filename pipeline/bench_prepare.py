"""Prepare against the tool it replaces, side by side: whole processes, cold starts, alternating runs.

Two comparisons, each printed as a table of medians and the ratio of tiles per second:

* **iSAID** — ``geopixeld prepare SRC --format isaid`` against a devkit-equivalent tiler written here
  (the iSAID devkit's ``split.py``: read the image and its two instance masks with OpenCV, cut the
  devkit's 800/600 grid, write each image tile and both mask tiles with OpenCV's default PNG settings).
* **raster** — ``geopixeld prepare SRC --format raster`` on a generated GeoTIFF of a few thousand
  pixels a side against a tiler that reads each window with rasterio and writes it with OpenCV.

Each run is a fresh interpreter started from the command line (imports included, as a user pays them);
the two tools alternate run by run so both see the same machine load. Peak memory is sampled every 50 ms
over the whole process tree (prepare's worker processes included) as the sum of proportional set sizes
(pages a forked worker shares with its parent count once), and ``ru_maxrss`` of the largest single
process is reported too. After the runs, the decoded pixels of every prepare tile are compared
with the peer's tile of the same window (they must be equal: both are lossless).

Run: ``python -m pipeline.bench_prepare [--runs 5] [--raster-side 4000] [--copies 1]``.
``--copies N`` repeats the bundled iSAID images N times under new image ids (a larger set, where the
fixed start-up cost of both tools weighs less).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ISAID_SAMPLES = ROOT / "tests" / "data" / "isaid"
GEOPIXELD = Path(sys.executable).with_name("geopixeld")

# The iSAID devkit's split.py, as a user would run it: OpenCV everywhere, default PNG settings.
DEVKIT_PEER = textwrap.dedent(
    """
    import os, sys
    import cv2

    src, out = sys.argv[1], sys.argv[2]
    size, stride = 800, 600
    os.makedirs(out, exist_ok=True)
    n = 0
    for name in sorted(os.listdir(src)):
        if not name.endswith(".png") or "_instance_" in name:
            continue
        stem = name[:-4]
        img = cv2.imread(os.path.join(src, name))
        color = cv2.imread(os.path.join(src, stem + "_instance_color_RGB.png"))
        ids = cv2.imread(os.path.join(src, stem + "_instance_id_RGB.png"))
        h, w = img.shape[:2]
        done = set()
        for y in range(0, h, stride):
            for x in range(0, w, stride):
                y0, x0, y1, x1 = y, x, y + size, x + size
                if y1 > h:
                    y0, y1 = max(0, h - size), h
                if x1 > w:
                    x0, x1 = max(0, w - size), w
                tile = f"{stem}_{y0}_{y1}_{x0}_{x1}"
                if tile in done:
                    continue
                done.add(tile)
                cv2.imwrite(os.path.join(out, tile + ".png"), img[y0:y1, x0:x1])
                cv2.imwrite(os.path.join(out, tile + "_instance_color_RGB.png"), color[y0:y1, x0:x1])
                cv2.imwrite(os.path.join(out, tile + "_instance_id_RGB.png"), ids[y0:y1, x0:x1])
                n += 1
    print(n)
    """
)

# Windows read with rasterio, written as PNG with OpenCV: the obvious script for a GeoTIFF.
RASTER_PEER = textwrap.dedent(
    """
    import os, sys
    import cv2
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    src, out = sys.argv[1], sys.argv[2]
    size, stride = 800, 600
    os.makedirs(out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(src))[0]

    def starts(n):
        s = list(range(0, max(1, n - size), stride)) + [max(0, n - size)]
        return sorted(set(s))

    n = 0
    with rasterio.open(src) as ds:
        for y0 in starts(ds.height):
            for x0 in starts(ds.width):
                w, h = min(size, ds.width - x0), min(size, ds.height - y0)
                rgb = ds.read([1, 2, 3], window=Window(x0, y0, w, h))
                bgr = np.ascontiguousarray(np.moveaxis(rgb, 0, -1)[:, :, ::-1])
                cv2.imwrite(os.path.join(out, f"{stem}_{y0}_{y0 + h}_{x0}_{x0 + w}.png"), bgr)
                n += 1
    print(n)
    """
)


@dataclass
class Run:
    """One whole-process run: wall seconds, tiles written, peak memory (MB)."""

    seconds: float
    tiles: int
    tree_peak_mb: float  # sampled PSS of the process and all its children, summed (shared pages once)
    max_rss_mb: float  # ru_maxrss of the largest single process of the tree


@dataclass
class Side:
    name: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    @property
    def tiles_per_s(self) -> float:
        return self.median("tiles") / self.median("seconds")


def run_process(cmd: list[str], count_tiles: Path | None = None, cwd: Path | None = None) -> Run:
    """Run ``cmd`` to completion; time it, sample the tree's RSS every 5 ms, read its ``ru_maxrss``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=cwd)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, sum(_pss_bytes(p) for p in _tree(proc.pid)))
            time.sleep(SAMPLE_S)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    tiles = len(list(count_tiles.glob("*.png"))) if count_tiles is not None else int(stdout.split()[-1])
    # ru_maxrss of a reaped child covers the child and its own reaped children: the largest one.
    return Run(seconds, tiles, peak / 2**20, usage.ru_maxrss / 1024)


SAMPLE_S = 0.05  # memory sampling period (smaps_rollup reads cost ~1 ms a process: keep the sampler light)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/PID/task/*/children (psutil's scan of every process when
    that file is missing)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            import psutil

            try:
                return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
            except psutil.Error:
                return out
        except OSError:
            continue
    return out


def _pss_bytes(pid: int) -> int:
    """Proportional set size of a process: pages shared with others (a forked worker's parent) are split
    between them, so summing a process tree counts each page once. Falls back to RSS without smaps."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def compare_tiles(prepared: Path, peer: Path) -> tuple[int, int]:
    """Decode every prepare tile and the peer's tile of the same name; returns (equal, compared)."""
    import cv2
    import numpy as np

    equal = compared = 0
    for tile in sorted((prepared / "tiles").glob("*.png")):
        other = peer / tile.name
        if not other.exists():
            continue
        a = cv2.imread(str(tile), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(other), cv2.IMREAD_UNCHANGED)
        compared += 1
        equal += int(a is not None and b is not None and a.shape == b.shape and np.array_equal(a, b))
    return equal, compared


def side_by_side(
    label: str, source: Path, fmt: str, peer_code: str, runs: int, workdir: Path, baseline: Path | None = None
) -> dict[str, object]:
    """Alternate prepare and the peer ``runs`` times each on ``source``; medians, ratio, pixel check.

    ``baseline``: another checkout of this repository whose prepare runs as a third side (before/after).
    """
    peer_script = workdir / f"peer_{fmt}.py"
    peer_script.write_text(peer_code)
    prep, peer, before = Side("prepare"), Side("peer"), Side("before")
    sides = [prep, peer] + ([before] if baseline is not None else [])
    for k in range(runs):
        for side in sides[k % len(sides):] + sides[: k % len(sides)]:
            out = workdir / f"{fmt}_{side.name}"
            shutil.rmtree(out, ignore_errors=True)
            args = ["prepare", str(source), "--format", fmt, "--out", str(out)]
            if side is prep:
                side.runs.append(run_process([str(GEOPIXELD), *args], count_tiles=out / "tiles"))
            elif side is before:
                cmd = [sys.executable, "-m", "pipeline.cli", *args]
                side.runs.append(run_process(cmd, count_tiles=out / "tiles", cwd=baseline))
            else:
                side.runs.append(run_process([sys.executable, str(peer_script), str(source), str(out)]))
    equal, compared = compare_tiles(workdir / f"{fmt}_prepare", workdir / f"{fmt}_peer")
    row: dict[str, object] = {
        "case": label,
        "tiles": int(prep.median("tiles")),
        "prepare_s": prep.median("seconds"),
        "peer_s": peer.median("seconds"),
        "prepare_tiles_per_s": prep.tiles_per_s,
        "peer_tiles_per_s": peer.tiles_per_s,
        "ratio": prep.tiles_per_s / peer.tiles_per_s,
        "prepare_peak_mb": prep.median("tree_peak_mb"),
        "prepare_max_rss_mb": prep.median("max_rss_mb"),
        "peer_peak_mb": peer.median("tree_peak_mb"),
        "tiles_equal": f"{equal}/{compared}",
        "prepare_runs_s": [round(r.seconds, 3) for r in prep.runs],
        "peer_runs_s": [round(r.seconds, 3) for r in peer.runs],
    }
    if baseline is not None:
        row.update(
            before_s=before.median("seconds"), before_tiles_per_s=before.tiles_per_s,
            before_ratio=before.tiles_per_s / peer.tiles_per_s, before_peak_mb=before.median("tree_peak_mb"),
            before_max_rss_mb=before.median("max_rss_mb"), before_runs_s=[round(r.seconds, 3) for r in before.runs],
        )
    return row


def isaid_copies(dest: Path, copies: int) -> Path:
    """The bundled iSAID images, ``copies`` times under new ids (P0003 → P0003, P10003, P20003...)."""
    if copies <= 1:
        return ISAID_SAMPLES
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        for f in ISAID_SAMPLES.glob("P*.png"):
            name = f.name if k == 0 else f"P{k}{f.name[1:]}"
            shutil.copyfile(f, dest / name)
    return dest


def make_geotiff(path: Path, side: int) -> Path:
    from .bench import make_big_geotiff

    return make_big_geotiff(path, side)


def format_table(rows: list[dict[str, object]]) -> str:
    cols = [("case", "case", "{!s:30s}"), ("tiles", "tiles", "{!s:>5s}"), ("prepare_s", "prep s", "{:7.3f}"),
            ("peer_s", "peer s", "{:7.3f}"), ("prepare_tiles_per_s", "prep t/s", "{:8.1f}"),
            ("peer_tiles_per_s", "peer t/s", "{:8.1f}"), ("ratio", "ratio", "{:6.2f}"),
            ("prepare_peak_mb", "prep MB", "{:7.0f}"), ("prepare_max_rss_mb", "maxrss", "{:6.0f}"),
            ("peer_peak_mb", "peer MB", "{:7.0f}"), ("tiles_equal", "px equal", "{!s:>8s}")]
    if any("before_s" in r for r in rows):
        cols += [("before_s", "before s", "{:8.3f}"), ("before_ratio", "b.ratio", "{:7.2f}"),
                 ("before_peak_mb", "b.MB", "{:5.0f}")]
    widths = [len(f.format(rows[0][k])) if rows else len(h) for k, h, f in cols]
    head = " ".join(h.rjust(w) if k != "case" else h.ljust(w) for (k, h, _), w in zip(cols, widths, strict=True))
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(" ".join(f.format(r[k]) if k in r else "-" for k, _, f in cols))
    return "\n".join(lines)


def run_bench(
    runs: int = 5,
    raster_side: int = 4000,
    copies: int = 1,
    cache: Path | None = None,
    baseline: Path | None = None,
    cases: tuple[str, ...] = ("isaid", "raster"),
) -> dict[str, object]:
    """The comparisons named in ``cases``; returns the rows (also printed)."""
    cache = cache or ROOT / ".bench"
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpxd-bench-prepare-") as tmp:
        work = Path(tmp)
        if "isaid" in cases:
            src = isaid_copies(work / "isaid_src", copies)
            n = len([p for p in src.glob("P*.png") if "_instance_" not in p.name])
            rows.append(side_by_side(f"iSAID sample ({n} images)", src, "isaid", DEVKIT_PEER, runs, work, baseline))
        if "raster" in cases:
            tif = make_geotiff(cache / f"raster_{raster_side}.tif", raster_side)
            rows.append(side_by_side(f"GeoTIFF {raster_side}² (raster)", tif, "raster", RASTER_PEER, runs, work, baseline))
    print(f"\nprepare vs peer: whole processes, cold start, {runs} alternating runs each, medians "
          f"(ratio = prepare tiles/s ÷ peer tiles/s; MB = peak PSS of the process tree, maxrss = largest process; {os.cpu_count()} CPUs)")
    print(format_table(rows))
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs of each tool (alternating)")
    parser.add_argument("--raster-side", type=int, default=4000, help="side of the generated GeoTIFF in px")
    parser.add_argument("--copies", type=int, default=1, help="repeat the iSAID sample images this many times")
    parser.add_argument("--baseline", type=Path, help="another checkout whose prepare runs as a third side")
    parser.add_argument("--cases", default="isaid,raster", help="comma-separated: isaid, raster")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    cases = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    result = run_bench(args.runs, args.raster_side, args.copies, baseline=args.baseline, cases=cases)
    if args.json:
        import json

        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
