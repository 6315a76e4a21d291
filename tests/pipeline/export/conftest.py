"""The described samples the export tests read (prepared and described once per session, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import PrepareConfig
from pipeline.describe import DescribeConfig, describe
from pipeline.prepare import prepare


@pytest.fixture(scope="session")
def described(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """iSAID and NEON samples prepared and described (offline describer) into one folder each."""
    root = tmp_path_factory.mktemp("described")
    prepare([data_dir / "isaid"], PrepareConfig(format="isaid"), root / "isaid", progress=False)
    describe(root / "isaid", DescribeConfig(), progress=False)
    prepare([data_dir / "neon" / "OSBS_029.csv"], PrepareConfig(format="boxes"), root / "neon", progress=False)
    describe(root / "neon", DescribeConfig(), progress=False)
    return root
