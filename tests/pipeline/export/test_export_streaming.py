"""Export at scale: flat memory, review decisions from the database, and bad input (a tile gone, a full disk)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.export import MissingTileError, export
from pipeline.scale.measure import MB, run_measured
from pipeline.scale.replicate import replicate

ROOT = Path(__file__).resolve().parents[3]
FOUR = ["gcg-parquet", "coco", "geopixel", "glamm"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _export_peak(data: Path, out: Path) -> float:
    """Peak RSS (MB) of a fresh process that exports ``data`` in all four formats."""
    code = (
        "import sys; from pipeline.export import export; "
        f"s = export({str(data)!r}, {str(out)!r}, formats={FOUR!r}, row_group_mb=2); "
        "assert 'annotations' not in sys.modules; print(sum(s.splits.values()))"
    )
    run = run_measured([sys.executable, "-c", code], cwd=ROOT, env=_env(), timeout=600).check("export")
    return run.peak_mb


def test_export_memory_does_not_grow_with_samples(tmp_path: Path, described: Path) -> None:
    """16 vs 128 samples (8×): the old exporter held every row and PNG (+~1.8 MB a sample, +230 MB here)."""
    small, large = tmp_path / "small", tmp_path / "large"
    assert replicate(described / "isaid", small, 2) == 16
    assert replicate(described / "isaid", large, 16) == 128
    peak_small = _export_peak(small, tmp_path / "exp_small")
    peak_large = _export_peak(large, tmp_path / "exp_large")
    assert pq.read_metadata(next((tmp_path / "exp_large" / "data").glob("train-*"))).num_rows > 64
    assert peak_large - peak_small < 40, (peak_small, peak_large)
    assert peak_large < 1.25 * peak_small, (peak_small, peak_large)


def test_a_missing_tile_is_named_and_the_previous_export_stays(tmp_path: Path, described: Path) -> None:
    data = tmp_path / "data"
    replicate(described / "isaid", data, 2)
    out = tmp_path / "exp"
    export(data, out, formats=["gcg-parquet", "glamm"])
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    gone = data / "tiles" / "R00001_P0005_0_800_0_800.png"
    gone.unlink()
    with pytest.raises(MissingTileError, match=str(gone)):
        export(data, out, formats=["gcg-parquet", "glamm"])
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the complete export is untouched
    assert not list(tmp_path.glob(".exp.*"))  # no half-written folder left beside it
    cli = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", str(data), "--out", str(tmp_path / "x"),
                          "--formats", "gcg-parquet"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2 and str(gone) in cli.stderr and "Traceback" not in cli.stderr
    assert not (tmp_path / "x").exists()


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 * MB, 3 * MB))


def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path: Path, described: Path) -> None:
    """A real failing write (the kernel's file size limit, as a full disk would) ends the export cleanly."""
    data = tmp_path / "data"
    replicate(described / "isaid", data, 2)
    out = tmp_path / "exp"
    cli = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", str(data), "--out", str(out),
                          "--formats", ",".join(FOUR)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
                         preexec_fn=_limit_file_size)
    assert cli.returncode == 2, cli.stderr
    assert "File too large while writing the export" in cli.stderr and ".parquet" in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr
    assert not out.exists() and not list(tmp_path.glob(".exp.*"))


def test_decisions_from_the_review_database(tmp_path: Path, described: Path) -> None:
    """The default DATA/review.sqlite and `--db URL` are read by the library, never importing the app."""
    import sqlalchemy as sa

    from annotations.db import decisions, default_db_url, open_engine

    data = tmp_path / "data"
    replicate(described / "isaid", data, 1)
    samples = pq.read_table(data / "samples.parquet", columns=["tile_id", "masks"]).to_pylist()
    rejected, fixed = samples[0]["tile_id"], samples[1]["tile_id"]
    fixed_caption = "A corrected look at the <p> lot </p> [SEG] ."
    phrase = {"text": "lot", "start": 24, "end": 27, "instance_ids": [1], "category": "large vehicle",
              "kind": "instance"}
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    engine = open_engine(default_db_url(data))
    with engine.begin() as conn:
        conn.execute(sa.insert(decisions).values(
            tile_id=rejected, status="rejected", reviewer="ann", decided_at=now, revision=1))
        conn.execute(sa.insert(decisions).values(
            tile_id=fixed, status="fixed", reviewer="bob", decided_at=now, revision=2, gcg_caption=fixed_caption,
            caption="A corrected look at the lot .", phrases=[phrase], masks=[samples[1]["masks"][0]],
            mask_refs=[0]))
    engine.dispose()
    moved = tmp_path / "team.sqlite"
    (data / "review.sqlite").rename(moved)
    for path in data.glob("review.sqlite-*"):
        path.unlink()
    cli = subprocess.run(
        [sys.executable, "-c",
         "import sys; from pipeline.cli import main; sys.argv = ['geopixeld', *sys.argv[1:]]; main()",
         "export", str(data), "--out", str(tmp_path / "exp"), "--formats", "gcg-parquet", "--ratios", "1,0,0",
         "--db", f"sqlite:///{moved}"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "rejected left out: 1" in cli.stdout
    rows = {r["tile_id"]: r for r in pq.read_table(tmp_path / "exp" / "data").to_pylist()}
    assert rejected not in rows and len(rows) == 7
    assert rows[fixed]["gcg_caption"] == fixed_caption and rows[fixed]["reviewer"] == "bob"
    assert rows[fixed]["decided_at"].startswith("2026-01-02T03:04:05") and rows[fixed]["phrases"] == [phrase]
    moved.rename(data / "review.sqlite")  # the default: DATA/review.sqlite, read in a process without the app
    code = (
        "import sys, json; from pipeline.export import export; "
        f"s = export({str(data)!r}, {str(tmp_path / 'exp2')!r}, formats=['glamm'], ratios=(1, 0, 0)); "
        "print(json.dumps({'review': s.review, 'app': 'annotations' in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"review": {"rejected": 1, "fixed": 1, "unreviewed": 6}, "app": False}
