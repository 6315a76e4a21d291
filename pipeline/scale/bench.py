"""``make bench-scale``: the whole build at N and 8N source images, each stage measured as a subprocess.

For each size the synthetic iSAID corpus (:mod:`pipeline.scale.corpus`) goes through the commands a user
runs — ``geopixeld prepare``, ``geopixeld describe`` (embedded offline describer), the build flow's
validation task, ``geopixeld export`` (every format), ``geopixeld release publish`` and ``release pull`` —
and then ``geopixeld review serve`` is started and its start page and queue fetched. Every stage is its
own process; wall seconds and peak RSS of its whole process tree (:mod:`pipeline.scale.measure`) and
tiles per second are printed, with the growth from N to 8N as ratios (8.0 is linear time; the aim is
RSS ≤ 1.25× and under 1.5 GB, time per tile within 1.2×). Once, at N, ``geopixeld build`` runs the
same corpus with ``--runner threads`` and with ``--runner dask`` (local cluster, 2 workers), and the
two ``samples.parquet`` must be identical.

The table, the GeoPixelD-size projection (18.7k tiles, ~600k masks) from the 8N per-tile costs, and
every number are also written to ``WORK/bench-scale.json``.

``python -m pipeline.scale.bench --images 4`` (N) ``--factor 8`` ``--work .bench/scale``; N = 4 images (41
tiles) keeps the whole benchmark within about 20 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..loopback import free_port
from .corpus import make_corpus
from .measure import Measured, kill_tree, run_measured, tree_rss

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: GeoPixelD (GeoPixel, arXiv 2501.13925): tiles and masks of the released dataset.
GEOPIXELD_TILES, GEOPIXELD_MASKS = 18_700, 600_000
STAGES = ("prepare", "describe", "validate", "export", "publish", "pull", "review")
VALIDATE = (
    "import json, sys; from flows.tasks import validate_samples; "
    "r = validate_samples.fn(sys.argv[1]); print(json.dumps({'samples': r['samples']}))"
)


def _gp(*args: str) -> list[str]:
    return [str(BIN / "geopixeld"), *args]


def _env(work: Path) -> dict[str, str]:
    """The stages' environment: the repository importable, a Prefect home of the benchmark's own."""
    return {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ, "PYTHONPATH": str(ROOT),
            "PREFECT_HOME": str(work / ".prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "TQDM_DISABLE": "1"}


def _review(out: Path, env: dict[str, str], timeout: float = 600) -> tuple[Measured, dict[str, float]]:
    """Start ``geopixeld review serve`` on ``out``; time its start-up and its start and queue pages."""
    run_measured(_gp("review", "add-user", "bench", "--data", str(out), "--password-stdin"), env=env,
                 stdin="bench-password-123\n", timeout=120).check("review add-user")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    proc = subprocess.Popen(_gp("review", "serve", "--data", str(out), "--port", str(port)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timings: dict[str, float] = {}
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"review serve exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"review serve did not answer within {timeout} s")
            try:
                with opener.open(f"{base}/login", timeout=5) as r:
                    r.read()
                break
            except OSError:
                time.sleep(0.1)
        timings["startup_s"] = time.perf_counter() - start

        def timed(name: str, url: str, data: bytes | None = None) -> Any:
            t = time.perf_counter()
            request = urllib.request.Request(f"{base}{url}", data=data,
                                             headers={"Content-Type": "application/json"} if data else {})
            with opener.open(request, timeout=timeout) as r:
                body = r.read()
            timings[name] = time.perf_counter() - t
            return json.loads(body) if r.headers.get("content-type", "").startswith("application/json") else None

        timed("login_s", "/api/login", json.dumps({"name": "bench", "password": "bench-password-123"}).encode())
        timed("start_page_s", "/")
        summary = timed("queue_summary_s", "/api/queue/summary")
        first = timed("queue_next_s", "/api/queue/next")
        if first and first.get("tile_id"):
            timed("sample_s", f"/api/samples/{first['tile_id']}")
        timings["queue_total"] = float((summary or {}).get("total", 0))
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        kill_tree(proc.pid)
        proc.wait()
    return Measured(seconds, peak, 0, "", ""), timings


def run_size(corpus: Path, out: Path, env: dict[str, str], progress: bool = True) -> dict[str, Any]:
    """Every stage on ``corpus`` into ``out`` (emptied first); returns per-stage measurements."""
    shutil.rmtree(out, ignore_errors=True)
    export, store = out / "export", out / "store"
    commands = {
        "prepare": _gp("prepare", str(corpus), "--format", "isaid", "--out", str(out), "--no-progress"),
        "describe": _gp("describe", str(out), "--no-progress"),
        "validate": [sys.executable, "-c", VALIDATE, str(out)],
        "export": _gp("export", str(out), "--out", str(export)),
        "publish": _gp("release", "publish", str(export), "--name", "scale", "--version", "1.0.0",
                       "--store", str(store)),
        "pull": _gp("release", "pull", "scale==1.0.0", "--store", str(store), "--to", str(out / "pulled")),
    }
    stages: dict[str, Any] = {}
    for name, cmd in commands.items():
        m = run_measured(cmd, cwd=ROOT, env=env, timeout=3600).check(name)
        stages[name] = {"seconds": m.seconds, "peak_mb": m.peak_mb}
        if progress:
            print(f"  {name:9s} {m.seconds:8.1f} s {m.peak_mb:8.0f} MB", file=sys.stderr, flush=True)
    m, timings = _review(out, env)
    stages["review"] = {"seconds": timings["startup_s"], "peak_mb": m.peak_mb, **timings}
    if progress:
        print(f"  review    {timings['startup_s']:8.1f} s {m.peak_mb:8.0f} MB  {timings}", file=sys.stderr, flush=True)
    tiles = pq.read_metadata(out / "tiles.parquet").num_rows
    instances = pq.read_metadata(out / "instances.parquet").num_rows
    masks = sum(len(v) for b in pq.ParquetFile(out / "samples.parquet").iter_batches(columns=["masks"])
                for v in b.column(0).to_pylist())
    return {"tiles": tiles, "instances": instances, "masks": masks, "stages": stages}


def _samples(path: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["tile_id"])


def runner_check(corpus: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """``geopixeld build`` with threads and with Dask (2 local workers): identical samples?"""
    result: dict[str, Any] = {}
    for runner in ("threads", "dask"):
        out = work / f"build-{runner}"
        shutil.rmtree(out, ignore_errors=True)
        m = run_measured(_gp("build", str(corpus), "--format", "isaid", "--out", str(out), "--no-publish",
                             "--runner", runner, "--workers", "2"), cwd=ROOT, env=env, timeout=3600)
        m.check(f"build --runner {runner}")
        result[runner] = {"seconds": m.seconds, "peak_mb": m.peak_mb}
        print(f"  build --runner {runner:7s} {m.seconds:8.1f} s {m.peak_mb:8.0f} MB", file=sys.stderr, flush=True)
    a, b = _samples(work / "build-threads" / "samples.parquet"), _samples(work / "build-dask" / "samples.parquet")
    result["samples"] = len(a)
    result["identical"] = a == b
    return result


def _ratio(a: float, b: float) -> float:
    return b / a if a > 0 else float("nan")


def table(small: dict[str, Any], large: dict[str, Any], n: int, factor: int) -> str:
    """The N / 8N table (Markdown)."""
    ts, tl = small["tiles"], large["tiles"]
    lines = [
        f"N = {n} images ({ts} tiles, {small['masks']} masks); {factor}N = {n * factor} images "
        f"({tl} tiles, {large['masks']} masks)",
        "",
        f"| stage | N s | N peak MB | N tiles/s | {factor}N s | {factor}N peak MB | {factor}N tiles/s "
        "| time × | RSS × | s/tile × |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        a, b = small["stages"][stage], large["stages"][stage]
        per_tile = _ratio(a["seconds"] / ts, b["seconds"] / tl)
        lines.append(
            f"| {stage} | {a['seconds']:.1f} | {a['peak_mb']:.0f} | {ts / a['seconds']:.2f} | {b['seconds']:.1f} "
            f"| {b['peak_mb']:.0f} | {tl / b['seconds']:.2f} | {_ratio(a['seconds'], b['seconds']):.2f} "
            f"| {_ratio(a['peak_mb'], b['peak_mb']):.2f} | {per_tile:.2f} |"
        )
    return "\n".join(lines)


def projection(small: dict[str, Any], large: dict[str, Any]) -> str:
    """Hours per stage for GeoPixelD's 18.7k tiles: each stage's cost per extra tile between N and 8N (its
    fixed start-up cost apart) times 18.7k, plus that start-up. Review: its start-up at 8N only."""
    ts, tl = small["tiles"], large["tiles"]
    lines = [f"GeoPixelD size ({GEOPIXELD_TILES:,} tiles, ~{GEOPIXELD_MASKS:,} masks), from the cost per extra tile "
             f"between {ts} and {tl} tiles:", "",
             "| stage | start-up s | s/tile | hours | peak RSS MB at 8N |", "|---|---:|---:|---:|---:|"]
    total = 0.0
    for stage in STAGES:
        a, b = small["stages"][stage], large["stages"][stage]
        if stage == "review":
            lines.append(f"| review (start-up) | {b['seconds']:.1f} | – | {b['seconds'] / 3600:.3f} | {b['peak_mb']:.0f} |")
            continue
        per = max(0.0, (b["seconds"] - a["seconds"]) / max(1, tl - ts))
        fixed = max(0.0, a["seconds"] - per * ts)
        hours = (fixed + per * GEOPIXELD_TILES) / 3600
        total += hours
        lines.append(f"| {stage} | {fixed:.1f} | {per:.3f} | {hours:.2f} | {b['peak_mb']:.0f} |")
    lines.append(f"| **all** | | | **{total:.1f}** | |")
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    """The table, the projection and the runner check of a results dict, as printed."""
    n, factor = results["n"], results["factor"]
    small, large = results["sizes"][str(n)], results["sizes"][str(n * factor)]
    text = [table(small, large, n, factor), "", projection(small, large)]
    r = results.get("runners")
    if r and "error" in r:
        text += ["", f"runner check failed: {r['error']}"]
    elif r:
        text += ["", f"build at N, {r['samples']} samples: threads {r['threads']['seconds']:.0f} s "
                     f"({r['threads']['peak_mb']:.0f} MB), dask (2 workers) {r['dask']['seconds']:.0f} s "
                     f"({r['dask']['peak_mb']:.0f} MB); samples identical: {r['identical']}"]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=int(os.environ.get("SCALE_N", "4")),
                        help="N, source images of the small run (sizes cycle through 4 iSAID sizes, 41 tiles; "
                             "a multiple of 4 makes 8N exactly 8× the tiles). Env SCALE_N.")
    parser.add_argument("--factor", type=int, default=8, help="The large run has factor × N images.")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "scale", help="Working folder.")
    parser.add_argument("--no-dask", action="store_true", help="Skip the threads-vs-Dask build check.")
    parser.add_argument("--runners-only", action="store_true",
                        help="Only the threads-vs-Dask check, added to an earlier WORK/bench-scale.json.")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = _env(work)
    saved = work / "bench-scale.json"
    results: dict[str, Any] = {"n": args.images, "factor": args.factor, "sizes": {}}
    if args.runners_only:
        results = json.loads(saved.read_text())
    t0 = time.perf_counter()
    sizes = [] if args.runners_only else [args.images, args.images * args.factor]
    for n in sizes:
        corpus = work / f"corpus-{n}"
        t = time.perf_counter()
        made = make_corpus(corpus, n)
        print(f"{n} images: corpus {made} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        results["sizes"][str(n)] = run_size(corpus, work / f"run-{n}", env)
        saved.write_text(json.dumps(results, indent=1))  # kept if a later step fails
    if not args.no_dask:
        try:
            results["runners"] = runner_check(work / f"corpus-{results['n']}", work, env)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            results["runners"] = {"error": str(exc)[-2000:]}
    text = report(results) + f"\n\nthis run: {time.perf_counter() - t0:.0f} s"
    print(text)
    results["text"] = text
    saved.write_text(json.dumps(results, indent=1))
    r = results.get("runners", {})
    if "error" in r or r.get("identical") is False:
        raise SystemExit("the threads-vs-Dask check failed (see above)")


if __name__ == "__main__":
    main()
