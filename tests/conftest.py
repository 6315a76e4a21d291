"""Shared fixtures: the bundled sample data and prepared outputs reused across tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def isaid_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two bundled iSAID images prepared with the default settings (800/200)."""
    from pipeline.config import PrepareConfig
    from pipeline.prepare import prepare

    out = tmp_path_factory.mktemp("isaid_prepared")
    summary = prepare([DATA / "isaid"], PrepareConfig(format="isaid"), out, progress=False)
    assert summary.images_ok == 2, summary.text()
    return out
