"""The build and prepare flows take one source path as well as a list (``--param source=DIR``)."""

from __future__ import annotations

from flows.build import build_geopixeld
from flows.stages import prepare_stage, source_list


def test_source_accepts_one_path_or_a_list() -> None:
    for flow in (build_geopixeld, prepare_stage):
        one = flow.validate_parameters({"source": "tests/data/isaid", "out": "build/x"})
        many = flow.validate_parameters({"source": ["tests/data/isaid", "more"], "out": "build/x"})
        assert source_list(one["source"]) == ["tests/data/isaid"]
        assert source_list(many["source"]) == ["tests/data/isaid", "more"]
        schema = flow.parameters.properties["source"]
        assert {t.get("type") for t in schema["anyOf"]} == {"array", "string"}
