"""The build and prepare flows take one source path as well as a list (``--param source=DIR``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.build import build_geopixeld
from flows.stages import prepare_stage, source_list

DATA = Path(__file__).resolve().parents[1] / "data"


def test_source_accepts_one_path_or_a_list() -> None:
    for flow in (build_geopixeld, prepare_stage):
        one = flow.validate_parameters({"source": "tests/data/isaid", "out": "build/x"})
        many = flow.validate_parameters({"source": ["tests/data/isaid", "more"], "out": "build/x"})
        assert source_list(one["source"]) == ["tests/data/isaid"]
        assert source_list(many["source"]) == ["tests/data/isaid", "more"]
        schema = flow.parameters.properties["source"]
        assert {t.get("type") for t in schema["anyOf"]} == {"array", "string"}


@pytest.mark.usefixtures("prefect_harness")
def test_build_dry_run_prepares_then_only_counts(tmp_path: Path) -> None:
    out = tmp_path / "dota"
    result = build_geopixeld(source=str(DATA / "dota"), out=str(out), format="dota", model="gpt-4o",
                             dry_run=True, instances_per_call=3)  # fmt: skip
    assert result["dry_run"] and (out / "tiles.parquet").exists()
    assert not (out / "samples.parquet").exists() and not (out / "lmm_cache").exists()  # nothing sent
    estimate = result["estimate"]
    assert estimate["model"] == "gpt-4o" and estimate["total"]["calls"] > 0 and estimate["total"]["cost_usd"] > 0
    assert "instance_group" in estimate["tiers"] and "per 1,000 tiles" in result["text"]
