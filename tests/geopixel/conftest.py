"""Fixtures for the geopixel tests: a tiny synthetic GCG release (see ``tiny_gcg.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from tiny_gcg import write_tiny_export


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``tiny-gcg==1.0.0`` published to a local store: ``{"store", "name", "version", "export", "cache"}``."""
    from pipeline.release import publish

    root = tmp_path_factory.mktemp("tiny_release")
    export = write_tiny_export(root / "export")
    publish(export, "tiny-gcg", "1.0.0", str(root / "store"))
    return {"store": str(root / "store"), "name": "tiny-gcg", "version": "1.0.0", "export": export,
            "cache": str(root / "cache")}
