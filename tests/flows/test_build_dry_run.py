"""`geopixeld build --dry-run`, run as a user runs it (a whole process): prepares, prices describe per tier
and sends nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_build_dry_run_prices_and_sends_nothing(tmp_path: Path, kit: Any) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    env.pop("PREFECT_API_URL", None)  # its own ephemeral server, as a first-time user gets
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "build", str(kit.data / "dota"), "--format", "dota",
         "--out", str(out), "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dry run: nothing sent" in proc.stdout
    for tier in ("holistic", "instance", "cluster", "compose", "per 1,000 tiles"):
        assert tier in proc.stdout
    assert (out / "tiles.parquet").exists()  # prepared
    assert not (out / "samples.parquet").exists() and not (out / "export").exists()  # nothing described
