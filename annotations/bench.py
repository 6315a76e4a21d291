"""Benchmark: time to first render of a 4096² tile with 500 masks in headless Chromium.

Builds a synthetic data directory (one tile, by default 4096x4096 cut from the bundled iSAID image,
with 500 convex masks of realistic sizes), starts the real review server, logs in, and opens the
sample several times. "Time to first render" is ``window.__gpxRendered.t``: milliseconds from
navigation start to the moment the page has decoded the image, decoded every RLE in JavaScript, drawn
all masks on the canvas and let two animation frames pass. The first run has the browser cache
disabled (cold); the others reuse the cached image (warm).

For comparison it also times the alternative design in Python: the server decoding every RLE into a
label image and encoding that as PNG (work the browser-side decoder avoids entirely).

Run: ``python -m annotations.bench [--size 4096] [--masks 500] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.loopback import free_port, stop_process

from .browser import open_chrome
from .samples import INSTANCES_SCHEMA, SAMPLES_SCHEMA

REPO = Path(__file__).resolve().parents[1]
ISAID = REPO / "tests" / "data" / "isaid" / "P0003.png"
USER, PASSWORD = "bench", "bench passphrase"
TILE_IDS = ("bench_a", "bench_b")


def _tile_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size``² RGB image: the bundled aerial image repeated, or smooth noise without it."""
    if ISAID.is_file():
        with Image.open(ISAID) as source:
            base = np.asarray(source.convert("RGB"))
        reps = (size // base.shape[0] + 1, size // base.shape[1] + 1, 1)
        return np.tile(base, reps)[:size, :size].copy()
    coarse = rng.integers(0, 255, size=(size // 16 + 1, size // 16 + 1, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((16, 16, 1), dtype=np.uint8))[:size, :size]


def ellipse_rle(size: int, cx: float, cy: float, a: float, b: float, angle: float) -> dict[str, Any]:
    """COCO compressed RLE of a filled rotated ellipse, built from its crop (never a full-size array)."""
    extent = max(a, b)
    x0, x1 = max(0, int(cx - extent)), min(size, int(cx + extent) + 1)
    y0, y1 = max(0, int(cy - extent)), min(size, int(cy + extent) + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    dx, dy = xs - cx, ys - cy
    cos, sin = np.cos(angle), np.sin(angle)
    crop = ((dx * cos + dy * sin) / a) ** 2 + ((-dx * sin + dy * cos) / b) ** 2 <= 1.0
    counts: list[int] = []
    position = 0
    for column in range(crop.shape[1]):
        rows = np.flatnonzero(crop[:, column])
        if rows.size == 0:
            continue
        start = (x0 + column) * size + y0 + int(rows[0])  # convex: one run per column
        counts += [start - position, int(rows[-1] - rows[0] + 1)]
        position = start + counts[-1]
    counts.append(size * size - position)
    rle = mask_utils.frPyObjects({"size": [size, size], "counts": counts}, size, size)
    return {"size": [size, size], "counts": rle["counts"].decode()}


def _bench_row(
    tile_id: str, size: int, n_masks: int, rng: np.random.Generator
) -> tuple[dict[str, Any], list[Any]]:
    caption, gcg, phrases, masks, instances = "Benchmark tile. ", "Benchmark tile. ", [], [], []
    for index in range(n_masks):
        scale = rng.choice([8.0, 40.0, 250.0], p=[0.9, 0.09, 0.01])
        a, b = scale * rng.uniform(0.6, 1.4), scale * rng.uniform(0.3, 1.0)
        cx, cy = rng.uniform(a, size - a), rng.uniform(a, size - a)
        masks.append(ellipse_rle(size, cx, cy, a, b, rng.uniform(0, np.pi)))
        text = f"object-{index + 1}"
        phrases.append(
            {
                "text": text,
                "start": len(caption),
                "end": len(caption) + len(text),
                "instance_ids": [index + 1],
                "category": "small-vehicle",
                "kind": "instance",
            }
        )
        caption += text + ", "
        gcg += f"<p> {text} </p> [SEG], "
        instances.append(
            {
                "tile_id": tile_id,
                "instance_id": index + 1,
                "category": "small-vehicle",
                "bbox": [cx - a, cy - a, 2 * a, 2 * a],
                "area": float(np.pi * a * b),
                "visible_fraction": 1.0,
                "truncated": False,
                "position": "center",
                "size_class": "small",
                "length_m": None,
                "width_m": None,
                "orientation_deg": None,
                "mark": index + 1,
                "mark_x": cx,
                "mark_y": cy,
                "cluster_id": None,
            }
        )
    row = {
        "tile_id": tile_id,
        "image_id": "bench",
        "tile_path": f"tiles/{tile_id}.png",
        "marks_path": f"marks/{tile_id}.png",
        "width": size,
        "height": size,
        "gcg_caption": gcg,
        "caption": caption,
        "phrases": phrases,
        "masks": masks,
        "flags": [{"code": "bench", "severity": "warning", "detail": "benchmark sample"}],
        "max_severity": "warning",
        "lmm_model": "bench",
        "prompt_version": "bench",
    }
    return row, instances


def write_bench_dataset(root: Path, size: int = 4096, n_masks: int = 500, seed: int = 0) -> Path:
    """Two flagged tiles (``TILE_IDS``) with ``n_masks`` masks each: mostly vehicle-sized ellipses, some
    building-sized, a few field-sized."""
    rng = np.random.default_rng(seed)
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    (root / "marks").mkdir(parents=True, exist_ok=True)
    image = _tile_image(size, rng)
    rows, instances = [], []
    for number, tile_id in enumerate(TILE_IDS):
        tile = np.roll(image, number * size // 3, axis=1)  # two different pictures, same statistics
        Image.fromarray(tile).save(root / "tiles" / f"{tile_id}.png", compress_level=1)
        Image.fromarray(tile).save(root / "marks" / f"{tile_id}.png", compress_level=1)
        row, tile_instances = _bench_row(tile_id, size, n_masks, rng)
        rows.append(row)
        instances += tile_instances
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), root / "samples.parquet")
    pq.write_table(pa.Table.from_pylist(instances, schema=INSTANCES_SCHEMA), root / "instances.parquet")
    return root


def time_server_label_png(data_dir: Path) -> tuple[float, int]:
    """Seconds and bytes for the alternative design: the server decodes every RLE into a 16-bit label
    image (value = mask index + 1; overlaps keep the later mask) and encodes it as PNG. Runs are
    written straight into the column-major view, so the cost is the runs plus the PNG encoding."""
    from .validate import rle_counts

    masks = (
        pq.read_table(data_dir / "samples.parquet", columns=["masks"]).column("masks")[0].as_py()
    )  # first tile
    start = time.perf_counter()
    height, width = masks[0]["size"]
    column_major = np.zeros(height * width, dtype=np.uint16)  # flat index = x * height + y, as in COCO RLE
    for index, rle in enumerate(masks):
        position = 0
        for run, length in enumerate(rle_counts(rle["counts"])):
            if run % 2:
                column_major[position : position + length] = index + 1
            position += length
    label = column_major.reshape(width, height).T
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label)).save(buffer, format="PNG", compress_level=1)
    return time.perf_counter() - start, buffer.tell()


def _start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "annotations.cli", "serve", "--data", str(data_dir), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode() if process.stderr else ''}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.terminate()
    raise TimeoutError("server did not start")


def _rendered(browser: Any, tile_id: str, after: float) -> dict[str, Any]:
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(b: Any) -> Any:
        r = b.execute_script("return window.__gpxRendered || null")
        return r if r and r["tile"] == tile_id and r["t"] > after else None

    return WebDriverWait(browser, 120).until(ready)


def measure_browser(base_url: str, runs: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Page loads of the first bench tile (the first with the HTTP cache disabled), then in-page switches
    between the two tiles with j/k (what an annotator does all day)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    profile = tempfile.mkdtemp(prefix="gpx-bench-chrome-")
    browser = open_chrome(profile)
    loads, switches = [], []
    try:
        browser.get(base_url + "/login")
        browser.find_element(By.ID, "name").send_keys(USER)
        browser.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
        _rendered(browser, TILE_IDS[0], 0)
        for run in range(runs):
            browser.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": run == 0})
            browser.get("about:blank")
            browser.get(f"{base_url}/#tile={TILE_IDS[0]}")
            rendered = _rendered(browser, TILE_IDS[0], 0)
            rendered["redrawMs"] = browser.execute_script("return window.__gpxRedraw()")
            rendered["cold"] = run == 0
            loads.append(rendered)
        last = loads[-1]["t"]
        for run in range(2 * runs):
            key, tile_id = ("j", TILE_IDS[1]) if run % 2 == 0 else ("k", TILE_IDS[0])
            ActionChains(browser).send_keys(key).perform()
            rendered = _rendered(browser, tile_id, last)
            last = rendered["t"]
            switches.append(rendered)
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return loads, switches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="tile side in pixels")
    parser.add_argument("--masks", type=int, default=500, help="number of masks")
    parser.add_argument("--runs", type=int, default=5, help="page loads (the first one cold)")
    args = parser.parse_args(argv)

    from .auth import hash_password
    from .db import default_db_url, open_engine, users, utcnow

    workdir = Path(tempfile.mkdtemp(prefix="gpx-bench-"))
    process = None
    try:
        started = time.perf_counter()
        data_dir = write_bench_dataset(workdir / "data", args.size, args.masks)
        png_mb = (data_dir / "tiles" / f"{TILE_IDS[0]}.png").stat().st_size / 1e6
        print(
            f"dataset: two {args.size}x{args.size} tiles ({png_mb:.1f} MB PNG each), {args.masks} masks each, "
            f"built in {time.perf_counter() - started:.1f} s"
        )
        engine = open_engine(default_db_url(data_dir))
        with engine.begin() as conn:
            conn.execute(
                users.insert().values(
                    name=USER, password_hash=hash_password(PASSWORD), active=True, created_at=utcnow()
                )
            )
        engine.dispose()
        label_s, label_bytes = time_server_label_png(data_dir)
        print(
            f"alternative (server label PNG): {label_s * 1000:.0f} ms to decode + encode, "
            f"{label_bytes / 1e6:.2f} MB to send; chosen design sends RLE strings instead"
        )
        port = free_port()
        process = _start_server(data_dir, port)
        loads, switches = measure_browser(f"http://127.0.0.1:{port}", args.runs)
        print(
            "page loads (navigation start -> image decoded and all masks drawn), then the parts of opening:"
        )
        header = (
            "run",
            "cache",
            "first render",
            "json",
            "panel",
            "rle decode",
            "sprites",
            "draw",
            "image",
            "redraw",
        )
        print("  ".join(f"{h:>12}" for h in header))
        for index, r in enumerate(loads):
            cells = [str(index), "cold" if r["cold"] else "warm"]
            cells += [
                f"{r[k]:.0f} ms"
                for k in ("t", "fetchMs", "panelMs", "decodeMs", "packMs", "drawMs", "imageMs")
            ]
            cells.append(f"{r['redrawMs']:.1f} ms")
            print("  ".join(f"{c:>12}" for c in cells))
        warm = [r["t"] for r in loads if not r["cold"]]
        summary = f"time to first render: cold {loads[0]['t']:.0f} ms"
        if warm:
            summary += f", warm cache median {statistics.median(warm):.0f} ms"
        if switches:
            median = statistics.median(r["sinceOpen"] for r in switches)
            parts = {
                k: statistics.median(r[k] for r in switches)
                for k in ("decodeMs", "packMs", "drawMs", "imageMs")
            }
            summary += (
                f"; next/previous sample in the page (j/k) median {median:.0f} ms (rle decode "
                f"{parts['decodeMs']:.0f} ms, sprites {parts['packMs']:.0f} ms, draw {parts['drawMs']:.0f} ms, "
                f"image {parts['imageMs']:.0f} ms)"
            )
        print(summary)
    finally:
        if process is not None:
            stop_process(process)
        if not os.environ.get("GPX_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
