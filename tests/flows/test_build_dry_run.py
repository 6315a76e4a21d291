"""`geopixeld build --dry-run`: prepares, prices describe per tier and sends nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner


def test_build_dry_run_prices_and_sends_nothing(tmp_path: Path, kit: Any) -> None:
    from pipeline.cli import app  # the top-level command resolves `build` lazily

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["build", str(kit.data / "dota"), "--format", "dota", "--out", str(out), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "dry run: nothing sent" in result.output
    for tier in ("holistic", "instance", "cluster", "compose", "per 1,000 tiles"):
        assert tier in result.output
    assert (out / "tiles.parquet").exists()  # prepared
    assert not (out / "samples.parquet").exists() and not (out / "export").exists()  # nothing described
