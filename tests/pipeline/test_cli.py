"""The command line: help that explains, and a prepare run through the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from pipeline.cli import app


def test_help_lists_commands_and_prepare_options() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["--help"]).output
    assert "prepare" in out
    out = runner.invoke(app, ["prepare", "--help"], terminal_width=200).output
    for option in ("--format", "--tile-size", "--overlap", "--min-area", "--bands", "--cluster", "--workers"):
        assert option in out


def test_prepare_through_the_console_script_in_parallel(tmp_path: Path, data_dir: Path) -> None:
    cmd = [sys.executable, "-m", "pipeline.cli", "prepare", str(data_dir / "isaid"), "--out", str(tmp_path),
           "--format", "isaid", "--workers", "2", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tiles    8" in proc.stdout
    assert pq.read_table(tmp_path / "tiles.parquet").num_rows == 8


def test_bad_options_and_no_usable_image_exit_nonzero(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["prepare", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "nope"])
    assert res.exit_code != 0 and "unknown format" in res.output
    res = runner.invoke(app, ["prepare", str(tmp_path), "--out", str(tmp_path / "o"), "--tile-size", "800", "--overlap", "900"])
    assert res.exit_code != 0
    res = runner.invoke(app, ["prepare", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o"), "--format", "raster", "--no-progress"])
    assert res.exit_code == 1 and "file not found" in res.output


LOADED = """
import sys
from pipeline.cli import main
sys.argv = ["geopixeld", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = ["pandas", "pyarrow.dataset", "boto3", "botocore", "scipy", "scipy.spatial", "shapely.ops", "torch",
         "pipeline.release", "pipeline.describe", "pipeline.sam.quality", "pipeline.lmm.client", "pipeline.config"]
print(" ".join(m for m in heavy if m in sys.modules), file=sys.stderr)
"""


def _loaded(args: list[str]) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, timeout=300)
    return set(proc.stderr.strip().splitlines()[-1].split()) if proc.stderr.strip() else set()


def test_help_and_prepare_load_only_what_they_use(tmp_path: Path, data_dir: Path) -> None:
    assert _loaded(["--help"]) == set()  # no stage's code, not even the prepare config
    raster = _loaded(["prepare", str(data_dir / "geotiff"), "--format", "raster", "--out", str(tmp_path / "r"),
                      "--no-progress", "--tile-size", "400"])
    assert raster == {"pipeline.config"}  # no SciPy, pandas, boto3, SAM or release code
    isaid = _loaded(["prepare", str(data_dir / "isaid"), "--format", "isaid", "--out", str(tmp_path / "i"),
                     "--no-progress", "--workers", "1"])
    assert isaid == {"pipeline.config"}  # no SciPy either: ties of the calipers are settled by value
